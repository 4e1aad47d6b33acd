"""Transcription throughput on CPU: speechpeft transcribe vs the transformers ASR pipeline vs
faster-whisper (CTranslate2) on the exported model. Same files, same settings, one run, this
machine. Writes bench/transcribe.md.

    pip install -e ".[test]" faster-whisper
    python bench/transcribe.py                # about 6 minutes on 2 CPU cores

The adapter is a LoRA r=8 on q,v (zero-initialised, so every engine must produce whisper-base's
own transcript; the cost of carrying it is what is measured). speechpeft loads the adapter
file and merges it for as long as its files decode (as it does per adapter group with
--adapter-map); the pipeline and faster-whisper run the merged export, their only way to use
it. Audio decoding is inside every timed region; model loading is outside all of them. Each
engine runs REPEATS times, the order rotating so that each engine takes each position once
(4 repeats, 4 engines); the table shows the median wall time.
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

import numpy as np
import soundfile as sf
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from speechpeft.adapters import LoRAConfig, save_adapter  # noqa: E402
from speechpeft.data import load_audio  # noqa: E402
from speechpeft.eval import error_rate, make_normaliser  # noqa: E402
from speechpeft.infer import Job, TranscribeOptions, transcribe_files  # noqa: E402
from speechpeft.models import load_whisper  # noqa: E402
from speechpeft.models.export import export  # noqa: E402

MODEL = "openai/whisper-base"
CLIPS = ROOT / "tests" / "data" / "librivox"
BATCH = 8


def make_files(folder: Path) -> tuple[list[Path], list[str]]:
    """The five real LibriVox clips, and one 2 min 19 s file of the same clips joined five times."""
    refs = json.loads((CLIPS / "transcripts.json").read_text())
    names = sorted(refs)
    gap = np.zeros(int(0.6 * 16_000), np.float32)
    parts = [p for _ in range(5) for n in names for p in (sf.read(CLIPS / n, dtype="float32")[0], gap)]
    sf.write(folder / "joined.flac", np.concatenate(parts), 16_000)
    return [CLIPS / n for n in names] + [folder / "joined.flac"], [refs[n] for n in names] + [
        " ".join(refs[n] for n in names * 5)
    ]


def speechpeft_engine(adapter: Path, vad: bool, out: Path):
    host = load_whisper(MODEL, device="cpu")
    opts = TranscribeOptions(
        model=MODEL, language="en", batch_size=BATCH, formats=("json",), output_dir=out, vad=vad,
        overwrite=True, progress=False,
    )  # fmt: skip

    def run(files):
        transcribe_files([Job(f, str(adapter), str(f)) for f in files], opts, host=host)
        return [json.loads((out / f"{f.stem}.json").read_text())["text"] for f in files]

    return run


def pipeline_engine(merged: Path):
    from transformers import pipeline

    pipe = pipeline("automatic-speech-recognition", model=str(merged), device="cpu", dtype=torch.float32)
    kwargs = {"language": "en", "task": "transcribe", "num_beams": 1}

    def run(files):
        # The pipeline cannot pad a long-form input into a batch of short ones (it raises a size
        # mismatch), so files over 30 s go one at a time and the rest in batches: its best working setup.
        inputs = [{"raw": load_audio(f), "sampling_rate": 16_000} for f in files]
        short = [i for i, x in enumerate(inputs) if len(x["raw"]) <= 30 * 16_000]
        long = [i for i in range(len(inputs)) if i not in short]
        texts = {}
        for idx, batch in ((short, BATCH), (long, 1)):
            if not idx:
                continue
            out = pipe([inputs[i] for i in idx], batch_size=batch, return_timestamps=True, generate_kwargs=kwargs)
            texts.update({i: o["text"].strip() for i, o in zip(idx, out, strict=True)})
        return [texts[i] for i in range(len(inputs))]

    return run


def faster_whisper_engine(ct2: Path):
    from faster_whisper import WhisperModel

    model = WhisperModel(str(ct2), device="cpu", compute_type="float32", cpu_threads=torch.get_num_threads())

    def run(files):
        texts = []
        for f in files:  # greedy, no temperature fallback, no conditioning: the others' settings
            segments, _ = model.transcribe(
                load_audio(f), language="en", beam_size=1, temperature=0.0, condition_on_previous_text=False,
                vad_filter=False,
            )  # fmt: skip
            texts.append(" ".join(s.text.strip() for s in segments))
        return texts

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--report", type=Path, default=HERE / "transcribe.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files, refs = make_files(tmp)
        seconds = sum(sf.info(f).duration for f in files)
        host = load_whisper(MODEL, device="cpu")
        host.inject(LoRAConfig(rank=8, alpha=16, targets="attn_qv"))
        adapter = save_adapter(host.model, tmp / "adapter")
        del host
        export(adapter, tmp / "merged", "hf")
        export(adapter, tmp / "ct2", "ct2")
        engines = {
            "speechpeft transcribe --adapter": speechpeft_engine(adapter, False, tmp / "o1"),
            "speechpeft transcribe --adapter --vad": speechpeft_engine(adapter, True, tmp / "o2"),
            "transformers pipeline (merged export)": pipeline_engine(tmp / "merged"),
            "faster-whisper / CTranslate2 (ct2 export)": faster_whisper_engine(tmp / "ct2"),
        }
        times: dict[str, list[float]] = {k: [] for k in engines}
        wers: dict[str, float] = {}
        names = list(engines)
        for rep in range(args.repeats):
            for name in names[rep % len(names) :] + names[: rep % len(names)]:  # each engine in each position
                run = engines[name]
                tick = time.perf_counter()
                hyps = run(files)
                times[name].append(time.perf_counter() - tick)
                wers[name] = error_rate(refs, hyps, "wer", make_normaliser("whisper_en")).rate
                print(f"rep {rep}: {name}: {times[name][-1]:.1f} s, WER {wers[name]:.4f}", flush=True)
    args.report.write_text(render(times, wers, seconds, len(files), args.repeats), encoding="utf-8")
    print(f"wrote {args.report}")


def render(times, wers, seconds, n_files, repeats) -> str:
    peer = statistics.median(times["transformers pipeline (merged export)"])
    lines = [
        "# Transcription throughput on CPU: speechpeft vs transformers pipeline vs faster-whisper",
        "",
        f"Made by `python bench/transcribe.py` on {dt.date.today().isoformat()}: {platform.machine()} CPU, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, fp32, model {MODEL}.",
        "",
        f"Files: {n_files} real English recordings, {seconds:.1f} s in all: five LibriVox clips (3-7 s) from",
        "Debian's pocketsphinx-testdata and one 139 s file made of those clips joined five times with 0.6 s",
        "pauses (long-form). Settings for every engine: language en, greedy (beam 1), no temperature",
        f"fallback, segment timestamps, batch {BATCH} where the engine batches (the pipeline batches the",
        "short files only: it fails to pad the long one into a batch; faster-whisper's `WhisperModel.transcribe`",
        "takes one file at a time). Wall time includes audio decoding, not model",
        f"loading; median of {repeats} runs in rotating order. WER is pooled over the files (whisper_en",
        "normaliser), to show that no engine buys speed with worse output.",
        "",
        "| engine | wall time | audio s / wall s | vs pipeline | WER |",
        "|---|---|---|---|---|",
    ]
    for name, ts in times.items():
        t = statistics.median(ts)
        lines.append(f"| {name} | {t:.1f} s | {seconds / t:.2f} | {peer / t:.2f}x | {wers[name]:.4f} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
