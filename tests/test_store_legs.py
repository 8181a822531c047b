"""The legs part (store/legs.py): a leg's end runs inside the transaction of the part that decides it —
its own end (builds), its last shard's merge (shards), its given-up attempt (builds) — and the last
leg's end writes the build's result in that same transaction. Raced across processes on a real Redis;
the rest of matrix builds is tested in test_matrix.py."""

from __future__ import annotations

import multiprocessing

import redis
from support import SHA_A

from voltci import keys
from voltci.config import Settings
from voltci.models import Build, Counts, Leg, Outcome, RunOutcome, Status, TestResult
from voltci.store import Store

LEGS = 5


def ran(leg: int, status: Outcome = Outcome.PASSED) -> RunOutcome:
    tests = [TestResult(f"t.T.test_{n}", status, 0.1, order=n) for n in range(3)]
    counts = Counts.of(tests)
    return RunOutcome(Status.FAILED if counts.failed else Status.PASSED, tests, counts, "", f"leg {leg}")


def split(store: Store, legs: int) -> tuple[Build, list[Build]]:
    build = Build(id=keys.build_id("proj", SHA_A), repo="proj", url="/r", commit=SHA_A, branch="main")
    assert store.builds.submit(build)
    assert store.builds.start_attempt(build.id, 1, "coordinator") is not None
    recorded = store.legs.start(build.id, 1, [Leg.of(f"3.{10 + n}", {}) for n in range(legs)], "coordinator")
    assert recorded is not None
    for n, leg in enumerate(recorded):
        assert store.builds.start_attempt(leg.id, 1, f"r{n}") is not None
    return build, recorded


def _end_leg(url: str, leg_id: str, n: int, how: str, barrier) -> bool:
    store = Store(redis.Redis.from_url(url, decode_responses=True), Settings(redis_url=url, max_attempts=1))
    barrier.wait(timeout=30)
    if how == "give up":
        return store.builds.redispatch(leg_id, 1, "lost") == "gave up"
    return store.builds.finish(leg_id, 1, f"r{n}", ran(n, Outcome.FAILED if n == 0 else Outcome.PASSED))


def test_legs_ending_at_once_in_processes_store_the_build_once_with_every_legs_tests(conn, redis_url) -> None:
    store = Store(conn, Settings(redis_url=redis_url, max_attempts=1))
    build, legs = split(store, LEGS)
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(LEGS) as pool:
        barrier = manager.Barrier(LEGS)
        hows = ["give up"] + ["finish"] * (LEGS - 1)
        ends = [pool.apply_async(_end_leg, (redis_url, leg.id, n, hows[n], barrier)) for n, leg in enumerate(legs)]
        assert all(end.get(timeout=60) for end in ends)  # each leg ends once, by its own transaction
    ended = store.records.get_build(build.id)
    assert (ended.status, ended.results_stored, ended.counts.total) == (Status.ERROR, 1, 3 * (LEGS - 1))
    assert "gave up after 1 attempt(s)" in ended.reason  # the given-up leg's reason, merged
    assert len(store.records.get_tests(build.id)) == 3 * (LEGS - 1)
    assert [leg.results_stored for leg in store.records.get_legs(build.id)] == [1] * LEGS
    assert not any(conn.exists(keys.build_results(leg.id)) for leg in legs)  # the build's results hold them
    assert conn.llen(keys.outbox()) == 1 and not conn.sismember(keys.running(), build.id)


def test_a_sharded_legs_last_shard_ends_the_leg_and_the_build_in_its_merge(conn, redis_url) -> None:
    store = Store(conn, Settings(redis_url=redis_url))
    build, (leg0, leg1) = split(store, 2)
    assert store.builds.finish(leg0.id, 1, "r0", ran(0))
    assert store.shards.start(leg1.id, 1, [["t.T.test_0"], ["t.T.test_1"]], "r1")
    assert store.shards.claim(leg1.id, 1, 1, 1, "r2") is not None
    half = RunOutcome(Status.PASSED, [TestResult("t.T.test_0", Outcome.PASSED, 0.1)], Counts(total=1, passed=1))
    assert store.shards.finish(leg1.id, 1, 0, 1, "r1", half) == "stored"
    assert store.records.get_build(build.id).status is Status.RUNNING
    other = RunOutcome(Status.PASSED, [TestResult("t.T.test_1", Outcome.PASSED, 0.1)], Counts(total=1, passed=1))
    assert store.shards.finish(leg1.id, 1, 1, 1, "r2", other) == "merged"
    ended, leg = store.records.get_build(build.id), store.records.get_build(leg1.id)
    assert (leg.status, leg.results_stored, leg.counts.total) == (Status.PASSED, 1, 2)
    assert (ended.status, ended.results_stored, ended.counts.total) == (Status.PASSED, 1, 5)
    assert sorted((t.leg, t.id) for t in store.records.get_tests(build.id)) == sorted(
        [("py3.10", f"t.T.test_{n}") for n in range(3)] + [("py3.11", "t.T.test_0"), ("py3.11", "t.T.test_1")])
    assert not conn.exists(keys.build_shard_tests(leg1.id, 0)) and not conn.exists(keys.build_shard_tests(leg1.id, 1))
