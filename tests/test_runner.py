"""The runner's own logic (fakeredis): it runs only attempts it owns and rides out a short outage
when storing a finished build's result; one real Redis refuses INFO."""

from __future__ import annotations

import os
import sys

import pytest
import redis
from support import SHA_A, add, outcome

from voltci import keys
from voltci.config import Settings
from voltci.models import Status, Work
from voltci.runner import build as runner
from voltci.runner.build import BuildRun
from voltci.store import Store


def test_attempt_it_does_not_own_is_not_run(fake: redis.Redis, tmp_path) -> None:
    build = add(fake, "proj", SHA_A)
    result = BuildRun(Store(fake, Settings(workspace_dir=str(tmp_path))), Work(build.id, 2), "host.1").run()
    assert result["stored"] is False
    assert not (tmp_path / "host").exists()  # nothing was checked out


def test_a_checkout_failure_ends_the_build_error(fake: redis.Redis, tmp_path) -> None:
    build = add(fake, "proj", SHA_A)  # its url "/r" is no repository
    result = BuildRun(Store(fake, Settings(workspace_dir=str(tmp_path))), Work(build.id, 1), "host.1").run()
    assert result["stored"] and result["status"] == "error"
    assert fake.hget(keys.build(build.id), "reason").startswith("checkout failed")


def test_storing_the_result_retries_through_a_redis_outage(fake: redis.Redis, monkeypatch) -> None:
    build = add(fake, "proj", SHA_A)
    store = Store(fake)
    store.builds.start_attempt(build.id, 1, "host.1")
    real = store.builds.finish
    failures = iter([redis.ConnectionError("down"), redis.TimeoutError("slow")])

    def flaky(*args):
        error = next(failures, None)
        if error:
            raise error
        return real(*args)
    monkeypatch.setattr(store.builds, "finish", flaky)
    monkeypatch.setattr(runner.time, "sleep", lambda s: None)
    assert runner.retrying("store", 60, lambda: store.builds.finish(
        build.id, 1, "host.1", outcome(Status.PASSED)))
    assert Store(fake).records.get_build(build.id).status is Status.PASSED


def test_an_outage_longer_than_the_bound_is_raised(monkeypatch) -> None:
    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr(runner.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(runner.time, "sleep", lambda s: None)

    def down():
        raise redis.ConnectionError("down")
    try:
        runner.retrying("start", 30, down)
    except redis.ConnectionError:
        pass
    else:
        raise AssertionError("the outage was not reported")


def test_a_build_runs_whole_when_redis_is_away_as_it_could_be_split(fake, monkeypatch) -> None:
    from voltci.heartbeat import Heartbeat
    from voltci.models import Build, RunnerBeat

    for name in ("a", "b"):
        Heartbeat(Store(fake), RunnerBeat(name=name, queues=["volt"]), 2, 60).send()
    build = Build(id="proj-" + SHA_A, repo="proj", url="/r", commit=SHA_A, branch="main")
    store = Store(fake, Settings(shard_threshold=1))
    run = BuildRun(store, Work(build.id, 1), "a")

    def away(*args, **kwargs):
        raise redis.ConnectionError("restarting")
    monkeypatch.setattr(store.history, "timings", away)
    assert run.split(build, steps=None, listing=lambda: ["t1", "t2"]) is None  # type: ignore[arg-type]
    assert run.work.shard is None and run.ownership.work.shard is None


def test_a_redis_that_refuses_info_costs_a_finished_build_no_wait(conn, redis_url, tmp_path, monkeypatch) -> None:
    """A managed Redis whose ACL refuses INFO: what it replicates cannot be known, so the runner stores
    the result and goes on, instead of waiting for a replica until its bound (every build, two minutes)."""
    user = f"volt-no-info-{os.getpid()}"
    conn.acl_setuser(user, enabled=True, passwords=["+pw"], keys=["*"], channels=["*"], commands=["+@all", "-info"])
    try:
        limited = redis.Redis.from_url(redis_url.replace("redis://", f"redis://{user}:pw@"))
        with pytest.raises(redis.ResponseError):
            limited.info("replication")
        build = add(limited, "proj", SHA_A)  # its url "/r" is no repository: the checkout fails at once
        slept: list[float] = []
        real_sleep = runner.time.sleep

        def sleep(seconds: float) -> None:
            """The runner's own waits are counted (and not waited); anyone else's — another thread's, or
            subprocess's polling of a git that exits slowly on a loaded machine — sleeps as ever."""
            if sys._getframe(1).f_globals.get("__name__") == runner.__name__:
                slept.append(seconds)
            else:
                real_sleep(seconds)
        monkeypatch.setattr(runner.time, "sleep", sleep)
        result = BuildRun(Store(limited, Settings(workspace_dir=str(tmp_path))), Work(build.id, 1), "host.1").run()
        assert result["stored"] and result["status"] == "error"
        assert sum(slept) < 1.0, slept
    finally:
        conn.acl_deluser(user)
