"""``speechpeft evaluate``: score a manifest, or compare two result files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import SpeechPeftError
from ..fs import atomic_write_text


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="CER/WER of a manifest with bootstrap intervals; or --compare two results")
    p.add_argument("--manifest", help="JSONL manifest (audio_filepath, text, duration, optional speaker/language)")
    p.add_argument("--model", default="openai/whisper-base", help="hub id or path (default: %(default)s)")
    p.add_argument("--adapter", help="adapter directory")
    p.add_argument(
        "--metric", default="auto", choices=["auto", "cer", "wer"], help="auto: CER for zh/ja/th..., else WER"
    )
    p.add_argument("--normaliser", default="auto", help="auto, zh_chars, whisper_en, basic or none")
    p.add_argument("--language", help="Whisper language code; default: the manifest's")
    p.add_argument("--beam", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--window-seconds", type=float, help="encoder window; default: the adapter's, else 30")
    p.add_argument("-o", "--output", help="output prefix for .json and .md (default: runs/eval/<manifest>[-<adapter>])")
    p.add_argument("--overwrite", action="store_true", help="replace existing result files")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"), help="paired bootstrap of two results")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..eval.evaluate import compare, evaluate, render_markdown

    if args.compare:
        a, b = (_read_result(Path(p)) for p in args.compare)
        c = compare(a, b)
        m = c["metric"].upper()
        print(
            f"{m} A {c['rate_a']:.4f} - B {c['rate_b']:.4f} = {c['delta']:+.4f} "
            f"(95 % CI [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]), paired bootstrap p = {c['p_value']:.4f}"
        )
        return 0
    if not args.manifest:
        raise SpeechPeftError("evaluate needs --manifest (or --compare A.json B.json)")
    default = f"runs/eval/{Path(args.manifest).stem}" + (f"-{Path(args.adapter).name}" if args.adapter else "")
    prefix = Path(args.output or default)
    outputs = [prefix.with_suffix(".json"), prefix.with_suffix(".md")]
    existing = [str(p) for p in outputs if p.exists()]
    if existing and not args.overwrite:
        raise SpeechPeftError(f"{existing[0]} exists; pass --overwrite to replace it")
    result = evaluate(
        args.manifest, args.model, args.adapter, args.metric, args.normaliser, args.language, args.beam,
        args.batch_size, args.window_seconds, progress=not args.no_progress,
    )  # fmt: skip
    text = render_markdown(result)
    atomic_write_text(outputs[0], json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    atomic_write_text(outputs[1], text)
    print(text + f"\nwrote {outputs[0]} and {outputs[1]}")
    return 0


def _read_result(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpeechPeftError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise SpeechPeftError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(data, dict) or "utterances" not in data or "corpus" not in data:
        raise SpeechPeftError(f"{path}: not a `speechpeft evaluate` result")
    return data
