"""The ``speechpeft`` command: argument parsing only; the work is done by library functions."""

from __future__ import annotations

import argparse
import sys

from ..errors import SpeechPeftError
from . import adapters, evaluate, export, train, transcribe, tts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speechpeft", description="Adapt pretrained speech models with tiny adapters."
    )
    parser.add_argument("--version", action="version", version=f"speechpeft {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train.add_parsers(sub)
    transcribe.add_parser(sub)
    evaluate.add_parser(sub)
    export.add_parser(sub)
    tts.add_parsers(sub)
    adapters.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a user error prints one line on stderr and returns 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SpeechPeftError as e:
        print(f"speechpeft: error: {e}", file=sys.stderr)
        return 2


def _version() -> str:
    from .. import __version__

    return __version__
