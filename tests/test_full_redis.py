"""A full Redis (maxmemory reached, `noeviction`) is bad input like any other: a real redis-server is
filled while a build runs and a commit waits; the observer, the runner and the scheduler each say so
in one line and retry, nothing stored is lost, and both builds end once memory is freed."""

from __future__ import annotations

import json
import re
import time

import pytest
import redis
from cluster import SLOW_TEST, Cluster
from support import outcome, run_volt, wait_until

from voltci import keys
from voltci.models import Build
from voltci.store import Store

FULL = "Redis is full (maxmemory reached"


@pytest.fixture
def cluster(tmp_path):
    cluster = Cluster(tmp_path)
    yield cluster
    cluster.stop()


def fill(conn: redis.Redis) -> int:
    """Bring Redis to maxmemory with a key of the test's own (Volt's records are left as they are)."""
    used = int(conn.info("memory")["used_memory"])
    conn.config_set("maxmemory-policy", "noeviction")
    conn.config_set("maxmemory", str(used + 2 * 1024 * 1024))
    chunk = "x" * (64 * 1024)
    for _ in range(1000):
        try:
            conn.append("test:filler", chunk)
        except redis.exceptions.OutOfMemoryError:
            return int(conn.strlen("test:filler"))
    raise AssertionError("Redis never filled up")


def volt_keys(raw: redis.Redis, build_id: str) -> dict[bytes, bytes]:
    """Every key of a build, as Redis serializes it."""
    return {key: raw.dump(key) for key in raw.scan_iter(match=f"volt:build:{build_id}*")}


def test_a_full_redis_is_said_once_retried_and_loses_nothing(cluster, make_repo) -> None:
    repo = make_repo()
    repo.commit(SLOW_TEST, "a build that was stored before")
    cluster.worker("r1", FAULT_SLEEP="0.1")
    cluster.scheduler()
    cluster.start("observer", "observe", "--repo", str(repo.path), "--poll", "0.2")
    store = Store(cluster.conn)
    earlier = wait_until(lambda: store.history.builds("proj", 5), "the first build")[0]
    assert cluster.wait_final(earlier.id).status.value == "passed"
    stored = volt_keys(cluster.rq_conn, earlier.id)
    assert keys.build(earlier.id).encode() in stored

    cluster.procs["r1"].kill()  # a runner whose tests take a while, so one runs while Redis fills
    cluster.procs["r1"].wait(timeout=10)
    cluster.worker("r2", FAULT_SLEEP="4")
    running_sha = repo.commit({"a.txt": "running"}, "running while Redis fills")
    running = cluster.wait_running_on("r2")["build"]
    assert running.endswith(running_sha)
    filler = fill(cluster.conn)
    waiting_sha = repo.commit({"a.txt": "waiting"}, "committed while Redis is full")
    cluster.worker("r3")  # a runner started while Redis is full
    status = run_volt("status", "--redis-url", cluster.server.url)
    assert status.returncode == 0 and "FULL: writes are refused" in status.stdout, status.stdout
    time.sleep(8)  # the running build's tests end meanwhile; the new commit cannot be queued
    for name in ("observer", "r2", "r3", "scheduler"):
        assert cluster.procs[name].poll() is None, cluster.log(name)[-2000:]
        assert FULL in cluster.log(name), f"{name} did not say Redis is full:\n{cluster.log(name)[-2000:]}"
    assert cluster.build(running).status.value == "running"
    assert not cluster.conn.exists(keys.build(keys.build_id("proj", waiting_sha)))

    cluster.conn.delete("test:filler")  # memory is freed
    assert filler > 0
    assert cluster.wait_final(running).status.value == "passed"
    waiting = keys.build_id("proj", waiting_sha)
    wait_until(lambda: cluster.conn.exists(keys.build(waiting)), "the waiting commit to be queued")
    assert cluster.wait_final(waiting).status.value == "passed"
    for build_id in (running, waiting):
        build = cluster.build(build_id)
        assert (build.results_stored, build.attempt) == (1, 1), build
    assert volt_keys(cluster.rq_conn, earlier.id) == stored  # nothing already stored was touched
    assert wait_until(lambda: cluster.beat("r3"), "the runner started while Redis was full to be up")
    for name, processes in (("observer", 1), ("r2", 2), ("r3", 2), ("scheduler", 1)):
        text = cluster.log(name)
        assert "Traceback" not in text, text[-3000:]
        said = len(re.findall(re.escape(FULL), text))
        assert 1 <= said <= processes, f"{name} said it {said} times:\n{text[-3000:]}"  # r2: runner and work-horse
        assert "Redis takes writes again" in text, text[-2000:]


def test_status_shows_memory_and_the_bytes_of_a_finished_build(conn, settings) -> None:
    store = Store(conn, settings)
    conn.hset(keys.repos(), "proj", json.dumps({"url": "/r"}))
    for n in range(3):
        build = Build(id=keys.build_id("proj", f"{n:04x}" + "b" * 36), repo="proj", url="/r",
                      commit=f"{n:04x}" + "b" * 36, branch="main")
        store.builds.add(build, n)
        store.builds.start_attempt(build.id, 1, "r1")
        store.logs.append(build.id, 1, "output\n" * 100)
        store.builds.finish(build.id, 1, "r1", outcome())
    conn.config_set("maxmemory", str(64 * 1024 * 1024))
    try:
        proc = run_volt("status", "--json", "--redis-url", settings.effective_redis_url)
        text = run_volt("status", "--redis-url", settings.effective_redis_url).stdout
    finally:
        conn.config_set("maxmemory", "0")
    data = json.loads(proc.stdout)
    assert data["memory"]["maxmemory_bytes"] == 64 * 1024 * 1024 and data["memory"]["used_bytes"] > 0
    assert not data["memory"]["full"] and data["memory"]["policy"] == "noeviction"
    (repo,) = data["repositories"]
    assert (repo["repo"], repo["builds"]) == ("proj", 3) and 500 < repo["bytes_per_finished_build"] < 20_000
    assert "used of 64.0 MiB maxmemory (noeviction)" in text and "3 build(s) kept" in text
