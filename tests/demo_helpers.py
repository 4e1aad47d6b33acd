"""Starting the demo page (demos/app.py) on a free loopback port inside a test."""

from __future__ import annotations

import contextlib
import socket
import sys
from pathlib import Path

DEMOS = Path(__file__).resolve().parents[1] / "demos"
if str(DEMOS) not in sys.path:
    sys.path.insert(0, str(DEMOS))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_demo(**config):
    """(Demo, url) of a served page; closed, and its workspace removed, on exit."""
    import app
    import service

    demo = service.Demo(service.DemoConfig(**config))
    port = free_port()
    page = app.launch(demo, port=port, block=False)
    try:
        yield demo, f"http://127.0.0.1:{port}/"
    finally:
        page.close()
        demo.close()
