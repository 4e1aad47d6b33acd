"""Running `speechpeft serve`'s app on a free loopback port inside a test (uvicorn in a thread)."""

from __future__ import annotations

import contextlib
import threading
import time


@contextlib.contextmanager
def running_server(model_dir, **options):
    """The base URL of a served app over a freshly loaded host; stopped on exit."""
    from speechpeft.models import load_host
    from speechpeft.serve import ServeOptions, create_app

    host = load_host(str(model_dir), device="cpu")
    app = create_app(host, ServeOptions(base=str(model_dir), **options))
    with serving(app) as url:
        yield url, app


@contextlib.contextmanager
def serving(app):
    """The base URL of ``app`` (from create_app) served on a free loopback port; stopped on exit."""
    import uvicorn
    from demo_helpers import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
