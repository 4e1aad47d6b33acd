"""The ``speechpeft`` command: argument parsing only; the work is done by library functions."""

from __future__ import annotations

import argparse
import sys

from ..errors import SpeechPeftError
from . import adapters, demo, evaluate, export, serve, train, transcribe, tts


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors in the one-line style of every other error."""

    def error(self, message: str):  # argparse's own prints the usage block and exits
        command = self.prog.removeprefix("speechpeft").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"speechpeft: error: {where}{message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="speechpeft", description="Adapt pretrained speech models with tiny adapters.")
    parser.add_argument("--version", action="version", version=f"speechpeft {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train.add_parsers(sub)
    transcribe.add_parser(sub)
    evaluate.add_parser(sub)
    export.add_parser(sub)
    tts.add_parsers(sub)
    adapters.add_parser(sub)
    demo.add_parser(sub)
    serve.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a user error prints one line on stderr and returns 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["demo"]:  # the demo page parses its own options (demos/app.py)
        try:
            return demo.run(argv[1:])
        except SpeechPeftError as e:
            print(f"speechpeft: error: {e}", file=sys.stderr)
            return 2
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error already printed
        return e.code if isinstance(e.code, int) else 2
    if getattr(args, "no_progress", False):
        _quiet_loading_bars()
    try:
        return int(args.func(args) or 0)
    except SpeechPeftError as e:
        _print_error(e)
        return 2


def _print_error(e: SpeechPeftError) -> None:
    """One line on stderr. Under torchrun: an error every process raises alike (``SharedError``)
    is printed by rank 0 alone; any other names the rank that raised it."""
    import os

    prefix = ""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from ..distributed import SharedError

        rank = int(os.environ.get("RANK", "0"))
        if rank and isinstance(e, SharedError):
            return
        prefix = f"[rank {rank}] " if rank else ""
    print(f"speechpeft: error: {prefix}{e}", file=sys.stderr)


def _quiet_loading_bars() -> None:
    """--no-progress silences the libraries' bars too (weights loading, shards writing)."""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging

    logging.disable_progress_bar()
    disable_progress_bars()


def _version() -> str:
    from .. import __version__

    return __version__
