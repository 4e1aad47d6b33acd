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
    p.add_argument("--vad", action="store_true", help="chunk on silero-vad speech boundaries")
    p.add_argument("--window-seconds", type=float, help="encoder window; default: the adapter's, else 30")
    p.add_argument(
        "--window-step",
        type=float,
        default=0.0,
        help="short-window mode only: each batch's window is its longest input rounded up to this many seconds "
        "(faster, at some cost in CER: bench/transcribe.md; default 0, the adapter's whole window)",
    )
    p.add_argument("--overwrite", action="store_true", help="redo files whose outputs exist")
    p.add_argument("--device", help="cpu, cuda, cuda:1... (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true")
    e = p.add_argument_group("engine")
    e.add_argument(
        "--engine",
        choices=("torch", "ct2", "auto"),
        default="auto",
        help="auto (default): ct2 where it can serve the request and is the faster (CPU, one mergeable adapter "
        "trained with 30 s windows, or none), else torch; ct2: faster-whisper on the adapter's merged "
        "CTranslate2 export, converted once and cached; torch: speechpeft's own decoding",
    )
    e.add_argument("--ct2-compute", choices=("int8", "int8_float32", "float32"), default="int8",
                   help="the ct2 engine's compute type (default: int8)")  # fmt: skip
    d = p.add_argument_group("decoding (openai-whisper's options; see README)")
    d.add_argument(
        "--temperature",
        default="0",
        help="one value, or a fallback list such as 0,0.2,0.4,0.6,0.8,1.0 (default: 0, one greedy pass)",
    )
    d.add_argument(
        "--compression-ratio-threshold",
        type=float,
        help="re-decode a window whose gzip ratio is above this (default with fallback: 2.4)",
    )
    d.add_argument(
        "--logprob-threshold",
        type=float,
        help="re-decode a window whose mean log-probability is below this (default with fallback: -1.0)",
    )
    d.add_argument(
        "--no-speech-threshold",
        type=float,
        help="treat a window as silence above this no-speech probability (default with fallback: 0.6)",
    )
    d.add_argument("--initial-prompt", help="text to condition the first window on (names, spelling, style)")
    d.add_argument(
        "--condition-on-previous-text",
        action="store_true",
        help="long-form: condition each window on the previous one's text",
    )
    d.add_argument("--seed", type=int, default=0, help="seed for sampling at temperatures above 0 (default: 0)")
    w = p.add_argument_group("word timestamps")
    w.add_argument("--word-timestamps", action="store_true", help="words with start and end times (json, srt, vtt)")
    w.add_argument(
        "--word-edges",
        choices=("vad", "attention"),
        default="vad",
        help="vad (default): words beside a pause end at silero-vad's speech edges; attention: alignment alone",
    )
    w.add_argument("--highlight-words", action="store_true", help="srt/vtt: underline each word as it is spoken")
    w.add_argument("--max-line-width", type=int, help="srt/vtt: characters per line")
    w.add_argument("--max-line-count", type=int, help="srt/vtt: lines per cue (with --max-line-width)")
    w.add_argument("--max-words-per-line", type=int, help="srt/vtt: words per cue")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import SpeechPeftError
    from ..infer import TranscribeOptions, jobs_from_args, transcribe_files
    from ..infer.transcribe import failure_lines, summary_lines
    from ..infer.writers import SubtitleLayout, parse_formats
    from ..models.decoding import DecodeOptions, parse_temperatures

    try:
        formats = parse_formats(args.format)
    except ValueError as e:
        raise SpeechPeftError(str(e)) from None
    decode = DecodeOptions(
        temperatures=parse_temperatures(args.temperature), compression_ratio_threshold=args.compression_ratio_threshold,
        logprob_threshold=args.logprob_threshold, no_speech_threshold=args.no_speech_threshold,
        initial_prompt=args.initial_prompt, condition_on_previous_text=args.condition_on_previous_text,
        word_timestamps=args.word_timestamps, seed=args.seed,
    )  # fmt: skip
    layout = SubtitleLayout(args.max_line_width, args.max_line_count, args.max_words_per_line, args.highlight_words)
    jobs = jobs_from_args(args.audio, args.adapter, args.adapter_map)
    opts = TranscribeOptions(
        model=args.model, language=args.language, task=args.task, beam=args.beam, batch_size=args.batch_size,
        formats=formats, output_dir=Path(args.output_dir), vad=args.vad, overwrite=args.overwrite,
        window_seconds=args.window_seconds, window_step=args.window_step, device=args.device,
        progress=not args.no_progress, decode=decode, layout=layout, word_edges=args.word_edges, engine=args.engine,
        ct2_compute=args.ct2_compute,
    )  # fmt: skip
    out = transcribe_files(jobs, opts)
    for line in summary_lines(out, Path(args.output_dir)):
        print(line)
    for line in failure_lines(out):
        print(f"speechpeft: error: {line}", file=sys.stderr)
    return 1 if out.failures else 0
