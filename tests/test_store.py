"""The store's build state machine: each transition's writes (fakeredis), the one guarded-transaction
helper and its bound, and transitions raced from several real processes against a real Redis."""

from __future__ import annotations

import multiprocessing
from dataclasses import replace

import fakeredis
import pytest
import redis
from support import SHA_A, SHA_B, SHA_C, outcome

from voltci import jobqueue, keys
from voltci.config import Settings
from voltci.models import AttemptState, Build, PointerUpdate, Status
from voltci.store import Contended, Store
from voltci.store.tx import TRIES, guarded


def new_build(sha: str = SHA_A, branch: str = "main") -> Build:
    return Build(id=keys.build_id("proj", sha), repo="proj", url="/r", commit=sha, branch=branch, subject="s")


@pytest.fixture
def store(fake) -> Store:
    return Store(fake, Settings(max_attempts=2))


def test_submit_writes_record_indexes_job_and_pointer_once(store, fake) -> None:
    build = new_build()
    assert store.builds.submit(build, PointerUpdate("proj", "main", SHA_A))
    assert not store.builds.submit(build)  # a second observer, or a restarted one
    stored = store.records.get_build(build.id)
    assert (stored.status, stored.attempt, stored.jobs) == (Status.QUEUED, 1, [keys.job_id(build.id, 1)])
    assert fake.sismember(keys.queued(), build.id) and fake.hget(keys.pointer("proj"), "main") == SHA_A
    assert store.records.resolve_commit(SHA_A[:6]) == build.id
    assert store.history.latest_build("proj", "main").id == build.id
    assert store.queue.waiting_job_ids() == {keys.job_id(build.id, 1)}


def test_a_run_starts_and_ends_once_fenced_by_its_attempt(store, fake) -> None:
    build = new_build()
    store.builds.submit(build)
    assert store.builds.start_attempt(build.id, 2, "r2") is None
    running = store.builds.start_attempt(build.id, 1, "r1")
    assert (running.status, running.runner) == (Status.RUNNING, "r1")
    assert fake.sismember(keys.running(), build.id) and not fake.sismember(keys.queued(), build.id)
    assert store.builds.finish(build.id, 1, "r1", outcome(Status.FAILED))
    assert not store.builds.finish(build.id, 1, "r1", outcome(Status.PASSED))
    ended = store.records.get_build(build.id)
    assert (ended.status, ended.results_stored, ended.counts.total) == (Status.FAILED, 1, 3)
    assert [a.state for a in store.records.get_attempts(build.id)] == [AttemptState.FINISHED]
    assert not fake.sismember(keys.running(), build.id) and fake.llen(keys.outbox()) == 1


def test_a_lost_attempt_is_requeued_then_given_up(store, fake) -> None:
    build = new_build()
    store.builds.submit(build)
    store.builds.start_attempt(build.id, 1, "r1")
    assert store.builds.redispatch(build.id, 1, "r1 stopped sending heartbeats") == "requeued"
    assert store.builds.redispatch(build.id, 1, "again") == ""  # attempt 1 is no longer the build's
    again = store.records.get_build(build.id)
    assert (again.status, again.attempt, again.jobs) == (Status.QUEUED, 2, [keys.job_id(build.id, n) for n in (1, 2)])
    store.builds.start_attempt(build.id, 2, "r2")
    assert store.builds.redispatch(build.id, 2, "r2 stopped sending heartbeats") == "gave up"
    ended = store.records.get_build(build.id)
    assert (ended.status, ended.results_stored) == (Status.ERROR, 1) and "gave up after 2" in ended.reason
    assert [a.state for a in store.records.get_attempts(build.id)] == [AttemptState.LOST, AttemptState.LOST]
    assert [lost.then for lost in store.runners.recent_lost()] == ["gave up", "attempt 2 queued"]


def test_cancel_supersede_and_rebuild(store, fake) -> None:
    first, second, third = new_build(SHA_A), new_build(SHA_B), new_build(SHA_C)
    for build in (first, second, third):
        store.builds.submit(build)
    assert [b.id for b in store.builds.supersede(third)] == sorted([first.id, second.id])
    assert store.records.get_build(first.id).status is Status.SKIPPED
    assert store.records.get_build(third.id).status is Status.QUEUED
    before = store.builds.cancel(third.id, "not wanted")
    assert before.status is Status.QUEUED and store.records.get_build(third.id).status is Status.CANCELLED
    assert store.builds.cancel(third.id) is None  # already ended
    assert store.builds.rebuild(third.id).status is Status.CANCELLED
    rebuilt = store.records.get_build(third.id)
    assert (rebuilt.status, rebuilt.attempt, rebuilt.results_stored) == (Status.QUEUED, 2, 0)
    assert store.builds.rebuild(third.id) is None  # queued: not ended
    assert keys.job_id(third.id, 2) in store.queue.waiting_job_ids()
    assert keys.job_id(first.id, 1) not in store.queue.waiting_job_ids()  # the skipped build's job was retired


def test_guarded_reads_again_after_a_concurrent_write_and_is_bounded(fake) -> None:
    fake.set("k", "0")
    calls = []

    def body(pipe):
        calls.append(pipe.get("k"))
        if len(calls) == 1:
            fake.set("k", "changed")  # another writer, between the read and the write
        pipe.multi()
        pipe.set("k", "mine")
        return len(calls)
    assert guarded(fake, ["k"], body) == 2 and calls == ["0", "changed"] and fake.get("k") == "mine"

    def always_contended(pipe):
        pipe.get("k")
        fake.append("k", "!")  # someone else writes every time
        pipe.multi()
        pipe.set("k", "never")
    with pytest.raises(Contended):
        guarded(fake, ["k"], always_contended)
    assert fake.get("k") == "mine" + "!" * TRIES  # tried TRIES times, and wrote nothing


def test_a_bytes_client_is_given_a_decoding_one() -> None:
    raw = fakeredis.FakeRedis()
    store = Store(raw)
    store.builds.submit(new_build())
    assert store.records.get_build(new_build().id).commit == SHA_A
    assert isinstance(store.r.get(keys.pointer("x")) or "", str)


def test_history_of_every_repository_reads_one_index_and_falls_back_to_merging(store, fake) -> None:
    for n, sha in enumerate((SHA_A, SHA_B, SHA_C)):
        build = replace(new_build(sha), repo=f"r{n}", id=keys.build_id(f"r{n}", sha))
        store.builds.add(build, score=n)
        fake.hset(keys.repos(), build.repo, "{}")
    assert [b.repo for b in store.history.builds(limit=2)] == ["r2", "r1"]
    fake.zrem(keys.history(), keys.build_id("r2", SHA_C))  # as if recorded by an earlier version
    assert [b.repo for b in store.history.builds(limit=2)] == ["r2", "r1"]


def test_a_build_recorded_from_elsewhere_reads_like_one_run_here(store, fake) -> None:
    ran, imported = new_build(SHA_A), new_build(SHA_B)
    store.builds.submit(ran)
    store.builds.start_attempt(ran.id, 1, "r1")
    store.logs.append(ran.id, 1, "output\n")
    store.builds.finish(ran.id, 1, "r1", outcome(Status.FAILED))
    done = store.records.get_build(ran.id)
    store.builds.record_finished(replace(imported, runner="r1", started_at=done.started_at,
                                         finished_at=done.finished_at),
                                 outcome(Status.FAILED), "output\n", score=1.0, newest=False)
    copy = store.records.get_build(imported.id)
    assert (copy.status, copy.counts, copy.results_stored, copy.log_compressed) == \
        (done.status, done.counts, 1, True)
    assert store.records.get_tests(imported.id) == store.records.get_tests(ran.id)
    assert store.logs.read(imported.id) == store.logs.read(ran.id) == "output\n"
    assert [a.state for a in store.records.get_attempts(imported.id)] == [AttemptState.FINISHED]
    assert not fake.sismember(keys.queued(), imported.id) and store.history.latest_build("proj", "main").id == ran.id


# ---------------------------------------------------------------- across processes, real Redis

def _finish(url: str, build_id: str, status: str, barrier) -> bool:
    store = Store(redis.Redis.from_url(url, decode_responses=True))
    barrier.wait(timeout=30)
    return store.builds.finish(build_id, 1, f"r-{status}", outcome(Status(status)))


def _redispatch(url: str, build_id: str, barrier) -> str:
    store = Store(redis.Redis.from_url(url, decode_responses=True), Settings(redis_url=url))
    barrier.wait(timeout=30)
    return store.builds.redispatch(build_id, 1, "lost")


def _cancel(url: str, build_id: str, barrier) -> bool:
    store = Store(redis.Redis.from_url(url, decode_responses=True))
    barrier.wait(timeout=30)
    return store.builds.cancel(build_id) is not None


def test_racing_processes_end_a_build_exactly_once(conn, settings, redis_url) -> None:
    store = Store(conn, settings)
    build = new_build()
    store.builds.submit(build)
    store.builds.start_attempt(build.id, 1, "r1")
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(6) as pool:
        barrier = manager.Barrier(6)
        finishes = [pool.apply_async(_finish, (redis_url, build.id, s, barrier))
                    for s in ("passed", "failed", "passed", "failed")]
        redispatch = pool.apply_async(_redispatch, (redis_url, build.id, barrier))
        cancel = pool.apply_async(_cancel, (redis_url, build.id, barrier))
        outcomes = [f.get(timeout=60) for f in finishes] + [redispatch.get(timeout=60) != "", cancel.get(timeout=60)]
    ended = store.records.get_build(build.id)
    if outcomes[4] and outcomes[5]:
        # The re-dispatch won the running attempt, and the cancel then ended the queued attempt 2 (a
        # queued build may be cancelled): one final write, the cancel's, and nothing left in the queue.
        assert not any(outcomes[:4]), outcomes
        assert (ended.status, ended.attempt, ended.results_stored) == (Status.CANCELLED, 2, 1)
        assert jobqueue.waiting_job_ids(conn, settings) == set()
        return
    assert sum(outcomes) == 1, outcomes  # one writer won; every other saw the state it left
    assert ended.results_stored <= 1 and (ended.status.is_final or ended.status is Status.QUEUED)
    if ended.status is Status.QUEUED:  # the re-dispatch won: exactly one new attempt, one new job
        assert ended.attempt == 2 and jobqueue.waiting_job_ids(conn, settings) == {keys.job_id(build.id, 2)}
    else:
        assert ended.attempt == 1 and ended.results_stored == 1


def test_two_schedulers_redispatching_at_once_queue_one_attempt(conn, settings, redis_url) -> None:
    store = Store(conn, settings)
    build = new_build()
    store.builds.submit(build)
    store.builds.start_attempt(build.id, 1, "r1")
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(4) as pool:
        barrier = manager.Barrier(4)
        done = [r.get(timeout=60) for r in [pool.apply_async(_redispatch, (redis_url, build.id, barrier))
                                             for _ in range(4)]]
    assert sorted(done) == ["", "", "", "requeued"]
    after = store.records.get_build(build.id)
    assert (after.status, after.attempt) == (Status.QUEUED, 2)
    assert replace(after, queued_at="").jobs == [keys.job_id(build.id, 1), keys.job_id(build.id, 2)]
    assert jobqueue.waiting_job_ids(conn, settings) == {keys.job_id(build.id, 2)}
