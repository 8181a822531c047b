"""The observer loop, as a real process, outlives a Redis restart and a failing fetch: one log line
per retry, never a crash, and no commit is lost. A primary that comes back empty loses no build to run,
and a runner outlives a Redis that goes away while it starts."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import redis
from support import ROOT, child_env, wait_until

from voltci import keys
from voltci.observer import RepoWatch
from voltci.redis_server import RedisServer
from voltci.store import Store


@pytest.fixture
def own_redis(tmp_path):
    """A server of this test's own, with its append-only file on, so it can be stopped and restarted."""
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    yield server
    server.stop()


def wait_for_build(url: str, repo: str, sha: str) -> None:
    wait_until(lambda: redis.Redis.from_url(url).exists(keys.build(keys.build_id(repo, sha))),
               f"a build of {sha[:10]}")


def test_observer_survives_redis_restart_and_failing_fetch(own_redis, make_repo, tmp_path) -> None:
    repo = make_repo()
    first = repo.commit({"a.txt": "0"}, "zero")
    env = child_env(VOLT_WORKSPACE_DIR=str(tmp_path / "ws"))
    log_path = tmp_path / "observer.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, str(ROOT / "bin" / "volt-observe"), "--repo", str(repo.path),
                                 "--poll", "0.2", "--redis-url", own_redis.url],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_build(own_redis.url, "proj", first)

        own_redis.stop()
        during_outage = repo.commit({"a.txt": "1"}, "committed while Redis was down")
        time.sleep(1.5)
        assert proc.poll() is None, log_path.read_text()
        own_redis.start()
        wait_for_build(own_redis.url, "proj", during_outage)

        moved = repo.path.with_name("moved-away")
        repo.path.rename(moved)
        time.sleep(1.0)
        assert proc.poll() is None, log_path.read_text()
        moved.rename(repo.path)
        after_fetch_failure = repo.commit({"a.txt": "2"}, "after the fetch failed")
        wait_for_build(own_redis.url, "proj", after_fetch_failure)
        assert proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    text = log_path.read_text()
    assert "Traceback" not in text
    assert "Redis unavailable" in text and "retrying" in text
    assert "not a git repository (or not reachable)" in text  # the repository moved away: ls-remote says so


def test_mirror_recovers_from_a_killed_fetch_and_a_deleted_mirror(rq_conn, settings, make_repo) -> None:
    repo = make_repo()
    repo.commit({"a.txt": "0"}, "zero")
    watch = RepoWatch(Store(rq_conn, settings), str(repo.path))
    watch.validate()
    watch.poll()
    # What a fetch killed half-way leaves: a ref lock file.
    (watch.mirror.path / "refs" / "heads" / "main.lock").write_text("")
    second = repo.commit({"a.txt": "1"}, "one")
    assert [b.commit for b in watch.poll()] == [second]
    shutil.rmtree(watch.mirror.path)
    third = repo.commit({"a.txt": "2"}, "two")
    assert [b.commit for b in watch.poll()] == [third]


def test_builds_a_primary_came_back_without_are_queued_again(make_repo, tmp_path) -> None:
    """A replica promoted while it was still copying the primary comes up empty: the builds the observer
    had queued, its pointers and the registry are all gone. The observer queues every one of them again
    (not only the head, as for a branch seen the first time), and only once."""
    server = RedisServer(tmp_path / "redis").start()  # nothing on disk: a restart comes back empty
    repo = make_repo()
    env = child_env(VOLT_WORKSPACE_DIR=str(tmp_path / "ws"))
    log_path = tmp_path / "observer.log"
    shas = [repo.commit({"a.txt": "0"}, "zero")]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, str(ROOT / "bin" / "volt-observe"), "--repo", str(repo.path),
                                 "--poll", "0.2", "--redis-url", server.url],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_build(server.url, "proj", shas[0])
        for n in (1, 2):
            shas.append(repo.commit({"a.txt": str(n)}, f"change {n}"))
            wait_for_build(server.url, "proj", shas[-1])
        server.stop()
        server.start()
        for sha in shas:
            wait_for_build(server.url, "proj", sha)
        client = redis.Redis.from_url(server.url, decode_responses=True)
        wait_until(lambda: client.hget(keys.pointer("proj"), "main") == shas[-1], "the pointer back at the head")
        wait_until(lambda: client.hexists(keys.repos(), "proj"), "the repository registered again")
        time.sleep(1.0)  # a few more polls: nothing is queued twice
        store = Store(client)
        assert [store.records.get_build(keys.build_id("proj", sha)).attempt for sha in shas] == [1, 1, 1]
        assert client.llen("rq:queue:volt") == 3
        assert proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
        server.stop()
    text = log_path.read_text()
    assert "Traceback" not in text
    assert text.count("lost with the failover; queued again") == 3


def test_a_runner_whose_redis_goes_away_while_it_starts_waits_for_it(tmp_path) -> None:
    """A failover or restart between a runner's connecting and its first dequeue (rq's birth and pubsub)
    is waited out with a log line, as in the work loop, rather than ending the runner."""
    import threading

    from voltci.config import Settings
    from voltci.connection import connect
    from voltci.runner.worker import make_worker

    server = RedisServer(tmp_path / "redis").start()
    try:
        settings = Settings(redis_url=server.url, workspace_dir=str(tmp_path / "ws"), sandbox=False)
        worker = make_worker(connect(server.url, decode=False), settings, "starting-runner")
        server.stop()
        threading.Timer(2.0, server.start).start()
        assert worker.work(burst=True, logging_level="WARNING") is False  # started, found nothing, stopped
        client = redis.Redis.from_url(server.url)
        assert client.sismember("rq:workers", worker.key) or client.hexists(worker.key, "death")
    finally:
        server.stop()
