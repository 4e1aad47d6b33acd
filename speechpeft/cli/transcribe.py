"""``speechpeft transcribe``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "transcribe",
        help="transcribe audio of any length, with an adapter per file; txt/srt/vtt/tsv/json",
        description="Transcribe audio files of any length. Files that fail are listed at the end; "
        "the others complete (exit status 1 when any failed).",
    )
    p.add_argument("audio", nargs="*", metavar="AUDIO", help="audio files (wav, flac, ogg, mp3; m4a... with PyAV)")
    p.add_argument("--model", default="openai/whisper-base", help="hub id or path (default: %(default)s)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--adapter", help="adapter directory used for every file")
    group.add_argument(
        "--adapter-map",
        metavar="FILE",
        help="JSON {pattern: adapter}, CSV pattern,adapter, or a JSONL manifest with an 'adapter' field",
    )
    p.add_argument("--language", help="language code or name; default: Whisper detects it")
    p.add_argument("--task", default="transcribe", choices=["transcribe", "translate"])
    p.add_argument("--beam", type=int, default=1, help="beam size (default: greedy)")
    p.add_argument("--batch-size", type=int, default=8, help="files per batch (speech chunks with --vad)")
    p.add_argument(
        "-f", "--format", default="txt", help="comma-separated: txt, srt, vtt, tsv, json, or all (default: txt)"
    )
    p.add_argument("-o", "--output-dir", default=".", help="folder for the outputs (default: the current one)")
    p.add_argument("--vad", action="store_true", help="chunk on silero-vad speech boundaries (needs silero-vad)")
    p.add_argument("--window-seconds", type=float, help="encoder window; default: the adapter's, else 30")
    p.add_argument("--overwrite", action="store_true", help="redo files whose outputs exist")
    p.add_argument("--device", help="cpu, cuda, cuda:1... (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import SpeechPeftError
    from ..infer import TranscribeOptions, jobs_from_args, transcribe_files
    from ..infer.transcribe import failure_lines, summary_lines
    from ..infer.writers import parse_formats

    try:
        formats = parse_formats(args.format)
    except ValueError as e:
        raise SpeechPeftError(str(e)) from None
    jobs = jobs_from_args(args.audio, args.adapter, args.adapter_map)
    opts = TranscribeOptions(
        model=args.model, language=args.language, task=args.task, beam=args.beam, batch_size=args.batch_size,
        formats=formats, output_dir=Path(args.output_dir), vad=args.vad, overwrite=args.overwrite,
        window_seconds=args.window_seconds, device=args.device, progress=not args.no_progress,
    )  # fmt: skip
    out = transcribe_files(jobs, opts)
    for line in summary_lines(out, Path(args.output_dir)):
        print(line)
    for line in failure_lines(out):
        print(f"speechpeft: error: {line}", file=sys.stderr)
    return 1 if out.failures else 0
