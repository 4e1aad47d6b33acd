"""``speechpeft export``."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="an adapter as PEFT LoRA, a merged transformers model, or CTranslate2")
    p.add_argument("--adapter", required=True, help="adapter directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (model loading included)")
    p.add_argument("-o", "--output", required=True, help="directory to write")
    p.add_argument("--merge", action="store_true", help="merge into the base model (format hf unless --format ct2)")
    p.add_argument("--format", choices=["peft", "hf", "ct2"], help="default: hf with --merge, else peft")
    p.add_argument("--model", help="base model (default: the one the adapter records)")
    p.add_argument("--quantization", help="ct2 only: e.g. int8, int8_float32, float16")
    p.add_argument("--language", help="Master-ASR adapters: the language whose assembled model is merged")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import SpeechPeftError
    from ..models.export import export

    fmt = args.format or ("hf" if args.merge else "peft")
    if args.merge and fmt == "peft":
        raise SpeechPeftError("--merge makes a full model; it cannot be --format peft")
    if args.quantization and fmt != "ct2":
        raise SpeechPeftError("--quantization applies to --format ct2 only")
    if args.language and fmt == "peft":
        raise SpeechPeftError("--language picks what --merge merges; a PEFT export has no language")
    out = export(args.adapter, args.output, fmt, args.model, args.overwrite, args.quantization, args.language)
    print(f"wrote {fmt} export of {args.adapter} to {out}")
    return 0
