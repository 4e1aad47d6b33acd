"""Build the synthetic child-like Mandarin demo corpus (audio + train/dev/test manifests).

    apt-get install -y espeak-ng sox
    python data/child_zh_demo/make_corpus.py                 # everything
    python data/child_zh_demo/make_corpus.py --speakers d2,d3  # only these voices' audio

Each utterance: espeak-ng voice ``cmn-latn-pinyin`` with a speaker's variant, pitch and speed
-> sox: resample to 16 kHz, raise pitch (and with it the formants) by the speaker's cents, optional
reverb -> white noise at the speaker's SNR -> Ogg Vorbis. Everything is deterministic. The
output is committed, so users never need espeak-ng; this script documents how it was made.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from sentences import sentence_bank  # noqa: E402

RATE = 16_000


@dataclass(frozen=True)
class Speaker:
    id: str
    split: str
    variant: str  # espeak-ng voice variant
    pitch: int  # espeak -p, 0..99
    speed: int  # espeak -s, words per minute
    cents: int  # sox pitch shift; moves F0 and formants up, as in a smaller vocal tract
    reverb: int  # sox reverberance %, 0 = dry
    snr_db: float  # white noise
    rereads: bool = False  # reads its split's sentences again (a second voice), instead of taking its own


SPEAKERS = [
    Speaker("s1", "train", "f1", 90, 150, 450, 0, 30),
    Speaker("s2", "train", "f2", 95, 140, 350, 20, 25),
    Speaker("s3", "train", "f3", 88, 160, 500, 0, 22),
    Speaker("s4", "train", "f5", 92, 145, 550, 10, 28),
    Speaker("s5", "train", "m1", 99, 155, 600, 0, 26),
    Speaker("d1", "dev", "f4", 93, 150, 400, 15, 27),
    # d1 is an `f` variant like four of the five training voices, so a dev set of d1 alone rewards
    # fitting voices close to the training ones. d2 and d3 are variants of other families (as the
    # test voices are); they re-read d1's sentences, half each, so no sentence enters a new split
    # and the train and test splits stay exactly as they were.
    Speaker("d2", "dev", "Annie", 94, 145, 420, 0, 25, rereads=True),
    Speaker("d3", "dev", "m6", 98, 155, 560, 10, 27, rereads=True),
    Speaker("t1", "test", "belinda", 91, 145, 450, 0, 26),
    Speaker("t2", "test", "linda", 96, 155, 380, 25, 24),
    Speaker("t3", "test", "m3", 97, 150, 580, 10, 29),
]
COUNTS = {"train": 300, "dev": 60, "test": 99}


def synthesize(text: str, spk: Speaker, seed: int, out: Path, tmp: Path) -> float:
    raw, shifted = tmp / f"{out.stem}.raw.wav", tmp / f"{out.stem}.wav"
    voice = f"cmn-latn-pinyin+{spk.variant}"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-p", str(spk.pitch), "-s", str(spk.speed), "-w", str(raw), text], check=True
    )
    effects = ["gain", "-6", "pitch", str(spk.cents)] + (["reverb", str(spk.reverb)] if spk.reverb else [])
    out_fmt = ["-r", str(RATE), "-c", "1", "-e", "floating-point", "-b", "32"]  # float: no clipping, no dither
    subprocess.run(["sox", "-G", str(raw), *out_fmt, str(shifted), *effects, "rate", str(RATE)], check=True)
    audio, rate = sf.read(shifted, dtype="float64")
    assert rate == RATE and audio.ndim == 1
    rng = np.random.default_rng(seed)
    power = np.mean(audio**2)
    audio = audio + rng.standard_normal(audio.size) * np.sqrt(power / 10 ** (spk.snr_db / 10))
    audio = 0.7 * audio / np.abs(audio).max()
    sf.write(out, audio.astype(np.float32), RATE, format="OGG", subtype="VORBIS")
    return round(audio.size / RATE, 3)


def plan() -> list[tuple[str, Speaker, str]]:
    """(utterance id, speaker, text) for every utterance; sentences never repeat across splits."""
    bank = iter(sentence_bank(seed=0))
    items = []
    for split, count in COUNTS.items():
        readers = [s for s in SPEAKERS if s.split == split and not s.rereads]
        second = [s for s in SPEAKERS if s.split == split and s.rereads]
        texts = [next(bank) for _ in range(count)]
        for i, text in enumerate(texts):
            spk = readers[i % len(readers)]
            items.append((f"{spk.id}_{i:03d}", spk, text))
        for i, text in enumerate(texts if second else []):
            spk = second[i % len(second)]
            items.append((f"{spk.id}_{i:03d}", spk, text))
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--speakers",
        help="comma-separated speaker ids to synthesize (default: all); the manifests are always rewritten whole, "
        "reusing the audio already on disk for the others",
    )
    args = parser.parse_args()
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            sys.exit(f"make_corpus: {tool} not found; apt-get install -y espeak-ng sox")
    audio_dir = HERE / "audio"
    audio_dir.mkdir(exist_ok=True)
    items = plan()
    wanted = set(args.speakers.split(",")) if args.speakers else {s.id for s in SPEAKERS}
    unknown = wanted - {s.id for s in SPEAKERS}
    if unknown:
        sys.exit(f"make_corpus: unknown speaker(s) {', '.join(sorted(unknown))}")

    def make(it: tuple[str, Speaker, str]) -> float:
        out = audio_dir / f"{it[0]}.ogg"
        if it[1].id not in wanted:
            if not out.is_file():
                sys.exit(f"make_corpus: {out} is missing; rebuild speaker {it[1].id} too")
            return round(sf.info(out).frames / RATE, 3)
        return synthesize(it[2], it[1], hash_seed(it[0]), out, Path(tmp))

    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=2) as pool:
        durations = list(pool.map(make, items))
    rows: dict[str, list[dict]] = {split: [] for split in COUNTS}
    for (uid, spk, text), dur in zip(items, durations, strict=True):
        rows[spk.split].append(
            {"audio_filepath": f"audio/{uid}.ogg", "text": text, "duration": dur, "language": "zh", "speaker": spk.id}
        )
    for split, lines in rows.items():
        (HERE / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines), "utf-8")
        total = sum(r["duration"] for r in lines)
        print(f"{split}: {len(lines)} utterances, {total / 60:.1f} min, max {max(r['duration'] for r in lines):.1f} s")


def hash_seed(uid: str) -> int:
    return int.from_bytes(uid.encode(), "little") % (2**32)


if __name__ == "__main__":
    main()
