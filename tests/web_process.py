"""A real `volt web` process on loopback, for the tests that attack it over HTTP."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from support import ROOT, child_env, wait_until

from voltci.config import Settings
from voltci.redis_server import free_port


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


@contextmanager
def volt_web(settings: Settings, log_dir: Path, **env: str) -> Iterator[str]:
    """`volt web` on a free loopback port with `env` (VOLT_WEB_TOKEN, VOLT_HOOK_SECRET…); its base URL."""
    port = free_port()
    with open(log_dir / f"web-{port}.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "voltci", "web", "--port", str(port),
                                 "--redis-url", settings.effective_redis_url],
                                env=child_env(**env), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: urllib.request.urlopen(url + "/", timeout=2).read(), "volt web", 30, ignoring=(OSError,),
                   process=proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def call(url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None) -> Answer:
    """One HTTP request, any status an answer (no redirect followed)."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=30) as response:
            return Answer(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, dict(exc.headers), exc.read())
