"""``speechpeft demo``: start the Gradio page (demos/app.py, which owns its options)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from ..errors import SpeechPeftError

APP = Path(__file__).resolve().parents[2] / "demos" / "app.py"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the Gradio demo: transcribe, compare adapters, clone a voice (see 'speechpeft demo --help')",
        add_help=False,
    )
    p.add_argument("demo_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(argv: list[str]) -> int:
    """Load demos/app.py and run its ``main(argv)``.

    Raises:
        SpeechPeftError: the source tree's demos/ folder is not beside this install.
    """
    if not APP.is_file():
        raise SpeechPeftError(
            f"the demo ships with the source tree ({APP.parent.name}/{APP.name}), which this install lacks; "
            "run it from a clone of the repository"
        )
    spec = importlib.util.spec_from_file_location("speechpeft_demo_app", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return int(module.main(argv) or 0)
