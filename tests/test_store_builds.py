"""The builds part (store/builds.py) with the parts it is handed: what it tells the queue and the trail,
and when (fakeredis: pure logic, with stand-ins recording the calls); a queue that cannot reorder costs
a log line, never the change of state; and a build's end watched across processes on a real Redis.
The transitions themselves are tested in test_store.py."""

from __future__ import annotations

import logging
import multiprocessing
from dataclasses import replace
from typing import Any

import fakeredis
import pytest
import redis
from support import SHA_A, SHA_B, SHA_C, outcome

from voltci import keys
from voltci.config import Settings
from voltci.models import Build, Counts, Leg, Outcome, QueuedFor, RunOutcome, Status, TestResult
from voltci.store import Store
from voltci.store.builds import Builds
from voltci.store.legs import Legs
from voltci.store.records import Records


class Told:
    """A stand-in for a part the builds part is handed: records each call, returns nothing."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.calls.append((name, args))


def new_build(sha: str = SHA_A, branch: str = "main") -> Build:
    return Build(id=keys.build_id("proj", sha), repo="proj", url="/r", commit=sha, branch=branch, subject="s")


@pytest.fixture
def parts() -> tuple[Builds, Told, Told]:
    client = fakeredis.FakeRedis(decode_responses=True)
    queue, trail = Told(), Told()
    records = Records(client)
    settings = Settings(max_attempts=2)
    legs = Legs(client, settings, trail, queue)  # type: ignore[arg-type]
    return Builds(client, settings, records, legs, trail, queue), queue, trail  # type: ignore[arg-type]


def test_a_queued_build_tells_the_queue_once_and_a_build_that_exists_does_not(parts) -> None:
    builds, queue, trail = parts
    assert builds.submit(new_build())
    assert not builds.submit(new_build())
    assert builds.want(new_build().id, QueuedFor.NOTIFY)
    assert builds.submit_push([new_build(SHA_B), new_build(SHA_C)], None)
    assert queue.calls == [("enqueued", ())] * 3 and trail.calls == []


def test_an_end_is_recorded_in_the_trail_with_its_tests_then_told_to_the_queue(parts) -> None:
    builds, queue, trail = parts
    build = new_build()
    builds.submit(build)
    builds.start_attempt(build.id, 1, "r1")
    queue.calls.clear()
    ran = outcome(Status.PASSED)
    assert builds.finish(build.id, 1, "r1", ran)
    assert trail.calls == [("record_quietly", (build.id, ran.tests))] and queue.calls == [("ended", (build.id,))]
    assert not builds.finish(build.id, 1, "r1", ran)  # fenced: nothing more is told
    assert len(trail.calls) == 1 and len(queue.calls) == 1


def test_builds_ended_without_a_result_are_told_to_the_queue_together(parts) -> None:
    builds, queue, trail = parts
    older, newest = new_build(SHA_A), new_build(SHA_C)
    builds.submit(older)
    builds.submit(newest)
    queue.calls.clear()
    assert [b.id for b in builds.supersede(newest)] == [older.id]
    assert builds.cancel(newest.id) is not None
    assert queue.calls == [("ended", (older.id,)), ("ended", (newest.id,))]
    assert builds.rebuild(older.id) is not None and queue.calls[-1] == ("enqueued", ())
    assert trail.calls == []  # no results, nothing for the trail


def test_a_given_up_build_is_told_and_a_requeued_one_is_not(parts) -> None:
    builds, queue, _ = parts
    build = new_build()
    builds.submit(build)
    builds.start_attempt(build.id, 1, "r1")
    queue.calls.clear()
    assert builds.redispatch(build.id, 1, "lost") == "requeued" and queue.calls == []
    builds.start_attempt(build.id, 2, "r2")
    assert builds.redispatch(build.id, 2, "lost") == "gave up" and queue.calls == [("ended", (build.id,))]


def test_a_legs_end_is_the_legs_part_and_only_the_last_tells_that_the_build_ended(parts) -> None:
    builds, queue, trail = parts
    build = new_build()
    builds.submit(build)
    builds.start_attempt(build.id, 1, "coordinator")
    leg0, leg1 = builds.legs.start(build.id, 1, [Leg.of("3.11", {}), Leg.of("3.12", {})], "coordinator")
    for leg in (leg0, leg1):
        builds.start_attempt(leg.id, 1, "r")
    queue.calls.clear()
    passed = RunOutcome(Status.PASSED, [TestResult("t.T.test_a", Outcome.PASSED, 0.1)], Counts(total=1, passed=1))
    assert builds.finish(leg0.id, 1, "r", passed) and queue.calls == [] and trail.calls == []
    assert builds.finish(leg1.id, 1, "r", passed)
    assert queue.calls == [("ended", (build.id,))] and trail.calls == [("record_quietly", (build.id, None))]
    assert builds.records.get_build(build.id).counts.total == 2


def test_a_queue_that_cannot_reorder_costs_a_log_line_not_the_change(caplog, monkeypatch) -> None:
    store = Store(fakeredis.FakeRedis(decode_responses=True), Settings(dispatch="fair"))

    def down() -> None:
        raise redis.ConnectionError("Redis went away")
    monkeypatch.setattr(store.queue, "reorder", down)
    with caplog.at_level(logging.WARNING, logger="volt.dispatch"):
        assert store.builds.submit(new_build())
    assert store.records.get_build(new_build().id).status is Status.QUEUED
    assert "could not put the queue in dispatch order: Redis went away" in caplog.text


# ---------------------------------------------------------------- across processes, real Redis

def _end(url: str, build_id: str, how: str, barrier) -> bool:
    store = Store(redis.Redis.from_url(url, decode_responses=True), Settings(redis_url=url, max_attempts=1))
    barrier.wait(timeout=30)
    if how == "finish":
        return store.builds.finish(build_id, 1, "r1", outcome(Status.PASSED))
    if how == "cancel":
        return store.builds.cancel(build_id) is not None
    return store.builds.redispatch(build_id, 1, "lost") == "gave up"


def test_finish_cancel_and_give_up_racing_end_a_build_once_with_one_set_of_writes(conn, settings, redis_url) -> None:
    """Whichever wins, its end is whole: status, work sets, event count, outbox message, metrics, once."""
    store = Store(conn, replace(settings, max_attempts=1))
    build = new_build()
    store.builds.submit(build)
    store.builds.start_attempt(build.id, 1, "r1")
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(6) as pool:
        barrier = manager.Barrier(6)
        races = [pool.apply_async(_end, (redis_url, build.id, how, barrier))
                 for how in ("finish", "cancel", "give up") * 2]
        won = [race.get(timeout=60) for race in races]
    ended = store.records.get_build(build.id)
    assert sum(won) == 1 and ended.status.is_final and ended.results_stored == 1, won
    assert not conn.sismember(keys.running(), build.id) and not conn.sismember(keys.queued(), build.id)
    assert conn.llen(keys.outbox()) == 1
    assert sum(int(v) for k, v in conn.hgetall(keys.metrics()).items() if k.startswith("builds|")) == 1
