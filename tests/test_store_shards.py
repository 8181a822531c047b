"""The shards part (store/shards.py): the last shard's merge is the build's end, in one transaction,
whichever shards finish together (raced across processes on a real Redis); a shard lost too often
ends the build through the builds part, in the shard's transaction; what the part tells the trail and
the queue (stand-ins, fakeredis). Splitting and the merged report are tested in test_sharding.py."""

from __future__ import annotations

import multiprocessing

import fakeredis
import redis
from support import SHA_A
from test_store_builds import Told

from voltci import keys
from voltci.config import Settings
from voltci.models import AttemptState, Build, Counts, Outcome, RunOutcome, Status, TestResult
from voltci.store import Store
from voltci.store.builds import Builds
from voltci.store.legs import Legs
from voltci.store.records import Records
from voltci.store.shards import Shards

SHARDS = 4


def started(store: Store, shards: int) -> Build:
    build = Build(id=keys.build_id("proj", SHA_A), repo="proj", url="/r", commit=SHA_A, branch="main")
    assert store.builds.submit(build)
    assert store.builds.start_attempt(build.id, 1, "r0") is not None
    assert store.shards.start(build.id, 1, [[f"t.T.test_{n}"] for n in range(shards)], "r0")
    for n in range(1, shards):
        assert store.shards.claim(build.id, 1, n, 1, f"r{n}") is not None
    return build


def one(n: int) -> RunOutcome:
    return RunOutcome(Status.PASSED, [TestResult(f"t.T.test_{n}", Outcome.PASSED, 0.1)], Counts(total=1, passed=1))


def _finish_shard(url: str, build_id: str, shard: int, barrier) -> str | None:
    store = Store(redis.Redis.from_url(url, decode_responses=True), Settings(redis_url=url))
    barrier.wait(timeout=30)
    return store.shards.finish(build_id, 1, shard, 1, f"r{shard}", one(shard))


def test_shards_finishing_at_once_in_processes_merge_once_into_the_builds_end(conn, redis_url) -> None:
    store = Store(conn, Settings(redis_url=redis_url))
    build = started(store, SHARDS)
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(SHARDS) as pool:
        barrier = manager.Barrier(SHARDS)
        done = [r.get(timeout=60) for r in [pool.apply_async(_finish_shard, (redis_url, build.id, n, barrier))
                                            for n in range(SHARDS)]]
    assert sorted(done) == ["merged"] + ["stored"] * (SHARDS - 1)
    ended = store.records.get_build(build.id)
    assert (ended.status, ended.results_stored, ended.counts.total) == (Status.PASSED, 1, SHARDS)
    assert sorted(t.id for t in store.records.get_tests(build.id)) == [f"t.T.test_{n}" for n in range(SHARDS)]
    assert [s.state for s in store.records.get_shards(build.id)] == [AttemptState.FINISHED] * SHARDS
    assert not any(conn.exists(keys.build_shard_tests(build.id, n)) for n in range(SHARDS))
    assert conn.llen(keys.outbox()) == 1 and not conn.sismember(keys.running(), build.id)


def test_a_shard_lost_too_often_ends_the_build_through_the_builds_part_and_a_late_merge_writes_nothing(
        conn, redis_url) -> None:
    """The builds part's give-up runs inside the shard's transaction: one end, its lost attempt recorded."""
    store = Store(conn, Settings(redis_url=redis_url, max_attempts=1))
    build = started(store, 2)
    assert store.shards.finish(build.id, 1, 0, 1, "r0", one(0)) == "stored"
    assert store.shards.redispatch(build.id, 1, 1, 1, "r1 stopped sending heartbeats") == "gave up"
    assert store.shards.finish(build.id, 1, 1, 1, "r1", one(1)) is None  # too late: the build ended
    ended = store.records.get_build(build.id)
    assert (ended.status, ended.results_stored) == (Status.ERROR, 1)
    assert "gave up after shard 1 had 1 attempt(s)" in ended.reason
    assert [lost.then for lost in store.runners.recent_lost()] == ["gave up"]


def test_the_merge_is_recorded_in_the_trail_and_told_to_the_queue_once() -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    queue, trail = Told(), Told()
    settings, records = Settings(), Records(client)
    legs = Legs(client, settings, trail, queue)  # type: ignore[arg-type]
    builds = Builds(client, settings, records, legs, trail, queue)  # type: ignore[arg-type]
    shards = Shards(client, settings, records, builds, legs, trail, queue)  # type: ignore[arg-type]
    build = Build(id=keys.build_id("proj", SHA_A), repo="proj", url="/r", commit=SHA_A, branch="main")
    builds.submit(build)
    builds.start_attempt(build.id, 1, "r0")
    shards.start(build.id, 1, [["t.T.test_0"], ["t.T.test_1"]], "r0")
    shards.claim(build.id, 1, 1, 1, "r1")
    queue.calls.clear()
    assert shards.finish(build.id, 1, 1, 1, "r1", one(1)) == "stored" and queue.calls == trail.calls == []
    assert shards.finish(build.id, 1, 0, 1, "r0", one(0)) == "merged"
    assert queue.calls == [("ended", (build.id,))] and trail.calls == [("record_quietly", (build.id,))]
