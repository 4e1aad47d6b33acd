"""Serving many adapters: `speechpeft serve` batching across adapters vs one adapter at a time.

Real openai/whisper-base on this machine's CPU, loopback HTTP, real LibriVox clips. Each load is
REQUESTS requests from C concurrent clients (C = 1, 4, 16), request i naming adapter i mod 8.
Two strategies behind the same HTTP server, in the same run, alternating per concurrency level:

- mixed: the decode worker batches waiting requests (up to --max-batch rows, --max-wait-ms) and
  decodes them in one mixed-adapter batch through the adapter bank;
- merged: one adapter at a time, merged into the weights for its rows and restored after
  (merge, decode, unmerge), as a server without multi-adapter batching has to.

The 8 adapters are LoRA r=8 on q,v with random weights small enough to keep the words: this
measures what serving costs, not what adapters learn. Every response is checked against the
clip's transcript (whisper_en WER) so that a fast wrong answer cannot win. A third strategy, peft,
replaces the decode call with PEFT's mixed-batch `generate(adapter_names=...)` behind the same
server and batching.

    python bench/serve.py               # about 8 minutes on 2 CPU cores; writes bench/serve.md
    python bench/serve.py --tiny        # a tiny random Whisper, seconds: checks the script runs
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from speechpeft.eval import error_rate, make_normaliser  # noqa: E402

CLIPS = sorted((ROOT / "tests" / "data" / "librivox").glob("*.flac"))
TRANSCRIPTS = json.loads((ROOT / "tests" / "data" / "librivox" / "transcripts.json").read_text())
N_ADAPTERS = 8
LEVELS = (1, 4, 16)
STRATEGIES = ("mixed", "merged", "peft")  # --tiny leaves out peft: its clips overflow the tiny window


def run_load(url: str, clients: int, requests: int) -> dict:
    work = [(CLIPS[i % len(CLIPS)], f"a{i % N_ADAPTERS}") for i in range(requests)]

    def one(item):
        clip, model = item
        t = time.perf_counter()
        r = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": (clip.name, clip.read_bytes())},
                       data={"model": model, "language": "en"}, timeout=600)  # fmt: skip
        if r.status_code != 200:  # counted, not hidden: an engine that fails requests shows it
            return time.perf_counter() - t, None, clip.name
        return time.perf_counter() - t, r.json()["text"], clip.name

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, work))
    wall = time.perf_counter() - started
    ok = [r for r in results if r[1] is not None]
    latencies = sorted(r[0] for r in ok) or [float("nan")]
    refs, hyps = [TRANSCRIPTS[r[2]] for r in ok], [r[1] for r in ok]
    return {
        "wall_s": wall,
        "failed": len(results) - len(ok),
        "requests_per_s": len(ok) / wall,
        "p50_s": statistics.median(latencies),
        "p95_s": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
        "wer": error_rate(refs, hyps, "wer", make_normaliser("whisper_en")).rate if ok else float("nan"),
    }


def batch_totals(url: str) -> tuple[float, float, float]:
    """(decode calls, rows, distinct adapters summed over calls) so far, from /metrics."""
    import re

    text = httpx.get(f"{url}/metrics").text

    def value(name):
        m = re.search(rf"^{name} (\S+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    return tuple(value(f"speechpeft_{n}") for n in ("batch_size_count", "batch_size_sum", "batch_adapters_sum"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="a tiny random Whisper: checks the script, measures nothing")
    p.add_argument("--requests", type=int, default=32, help="requests per load")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--output", type=Path, default=HERE / "serve.md")
    args = p.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    from serve_helpers import running_server, serving
    from tiny import make_tiny_whisper_dir, random_lora_adapter

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = str(make_tiny_whisper_dir(tmp / "whisper-tiny")) if args.tiny else "openai/whisper-base"
        for i in range(N_ADAPTERS):
            random_lora_adapter(base, tmp / "adapters" / f"a{i}", seed=i, std=0.05 if not args.tiny else 0.5,
                                targets="attn_qv")  # fmt: skip
        rows = []
        strategies = STRATEGIES[:2] if args.tiny else STRATEGIES
        for k, clients in enumerate(LEVELS):
            for strategy in strategies[k % len(strategies) :] + strategies[: k % len(strategies)]:  # rotate the order
                opts = dict(adapters=str(tmp / "adapters"), max_batch=args.max_batch, strategy=strategy,
                            queue_size=max(64, args.requests))  # fmt: skip
                if strategy == "peft":
                    server = serving(peft_app(base, tmp / "adapters", args.max_batch, opts["queue_size"]))
                else:
                    server = running_server(base, **opts)
                with server as started:
                    url = started if strategy == "peft" else started[0]
                    run_load(url, 1, 2)  # warm-up: first-call costs stay out of the table
                    before = batch_totals(url)
                    result = run_load(url, clients, args.requests)
                    calls, rows_sum, adapters_sum = (a - b for a, b in zip(batch_totals(url), before, strict=True))
                    rows_per_call, adapters_per_call = rows_sum / max(calls, 1), adapters_sum / max(calls, 1)
                rows.append({"clients": clients, "strategy": strategy, **result,
                             "rows_per_call": rows_per_call, "adapters_per_call": adapters_per_call})  # fmt: skip
                print(f"{clients:>2} clients {strategy:>6}: {result['requests_per_s']:.2f} req/s, "
                      f"p50 {result['p50_s']:.2f} s, p95 {result['p95_s']:.2f} s, WER {result['wer']:.3f}")  # fmt: skip
    write(args.output, rows, "tiny random Whisper (checks the script only)" if args.tiny else "openai/whisper-base")
    return 0


def peft_app(base: str, adapters: Path, max_batch: int, queue_size: int):
    """The same HTTP server with its decode worker replaced by PEFT: every adapter loaded into one
    PeftModel, each batch decoded by ``generate(adapter_names=[...])`` (PEFT's mixed-batch
    inference), the same batching (rows, wait) as the mixed strategy."""
    from peft import PeftModel

    from speechpeft.models import Segment, load_whisper
    from speechpeft.serve import AdapterPool, DecodeWorker, ServeOptions, create_app
    from speechpeft.serve.worker import BatchRecord

    host = load_whisper(base, device="cpu")
    names = [f"a{i}" for i in range(N_ADAPTERS)]
    model = PeftModel.from_pretrained(host.model, str(adapters / names[0]), adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(str(adapters / name), adapter_name=name)
    model.eval()
    processor = host._processor()

    class PeftWorker(DecodeWorker):
        def _decode(self, batch):
            started = time.monotonic()
            try:
                feats = host.features([r.audio for r in batch])
                names = [r.adapter or "__base__" for r in batch]
                with torch.no_grad():
                    ids = model.generate(input_features=feats, language="en", task="transcribe", adapter_names=names)
            except Exception as e:  # noqa: BLE001 -- the batch's requests get PEFT's error
                for r in batch:
                    r.future.set_exception(e)
                return
            texts = processor.batch_decode(ids, skip_special_tokens=True)
            record = BatchRecord(len(batch), tuple(r.adapter for r in batch), time.monotonic() - started)
            self.on_batch(record, batch)
            for r, text in zip(batch, texts, strict=True):
                r.future.set_result([Segment(0.0, r.seconds, text.strip())])

    opts = ServeOptions(base=base, adapters=str(adapters), max_batch=max_batch, queue_size=queue_size)
    worker = PeftWorker(host, AdapterPool(host, adapters), max_batch, opts.max_wait_ms, queue_size)
    return create_app(host, opts, worker)


def write(path: Path, rows: list[dict], model: str) -> None:
    merged = {r["clients"]: r for r in rows if r["strategy"] == "merged"}  # the ratios' peer
    lines = [
        "# Serving 8 adapters: batching across adapters vs one adapter at a time",
        "",
        f"Written by `python bench/serve.py` on {dt.date.today()}: {model}, "
        f"{platform.processor() or platform.machine()}"
        f", {torch.get_num_threads()} torch threads, CPU only, fp32, loopback HTTP (the client threads share the "
        "machine's 2 cores with the server). Each load: the 5 LibriVox clips (4.2-5.6 s) in turn, request i naming "
        "adapter i mod 8 (LoRA r=8 on q,v, random weights small enough to keep the words). Both strategies run "
        "behind the same server, in this run, alternating which goes first; ratios are within the run.",
        "",
        "| clients | strategy | requests/s | vs merged | p50 latency (s) | p95 latency (s) | rows / decode call | "
        "adapters / call | WER (whisper_en) | failed requests |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r["requests_per_s"] / merged[r["clients"]]["requests_per_s"]
        lines.append(
            f"| {r['clients']} | {r['strategy']} | {r['requests_per_s']:.2f} | {ratio:.2f}x | {r['p50_s']:.2f} | "
            f"{r['p95_s']:.2f} | {r['rows_per_call']:.1f} | {r['adapters_per_call']:.1f} | {r['wer']:.3f} | "
            f"{r['failed']} |"
        )
    lines += [
        "",
        "mixed: one decode worker collects waiting requests (up to 16 rows, 10 ms) and decodes them in one batch, "
        "each row with its own adapter through the adapter bank. merged: the adapter of each group of rows is "
        "merged into the weights, the rows decoded, the base weights restored. peft: the same server and batching "
        "with the decode call replaced by PEFT's mixed-batch `generate(adapter_names=...)` on one PeftModel holding "
        "the 8 adapters (short-form decoding without timestamps: every clip fits the window). Not measured: a GPU "
        "(none was lent to the session that wrote this).",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
