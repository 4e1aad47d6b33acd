"""``speechpeft serve``: the OpenAI-compatible transcription server (speechpeft.serve)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="HTTP server: one base model, many adapters, OpenAI's transcription API")
    p.add_argument("--base", default="openai/whisper-base", help="Whisper hub id or path")
    p.add_argument("--adapters", help="folder whose adapter subfolders requests name in 'model'")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--capacity", type=int, default=16, help="adapters kept in the bank at once (LRU)")
    p.add_argument("--max-batch", type=int, default=8, help="rows per decode call")
    p.add_argument("--max-wait-ms", type=float, default=10.0, help="how long a batch waits to fill")
    p.add_argument("--queue-size", type=int, default=64, help="requests waiting before 503")
    p.add_argument("--max-upload-mb", type=float, default=50.0)
    p.add_argument("--max-seconds", type=float, default=1800.0, help="longest audio accepted")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds a request may take (504 after)")
    p.add_argument(
        "--strategy",
        default="mixed",
        choices=["mixed", "merged"],
        help="mixed: rows of many adapters in one batch (default); merged: one adapter at a time, merged",
    )
    p.add_argument(
        "--vad",
        action="store_true",
        help="decode files longer than the window as silero-vad chunks (as transcribe --vad)",
    )
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..models import load_host
    from ..serve import ServeOptions, create_app

    opts = ServeOptions(
        base=args.base, adapters=args.adapters, capacity=args.capacity, max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms, queue_size=args.queue_size, max_upload_mb=args.max_upload_mb,
        max_seconds=args.max_seconds, timeout_s=args.timeout, strategy=args.strategy, vad=args.vad,
    )  # fmt: skip
    host = load_host(args.base, device=args.device)
    uvicorn.run(create_app(host, opts), host=args.host, port=args.port, log_level="info")
    return 0
