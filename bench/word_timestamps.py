"""Word timestamps at pauses: how far the words beside a pause lie from where the speech really
starts and ends, with cross-attention alignment alone and with its edges moved to silero-vad's
speech regions (speechpeft/infer/word_edges.py), whose settings are chosen here on dev only.

- dev (selection): SYNTHETIC speech, Debian's festival voices kal, ked and slt (built from real
  speakers' recordings, synthesized here), 5 sentences per file, 2 files per voice, cut to their
  speech and joined by pauses of 0.7, 1.2, 2.0 and 0.9 s (bench/word_joins.py);
- test (reported once, with the dev-chosen setting): the five real LibriVox clips joined by 1.0,
  1.6, 0.8 and 2.2 s pauses, the file of tests/integration/test_transcribe_options_real.py.

Each file is decoded once (real openai/whisper-base, language en, greedy, word timestamps; dev in one
batch, the test file alone as a user would); every
VAD setting then re-places the same words. The test row also runs `transcribe_files` end to end
with the library's default rule, which must equal the chosen one.

    apt-get install -y festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
    python bench/word_timestamps.py        # about 6 minutes on 2 CPU cores; writes word_timestamps.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import soundfile as sf
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE), str(ROOT / "data" / "voices_demo")]

from make_references import FESTIVAL, festival  # noqa: E402
from word_joins import RATE, TOLERANCE, join, join_errors  # noqa: E402

from speechpeft.data import load_audio  # noqa: E402
from speechpeft.data.english_sentences import english_sentences  # noqa: E402
from speechpeft.infer import Job, TranscribeOptions, transcribe_files  # noqa: E402
from speechpeft.infer.word_edges import EdgeRule, snap_words  # noqa: E402
from speechpeft.models import DecodeOptions, load_whisper  # noqa: E402

MODEL = "openai/whisper-base"
CLIPS = ROOT / "tests" / "data" / "librivox"
DEV_PAUSES = [0.7, 1.2, 2.0, 0.9]
TEST_PAUSES = [1.0, 1.6, 0.8, 2.2]  # as the integration test joins them
GRID = {"threshold": [0.5, 0.35, 0.2], "pad_ms": [30, 60, 100], "reach": [0.0, 0.25, 0.5]}


def dev_files(work: Path) -> list[tuple[str, object, list]]:
    texts = english_sentences(70, seed=19)[40:]  # generated sentences, not the hand-written first ones
    files = []
    for v, (name, voice) in enumerate(sorted(FESTIVAL.items())):
        for f in range(2):
            clips = []
            for i in range(5):
                wav = work / f"{name}-{f}-{i}.wav"
                if not wav.is_file():
                    festival(voice, texts[(v * 10 + f * 5 + i) % len(texts)], wav)
                clips.append(load_audio(wav, RATE))
            audio, spans = join(clips, DEV_PAUSES, seed=v * 2 + f)
            files.append((f"{name}-{f}", audio, spans))
    return files


def test_file():
    names = sorted(json.loads((CLIPS / "transcripts.json").read_text()))
    return join([load_audio(CLIPS / n, RATE) for n in names], TEST_PAUSES, seed=0)


def score(errors: list[float]) -> tuple[int, float]:
    return sum(abs(e) <= TOLERANCE for e in errors), statistics.mean(map(abs, errors))


def words_of(segments):
    return [w for s in segments for w in s.words]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=HERE / "word_timestamps.md")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "word_timestamps")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    dev = dev_files(args.work)
    audio, spans = test_file()
    host = load_whisper(MODEL, device="cpu")
    decode = DecodeOptions(word_timestamps=True)
    print(f"decoding {len(dev)} dev files and the test file once", flush=True)
    dev_segments = [t.segments for t in host.transcribe_long([a for _, a, _ in dev], "en", "transcribe", 1,
                                                             decode=decode)]  # fmt: skip
    test_segments = host.transcribe_long([audio], "en", "transcribe", 1, decode=decode)[0].segments  # alone, as a user

    plain_dev = [e for (_, _, s), g in zip(dev, dev_segments, strict=True) for e in join_errors(words_of(g), s)]
    rows = [("attention only", None, score(plain_dev))]
    for threshold, pad_ms, reach in itertools.product(*GRID.values()):
        rule = EdgeRule(threshold, pad_ms, reach)
        errors = []
        for (_, a, s), g in zip(dev, dev_segments, strict=True):
            errors += join_errors(words_of(snap_words(g, rule.regions(a), rule.reach)), s)
        rows.append((f"VAD threshold {threshold}, pad {pad_ms} ms, reach {reach} s", rule, score(errors)))
    ranked = sorted(rows[1:], key=lambda r: (-r[2][0], r[2][1]))
    chosen = ranked[0][1]
    print("chosen on dev:", chosen, ranked[0][2], flush=True)

    plain = join_errors(words_of(test_segments), spans)
    snapped = join_errors(words_of(snap_words(test_segments, chosen.regions(audio), chosen.reach)), spans)
    with tempfile.TemporaryDirectory() as tmp:  # the user's path: transcribe_files with the default rule
        wav = Path(tmp) / "joined.wav"
        sf.write(wav, audio, RATE)
        opts = TranscribeOptions(model=MODEL, language="en", formats=("json",), output_dir=Path(tmp), progress=False,
                                 decode=decode)  # fmt: skip
        transcribe_files([Job(wav, None, str(wav))], opts, host=host)
        record = json.loads((Path(tmp) / "joined.json").read_text())
    default = join_errors([w for s in record["segments"] for w in s["words"]], spans)
    write(args.out, dev, rows, ranked, chosen, plain, snapped, default)
    print(f"wrote {args.out}")


def write(out, dev, rows, ranked, chosen, plain, snapped, default):
    n_dev = 2 * 5 * len(dev)
    lines = [
        "# Word timestamps at pauses: cross-attention alone vs edges moved to silero-vad's speech",
        "",
        f"Made by `python bench/word_timestamps.py` on {dt.date.today()}: {platform.machine()} CPU, torch "
        f"{torch.__version__}, real {MODEL}, language en, greedy, `--word-timestamps`. An edge is within "
        f"tolerance when it lies at most {TOLERANCE} s from where its clip's speech starts or ends "
        "(speech cut 20 dB below each clip's peak, then joined by near-silent pauses of known length).",
        "",
        f"**Dev (selection; SYNTHETIC speech)**: festival voices {', '.join(sorted(FESTIVAL))} (real speakers' "
        f"recordings, synthesized), {len(dev)} files of 5 sentences, pauses {DEV_PAUSES} s: {n_dev} edges. "
        "Ranked by edges within tolerance, then mean absolute error. Every setting tried is listed.",
        "",
        "| setting | dev edges within 0.2 s | dev mean abs error (s) |",
        "|---|---|---|",
    ]
    for name, rule, (close, mae) in [rows[0]] + ranked:
        mark = " (chosen)" if rule == chosen else ""
        lines.append(f"| {name}{mark} | {close}/{n_dev} ({close / n_dev:.0%}) | {mae:.3f} |")
    lines += [
        "",
        f"**Test (real speech, reported once)**: the five LibriVox clips joined by {TEST_PAUSES} s pauses, 10 edges.",
        "",
        "| setting | test edges within 0.2 s | mean abs error (s) | errors (s) |",
        "|---|---|---|---|",
    ]
    library = EdgeRule()
    picked = f"chosen on dev: threshold {chosen.threshold}, pad {chosen.pad_ms} ms, reach {chosen.reach} s"
    for name, errors in (("attention only (`--word-edges attention`)", plain), (picked, snapped),
                         ("`transcribe_files` default (`--word-edges vad`)", default)):  # fmt: skip
        close, mae = score(errors)
        shown = ", ".join(f"{e:+.2f}" for e in errors)
        lines.append(f"| {name} | {close}/10 ({close / 10:.0%}) | {mae:.3f} | {shown} |")
    lines += [
        "",
        f"The library's default rule (speechpeft/infer/word_edges.py `EdgeRule`): threshold {library.threshold}, "
        f"pad {library.pad_ms} ms, reach {library.reach} s — "
        + ("the setting chosen on dev." if library == chosen else "**not** the setting chosen on dev: update it."),
        "",
    ]
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    tmp.replace(out)


if __name__ == "__main__":
    main()
