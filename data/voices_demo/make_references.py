"""Reference sets for cloning experiments: target voices no one here recorded, from real people.

    apt-get install -y festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
    python data/voices_demo/make_references.py [--out DIR] [--sentences 110] [--held-out 10]
    python data/voices_demo/make_references.py --espeak 40 --joe runs/joe-completed   # + instant training voices

Debian's festival voices are built from recordings of real speakers (kal and ked: diphone
concatenation of two American men; slt: an HTS model of the CMU ARCTIC female speaker). The
audio is synthesized by festival, so it is not a recording: the speaker identity is real, the
speech is SYNTHETIC. A fourth target is real read speech: the LibriVox reader in
tests/data/librivox (5 clips, 25 s; its budgets stop at 10 s).

For each voice, ``refs.jsonl`` (references, in the order budgets take them) and ``held.jsonl``
(other sentences: texts to synthesize and real audio to score against). Sentences come from
speechpeft's English bank with a seed of their own, so none is a sentence the joe base was
completed on. Deterministic; not committed (about 40 MB).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import soundfile as sf

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from speechpeft.data.english_sentences import english_sentences  # noqa: E402

FESTIVAL = {"kal": "voice_kal_diphone", "ked": "voice_ked_diphone", "slt": "voice_cmu_us_slt_arctic_hts"}
LIBRIVOX = ROOT / "tests" / "data" / "librivox"
SEED = 7  # the joe base is completed on seed 0's sentences; these are others


def festival(voice: str, text: str, out: Path) -> float:
    """Synthesize ``text`` with festival's ``voice`` into ``out`` (its own rate); seconds of audio."""
    if not shutil.which("text2wave"):
        sys.exit("festival is not installed: apt-get install -y festival festvox-kallpc16k festvox-kdlpc16k "
                 "festvox-us-slt-hts")  # fmt: skip
    tmp = out.with_suffix(".tmp.wav")
    subprocess.run(["text2wave", "-eval", f"({voice})", "-o", str(tmp)], input=text.encode(), check=True,
                   capture_output=True)  # fmt: skip
    tmp.replace(out)
    return sf.info(out).duration


def write(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)


def build(out: Path, sentences: int, held_out: int) -> dict[str, Path]:
    texts = english_sentences(sentences + held_out + 40, SEED)[40:]  # skip the hand-written ones the bank starts with
    made = {}
    for name, voice in FESTIVAL.items():
        folder = out / name
        (folder / "audio").mkdir(parents=True, exist_ok=True)

        def one(i: int, voice=voice, folder=folder) -> dict:
            audio = folder / "audio" / f"{i:03d}.wav"
            duration = sf.info(audio).duration if audio.is_file() else festival(voice, texts[i], audio)
            return {"audio_filepath": f"audio/{i:03d}.wav", "text": texts[i], "duration": round(duration, 3)}

        with ThreadPoolExecutor(2) as pool:
            rows = list(pool.map(one, range(len(texts))))
        write(folder / "refs.jsonl", rows[:sentences])
        write(folder / "held.jsonl", rows[sentences:])
        made[name] = folder
        print(f"{name}: {sum(r['duration'] for r in rows[:sentences]):.0f} s of references, {held_out} held out "
              f"(festival {voice}; real speaker, SYNTHETIC speech)")  # fmt: skip
    made["librivox"] = librivox(out / "librivox")
    return made


# more training voices for `speechpeft tts train-instant` (SYNTHETIC: espeak-ng's formant voices are no one's)
ESPEAK = {"esp-m3": "en-us+m3", "esp-m7": "en-us+m7", "esp-f2": "en-us+f2", "esp-f4": "en-us+f4"}


def espeak(out: Path, sentences: int) -> dict[str, Path]:
    """Voices of espeak-ng's variants reading the same kind of sentences (references only)."""
    texts = english_sentences(sentences + 40, SEED + 1)[40:]
    made = {}
    for name, voice in ESPEAK.items():
        folder = out / name
        (folder / "audio").mkdir(parents=True, exist_ok=True)
        rows = []
        for i, text in enumerate(texts):
            audio = folder / "audio" / f"{i:03d}.wav"
            if not audio.is_file():
                tmp = audio.with_suffix(".tmp.wav")
                subprocess.run(["espeak-ng", "-v", voice, "-w", str(tmp), text], check=True, capture_output=True)
                tmp.replace(audio)
            rows.append({"audio_filepath": f"audio/{i:03d}.wav", "text": text,
                         "duration": round(sf.info(audio).duration, 3)})  # fmt: skip
        write(folder / "refs.jsonl", rows)
        made[name] = folder
        print(
            f"{name}: {sum(r['duration'] for r in rows):.0f} s (espeak-ng {voice}; SYNTHETIC speech, no real speaker)"
        )
    return made


def joe(out: Path, base: str, sentences: int) -> Path:
    """The base voice itself (SYNTHETIC: joe's VITS reading), so instant training keeps it where it is."""
    sys.path.insert(0, str(ROOT))
    from speechpeft.models.vits_build import load_vits

    host = load_vits(base)
    folder = out / "joe"
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, text in enumerate(english_sentences(sentences + 40, SEED + 2)[40:]):
        audio = folder / "audio" / f"{i:03d}.wav"
        if not audio.is_file():
            tmp = audio.with_suffix(".tmp.wav")
            sf.write(tmp, host.synthesize(text, seed=i), host.sampling_rate, format="WAV")
            tmp.replace(audio)
        rows.append(
            {"audio_filepath": f"audio/{i:03d}.wav", "text": text, "duration": round(sf.info(audio).duration, 3)}
        )
    write(folder / "refs.jsonl", rows)
    print(f"joe: {sum(r['duration'] for r in rows):.0f} s (the base voice {base}; SYNTHETIC speech)")
    return folder


def librivox(folder: Path) -> Path:
    """The real LibriVox reader: three clips for references (about 15 s), two held out."""
    folder.mkdir(parents=True, exist_ok=True)
    transcripts = json.loads((LIBRIVOX / "transcripts.json").read_text(encoding="utf-8"))
    rows = []
    for name, text in sorted(transcripts.items()):
        path = (LIBRIVOX / name).resolve()
        rows.append({"audio_filepath": str(path), "text": text, "duration": round(sf.info(path).duration, 3)})
    held = [rows[1], rows[4]]  # 0880 and 0930, 6.3 s
    write(folder / "refs.jsonl", [r for r in rows if r not in held])
    write(folder / "held.jsonl", held)
    print(f"librivox: {sum(r['duration'] for r in rows if r not in held):.1f} s of references (real speech)")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--sentences", type=int, default=110, help="references per voice (about 300 s)")
    parser.add_argument("--held-out", type=int, default=10)
    parser.add_argument("--espeak", type=int, default=0, metavar="N",
                        help="also N sentences of each espeak-ng variant (instant training voices)")  # fmt: skip
    parser.add_argument("--joe", metavar="BASE", help="also 40 sentences of the base voice itself")
    args = parser.parse_args()
    build(args.out, args.sentences, args.held_out)
    if args.espeak:
        espeak(args.out, args.espeak)
    if args.joe:
        joe(args.out, args.joe, 40)


if __name__ == "__main__":
    main()
