"""Serving the web app: a threaded WSGI server that stops cleanly on SIGTERM or Ctrl-C."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

from werkzeug.serving import BaseWSGIServer, make_server

from voltci.config import Settings
from voltci.errors import BadInput


def start(settings: Settings, host: str, port: int) -> tuple[BaseWSGIServer, threading.Thread]:
    """The server, listening, and the thread serving it (for `volt up --web`)."""
    from voltci.web.app import create_app

    try:
        server = make_server(host, port, create_app(settings), threaded=True)
    except OSError as exc:
        raise BadInput(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    thread = threading.Thread(target=server.serve_forever, name="web", daemon=True)
    thread.start()
    return server, thread


def url_of(server: BaseWSGIServer) -> str:
    host = server.host if ":" not in server.host else f"[{server.host}]"
    return f"http://{host}:{server.port}/"


def serve(settings: Settings, host: str, port: int, on_ready: Callable[[str], None]) -> None:
    """Serve until SIGTERM or Ctrl-C."""
    server, thread = start(settings, host, port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    on_ready(url_of(server))
    while not stop.wait(0.5):
        pass
    server.shutdown()
    thread.join(timeout=10)
