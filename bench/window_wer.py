"""What a shorter encoder window costs the bare whisper-base: WER and decoding time against
`--window-seconds` 30 (Whisper's own), 20, 15 and 10, on the same files in one run.

Whisper was pre-trained on 30 s windows only; a shorter window slices its positional embeddings
(`WhisperHost.set_window`), so the encoder does less work and the model sees inputs it never
trained on. Sets:

- real: the five LibriVox clips of tests/data/librivox (one reader, 3-7 s each, 67 words);
- SYNTHETIC: 30 festival sentences (voices kal, ked, slt: real speakers' recordings, synthesized
  here; data/voices_demo/make_references.py's synthesizer), 2-5 s each.

Every file fits the shortest window, so each is decoded in one pass. WER: Whisper's English
normaliser, pooled, 95 % bootstrap interval over files; time: the whole `transcribe_files` call
(bare model, batch 8, greedy, language en), windows in rotating order over 3 repeats, median.

    python bench/window_wer.py          # about 10 minutes on 2 CPU cores; writes window_wer.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "data" / "voices_demo")]

from make_references import FESTIVAL, festival  # noqa: E402

from speechpeft.data.english_sentences import english_sentences  # noqa: E402
from speechpeft.eval.bootstrap import rate_ci  # noqa: E402
from speechpeft.eval.metrics import pooled, utterance_counts  # noqa: E402
from speechpeft.eval.normalise import make_normaliser  # noqa: E402
from speechpeft.infer import Job, TranscribeOptions, transcribe_files  # noqa: E402
from speechpeft.models import load_whisper  # noqa: E402

MODEL = "openai/whisper-base"
CLIPS = ROOT / "tests" / "data" / "librivox"
WINDOWS = [30.0, 20.0, 15.0, 10.0]


def sets(work: Path) -> dict[str, list[tuple[Path, str]]]:
    refs = json.loads((CLIPS / "transcripts.json").read_text())
    real = [(CLIPS / n, refs[n]) for n in sorted(refs)]
    texts = english_sentences(100, seed=31)[40:70]
    synthetic = []
    for i, text in enumerate(texts):
        name, voice = sorted(FESTIVAL.items())[i % len(FESTIVAL)]
        wav = work / f"{name}-{i:02d}.wav"
        if not wav.is_file():
            festival(voice, text, wav)
        synthetic.append((wav, text))
    return {"real (LibriVox)": real, "SYNTHETIC (festival)": synthetic}


def decode(host, files, window: float) -> tuple[list[str], float]:
    with tempfile.TemporaryDirectory() as tmp:
        opts = TranscribeOptions(model=MODEL, language="en", formats=("json",), output_dir=Path(tmp),
                                 window_seconds=window, progress=False)  # fmt: skip
        t = time.perf_counter()
        out = transcribe_files([Job(f, None, str(f)) for f, _ in files], opts, host=host)
        seconds = time.perf_counter() - t
        if out.failures:
            raise SystemExit(f"failed: {out.failures[0]}")
        return [json.loads((Path(tmp) / f"{f.stem}.json").read_text())["text"] for f, _ in files], seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=HERE / "window_wer.md")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "window_wer")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    data = sets(args.work)
    host = load_whisper(MODEL, device="cpu")
    norm = make_normaliser("whisper_en", host.english_spelling)
    texts, times = {}, {(s, w): [] for s in data for w in WINDOWS}
    for r in range(args.repeats):
        order = WINDOWS[r % len(WINDOWS) :] + WINDOWS[: r % len(WINDOWS)]
        for w in order:
            for name, files in data.items():
                hyps, seconds = decode(host, files, w)
                texts.setdefault((name, w), hyps)
                if texts[(name, w)] != hyps:
                    raise SystemExit(f"{name} at {w:g} s: a repeat decoded other text (greedy should repeat)")
                times[(name, w)].append(seconds)
        print(f"repeat {r + 1}/{args.repeats} done", flush=True)
    lines = [
        "# What a shorter encoder window costs the bare whisper-base",
        "",
        f"Made by `python bench/window_wer.py` on {dt.date.today()}: {platform.machine()} CPU, 2 threads, torch "
        f"{torch.__version__}, fp32, {MODEL} with no adapter, greedy, language en, batch 8. WER: Whisper's English "
        "normaliser, pooled over the files, 95 % bootstrap interval over files. Time: the whole `transcribe_files` "
        f"call, median of {args.repeats} (windows in rotating order), and its ratio to the 30 s window's.",
        "",
        "| set | window | WER [95 % CI] | errors / words | time (s) | x 30 s time |",
        "|---|---|---|---|---|---|",
    ]
    for name, files in data.items():
        base = statistics.median(times[(name, 30.0)])
        for w in WINDOWS:
            counts = utterance_counts([t for _, t in files], texts[(name, w)], "wer", norm)
            rate = pooled(counts, "wer")
            ci = rate_ci([c.edits for c in counts], [c.reference_units for c in counts])
            shown = f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""
            median = statistics.median(times[(name, w)])
            edits = sum(c.edits for c in counts)
            lines.append(f"| {name}, {len(files)} files | {w:g} s | {rate.rate:.4f} {shown} | {edits} / "
                         f"{rate.reference_units} | {median:.2f} | {median / base:.2f} |")  # fmt: skip
    lines.append("")
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
