"""Transcription speed on CPU with an adapter applied: speechpeft's engines vs the transformers
ASR pipeline vs faster-whisper int8, on the same files in one run. Writes bench/transcribe.md.

    pip install -e ".[test]"
    speechpeft finetune --recipe child_zh      # the demo adapter (runs/child_zh/adapter)
    python bench/transcribe.py                 # about 20 minutes on 2 CPU cores

Two sets, each with its adapter:

- **real English short and long-form** (the five LibriVox clips, and a 139 s join of them timed
  apart), with a LoRA
  r=8 on q,v trained with 30 s windows and zero-initialised, so that every engine must write
  whisper-base's own words: what is measured is the cost of carrying an adapter.
- **SYNTHETIC short utterances**: the first N of the demo corpus' test split, with the adapter
  `finetune --recipe child_zh` trained (8 s window).

Every engine gets the same files, settings (greedy, language forced, no temperature fallback,
segment timestamps) and threads. speechpeft decodes through `transcribe_files`, what the CLI
runs; the pipeline and faster-whisper run the adapter's merged export, their only way to use
it. Audio decoding is inside every timed region, model loading outside all of them (one
untimed warm-up run each). Engines rotate so that each takes each position in turn; the table
shows the median. The profile section times the encoder apart from the rest on the torch path.
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
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from speechpeft.adapters import LoRAConfig, read_adapter, save_adapter  # noqa: E402
from speechpeft.data import load_audio, read_manifest  # noqa: E402
from speechpeft.eval import error_rate, make_normaliser  # noqa: E402
from speechpeft.infer import Job, TranscribeOptions, transcribe_files  # noqa: E402
from speechpeft.infer.engines import pick_engine  # noqa: E402
from speechpeft.models import load_whisper  # noqa: E402
from speechpeft.models.export import export  # noqa: E402

MODEL = "openai/whisper-base"
CLIPS = ROOT / "tests" / "data" / "librivox"
DEMO_TEST = ROOT / "data" / "child_zh_demo" / "test.jsonl"
DEMO_DEV = ROOT / "data" / "child_zh_demo" / "dev.jsonl"
BATCH = 8
FW = "faster-whisper int8 (ct2 export)"


def english_files(folder: Path) -> tuple[list[Path], list[str]]:
    """The five real LibriVox clips, and one 2 min 19 s file of the same clips joined five times."""
    refs = json.loads((CLIPS / "transcripts.json").read_text())
    names = sorted(refs)
    gap = np.zeros(int(0.6 * 16_000), np.float32)
    parts = [p for _ in range(5) for n in names for p in (sf.read(CLIPS / n, dtype="float32")[0], gap)]
    sf.write(folder / "joined.flac", np.concatenate(parts), 16_000)
    return [CLIPS / n for n in names] + [folder / "joined.flac"], [refs[n] for n in names] + [
        " ".join(refs[n] for n in names * 5)
    ]


def demo_files(manifest: Path, n: int) -> tuple[list[Path], list[str]]:
    utts = read_manifest(manifest)[:n]
    return [Path(u.audio) for u in utts], [u.text for u in utts]


def speechpeft_engine(adapter: Path | None, out: Path, language: str, host=None, **options):
    """``transcribe_files`` as the CLI runs it (``host=None``: it loads what its engine needs; the
    ct2 engine's model stays loaded between calls, so only the first, untimed, run loads it)."""
    opts = TranscribeOptions(model=MODEL, language=language, batch_size=BATCH, formats=("json",), output_dir=out,
                             overwrite=True, progress=False, **options)  # fmt: skip

    def run(files):
        jobs = [Job(f, None if adapter is None else str(adapter), str(f)) for f in files]
        outcome = transcribe_files(jobs, opts, host=host)
        if outcome.failures:
            raise SystemExit(f"speechpeft failed: {outcome.failures[0]}")
        return [json.loads((out / f"{f.stem}.json").read_text())["text"] for f in files]

    run.opts = opts
    return run


def int8_host(merged: Path):
    """The torch path on torch.ao's dynamic int8 linears (weights int8 per tensor, activations
    quantized per batch), made from the merged export."""
    from torch.ao.quantization import quantize_dynamic

    host = load_whisper(str(merged), device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        host.model = quantize_dynamic(host.model, {torch.nn.Linear}, dtype=torch.qint8)
    return host


def pipeline_engine(merged: Path, language: str):
    from transformers import pipeline

    pipe = pipeline("automatic-speech-recognition", model=str(merged), device="cpu", dtype=torch.float32)
    kwargs = {"language": language, "task": "transcribe", "num_beams": 1}

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


def faster_whisper_engine(ct2: Path, language: str):
    from faster_whisper import WhisperModel

    model = WhisperModel(str(ct2), device="cpu", compute_type="int8", cpu_threads=torch.get_num_threads())

    def run(files):
        texts = []
        for f in files:  # greedy, no temperature fallback, no conditioning: the others' settings
            segments, _ = model.transcribe(
                load_audio(f), language=language, beam_size=1, temperature=0.0, condition_on_previous_text=False,
                vad_filter=False,
            )  # fmt: skip
            texts.append(" ".join(s.text.strip() for s in segments))
        return texts

    return run


def measure(engines: dict, files, refs, metric: str, normaliser: str, repeats: int, label: str):
    """Median wall time and pooled error rate per engine; one untimed warm-up run each first."""
    norm = make_normaliser(normaliser)
    rates, times = {}, {k: [] for k in engines}
    for name, run in engines.items():
        rates[name] = error_rate(refs, run(files), metric, norm).rate
        print(f"[{label}] warm-up {name}: {metric.upper()} {rates[name]:.4f}", flush=True)
    names = list(engines)
    for rep in range(repeats):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            tick = time.perf_counter()
            engines[name](files)
            times[name].append(time.perf_counter() - tick)
            print(f"[{label}] rep {rep}: {name}: {times[name][-1]:.2f} s", flush=True)
    return times, rates


class EncoderClock:
    """Seconds spent inside the Whisper encoder's forward (the rest: features, decoder, search)."""

    def __init__(self, host):
        self.seconds, self.calls = 0.0, 0
        enc = host.model.model.encoder
        self.handles = [enc.register_forward_pre_hook(self._start), enc.register_forward_hook(self._stop)]

    def _start(self, *_):
        self.tick = time.perf_counter()

    def _stop(self, *_):
        self.seconds += time.perf_counter() - self.tick
        self.calls += 1


def profile(label: str, run, host, files) -> dict:
    clock = EncoderClock(host)
    tick = time.perf_counter()
    run(files)
    total = time.perf_counter() - tick
    for h in clock.handles:
        h.remove()
    return {"setting": label, "total": total, "encoder": clock.seconds, "calls": clock.calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--adapter", type=Path, default=ROOT / "runs" / "child_zh" / "adapter",
                        help="the demo adapter (default: what `finetune --recipe child_zh` wrote)")  # fmt: skip
    parser.add_argument("--short", type=int, default=40, help="demo test utterances (default 40)")
    parser.add_argument("--dev", type=int, default=120, help="dev utterances for the window-step check")
    parser.add_argument("--report", type=Path, default=HERE / "transcribe.md")
    args = parser.parse_args()
    if not (args.adapter / "adapter_config.json").exists() and not any(args.adapter.glob("*.json")):
        raise SystemExit(f"no adapter at {args.adapter}: run `speechpeft finetune --recipe child_zh` first")
    demo_window = (read_adapter(args.adapter).record or {}).get("host", {}).get("window_seconds")
    results = {"date": dt.date.today().isoformat(), "machine": platform.machine(), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "adapter": str(args.adapter), "demo_window": demo_window}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # --- real English, 30 s adapter ------------------------------------------------------
        files, refs = english_files(tmp)
        host = load_whisper(MODEL, device="cpu")
        host.inject(LoRAConfig(rank=8, alpha=16, targets="attn_qv"))
        lora = save_adapter(host.model, tmp / "lora")
        del host
        export(lora, tmp / "lora-hf", "hf")
        export(lora, tmp / "lora-ct2", "ct2", quantization="int8")
        default = speechpeft_engine(lora, tmp / "e0", "en")
        picked = pick_engine(default.opts, [(str(lora), [])], None)
        torch_host = load_whisper(MODEL, device="cpu")
        q_host = int8_host(tmp / "lora-hf")
        engines = {
            f"speechpeft default (auto: {picked})": default,
            "speechpeft --engine torch (fp32)": speechpeft_engine(lora, tmp / "e1", "en", torch_host, engine="torch"),
            "speechpeft torch path, torch.ao dynamic int8": speechpeft_engine(
                None, tmp / "e2", "en", q_host, engine="torch"
            ),  # fmt: skip
            "transformers pipeline (merged export)": pipeline_engine(tmp / "lora-hf", "en"),
            FW: faster_whisper_engine(tmp / "lora-ct2", "en"),
        }
        for part, idx in (("english", range(len(files) - 1)), ("long", [len(files) - 1])):
            some, their = [files[i] for i in idx], [refs[i] for i in idx]
            times, rates = measure(engines, some, their, "wer", "whisper_en", args.repeats, part)
            results[part] = {"seconds": sum(sf.info(f).duration for f in some), "files": len(some),
                             "times": times, "rates": rates}  # fmt: skip
        results["profile"] = [profile("real English, bare-cost adapter, torch fp32, 30 s window",
                                      engines["speechpeft --engine torch (fp32)"], torch_host, files)]  # fmt: skip
        del engines, q_host
        # --- SYNTHETIC short utterances, the demo adapter ------------------------------------------
        files, refs = demo_files(DEMO_TEST, args.short)
        export(args.adapter, tmp / "demo-hf", "hf")
        export(args.adapter, tmp / "demo-ct2", "ct2", quantization="int8")
        default = speechpeft_engine(args.adapter, tmp / "d0", "zh")
        picked = pick_engine(default.opts, [(str(args.adapter), [])], None)
        if picked == "torch":  # what auto runs, on the model already loaded (loading is outside every timing)
            default = speechpeft_engine(args.adapter, tmp / "d0", "zh", torch_host)
        q_host = int8_host(tmp / "demo-hf")
        fitted = speechpeft_engine(args.adapter, tmp / "d1", "zh", torch_host, engine="torch", window_step=2)
        engines = {
            f"speechpeft default (auto: {picked}, the adapter's {demo_window:g} s window)": default,
            "speechpeft --engine torch --window-step 2 (window fitted per batch)": fitted,
            f"speechpeft torch path, torch.ao dynamic int8, {demo_window:g} s window": speechpeft_engine(
                None, tmp / "d2", "zh", q_host, engine="torch", window_seconds=demo_window
            ),  # fmt: skip
            "speechpeft --engine ct2 (int8, 30 s window)": speechpeft_engine(
                args.adapter, tmp / "d3", "zh", engine="ct2"
            ),  # fmt: skip
            "transformers pipeline (merged export, 30 s window)": pipeline_engine(tmp / "demo-hf", "zh"),
            FW + ", 30 s window": faster_whisper_engine(tmp / "demo-ct2", "zh"),
        }
        times, rates = measure(engines, files, refs, "cer", "zh_chars", args.repeats, "demo")
        results["demo"] = {"seconds": sum(sf.info(f).duration for f in files), "files": len(files),
                           "times": times, "rates": rates}  # fmt: skip
        fixed = speechpeft_engine(args.adapter, tmp / "d4", "zh", torch_host, engine="torch")
        results["profile"] += [
            profile(f"demo adapter, torch fp32, {demo_window:g} s window", fixed, torch_host, files),
            profile("demo adapter, torch fp32, --window-step 2", fitted, torch_host, files),
        ]
        # --- the window step, on dev only --------------------------------------------------------
        dev_files, dev_refs = demo_files(DEMO_DEV, args.dev)
        norm = make_normaliser("zh_chars")
        results["dev_steps"] = {}
        for step in (0.0, 1.0, 2.0, 4.0):
            run = speechpeft_engine(args.adapter, tmp / f"s{step:g}", "zh", torch_host, engine="torch",
                                    window_step=step)  # fmt: skip
            tick = time.perf_counter()
            hyps = run(dev_files)
            results["dev_steps"][step] = (error_rate(dev_refs, hyps, "cer", norm).rate, time.perf_counter() - tick)
            print(f"[dev] window step {step:g}: CER {results['dev_steps'][step][0]:.4f}", flush=True)
        results["dev_files"] = len(dev_files)
    (HERE / "transcribe.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    args.report.write_text(render(results), encoding="utf-8")
    print(f"wrote {args.report}")


def table(part: dict, metric: str, peer: str) -> list[str]:
    base = statistics.median(part["times"][peer])
    peer_rate = part["rates"][peer]
    lines = [f"| engine | wall time (spread) | audio s / wall s | vs faster-whisper int8 | {metric} "
             f"| Δ {metric} vs it |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for name, ts in part["times"].items():
        t = statistics.median(ts)
        rate = part["rates"][name]
        lines.append(f"| {name} | {t:.2f} s ({min(ts):.2f}-{max(ts):.2f}) | {part['seconds'] / t:.2f} | "
                     f"{base / t:.2f}x | {rate:.4f} | {rate - peer_rate:+.4f} |")  # fmt: skip
    return lines


def render(r: dict) -> str:
    eng, demo = r["english"], r["demo"]
    fw_demo = next(k for k in demo["times"] if k.startswith(FW))
    shown = Path(r["adapter"]).relative_to(ROOT) if Path(r["adapter"]).is_relative_to(ROOT) else r["adapter"]
    lines = [
        "# Transcription speed on CPU with an adapter: speechpeft's engines vs pipeline vs faster-whisper",
        "",
        f"Made by `python bench/transcribe.py` on {r['date']}: {r['machine']} CPU, {r['threads']} threads, "
        f"torch {r['torch']}, model {MODEL}; one run, engines rotated, median of the timed runs (min-max in brackets).",
        "Settings for every engine: language forced, greedy (beam 1), no temperature fallback, segment",
        f"timestamps, batch {BATCH} where the engine batches across files (speechpeft, the pipeline;",
        "faster-whisper's `WhisperModel.transcribe` takes one file at a time; speechpeft's ct2 engine",
        "decodes the first windows of files up to 30 s as one batch on the same CTranslate2 model). Wall",
        "time includes audio decoding, not model loading. The pipeline and faster-whisper run the",
        "adapter's merged export.",
        "",
        f"## Real English, short: the {eng['files']} LibriVox clips, {eng['seconds']:.1f} s",
        "",
        "Adapter: LoRA r=8 on q,v, 30 s window, zero-initialised (every engine must write whisper-base's words).",
        "WER: pooled, Whisper's English normaliser.",
        "",
        *table(eng, "WER", FW),
        "",
        f"## Real English, long-form: one file of {r['long']['seconds']:.1f} s (the five clips joined five times)",
        "",
        "The same adapter; sequential 30 s windows, each starting at the last timestamp of the one before.",
        "",
        *table(r["long"], "WER", FW),
        "",
        f"## SYNTHETIC short utterances: {demo['files']} of the demo corpus' test split, {demo['seconds']:.1f} s",
        "",
        f"Adapter: `{shown}`"
        f" (S2-LoRA from `speechpeft finetune --recipe child_zh`, trained with a {r['demo_window']:g} s window).",
        "CER: pooled, `zh_chars` normaliser. The 30 s rows decode in a window the adapter was not trained with.",
        "",
        *table(demo, "CER", fw_demo),
        "",
        "## Where the time goes (torch path, one untimed-in-the-table pass each)",
        "",
        "| setting | total | in the encoder | rest (features, decoder, search) | encoder calls |",
        "|---|---|---|---|---|",
    ]
    for p in r["profile"]:
        share = p["encoder"] / p["total"]
        lines.append(f"| {p['setting']} | {p['total']:.2f} s | {p['encoder']:.2f} s ({share:.0%}) | "
                     f"{p['total'] - p['encoder']:.2f} s | {p['calls']} |")  # fmt: skip
    lines += [
        "",
        f"## The window step, on dev ({r['dev_files']} utterances of voices d1-d3, SYNTHETIC)",
        "",
        "`--window-step S`: in short-window mode each batch's window is its longest file rounded up to S",
        "seconds (0: the adapter's whole window). Chosen on dev (before this run, on 60 of these",
        "utterances, the same ordering): every step cost CER there, so the default is 0 and fitting is an",
        "option; the test rows above show the default and `--window-step 2`.",
        "",
        "| window step | dev CER | wall time |",
        "|---|---|---|",
        *[
            f"| {float(s):g} s{' (whole window)' if float(s) == 0 else ''} | {c:.4f} | {t:.1f} s |"
            for s, (c, t) in r["dev_steps"].items()
        ],  # fmt: skip
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
