"""The scheduler's decisions, one pass at a time against a real Redis, with its clock in the test's
hands: when a runner counts as lost, what a re-dispatch writes, and what it never does."""

from __future__ import annotations

from dataclasses import replace

import pytest
from rq.job import Job
from support import SHA_A, outcome

from voltci import jobqueue, keys, scheduler
from voltci.heartbeat import Heartbeat
from voltci.models import AttemptState, Build, RunnerBeat, Status
from voltci.store import Store


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(scheduler.time, "monotonic", clock)
    monkeypatch.setattr(scheduler.Scheduler, "_redis_uptime_s", lambda self: REDIS_UPTIME[0])
    REDIS_UPTIME[0] = 3600.0
    return clock


REDIS_UPTIME = [3600.0]


@pytest.fixture
def fast(settings):
    return replace(settings, heartbeat=1.0, heartbeat_ttl=3.0, max_attempts=2)


def submit(rq_conn, settings) -> Build:
    build = Build(id=keys.build_id("proj", SHA_A), repo="proj", url="/r", commit=SHA_A, branch="main")
    assert Store(rq_conn, settings).builds.submit(build)
    return build


def take(rq_conn, conn, settings, build: Build, runner: str) -> None:
    """What a runner does when it takes the build: dequeue its job and start the attempt."""
    attempt = Store(conn).records.get_build(build.id).attempt
    job = Job.fetch(keys.job_id(build.id, attempt), connection=rq_conn, serializer=jobqueue.JOB_SERIALIZER)
    jobqueue.volt_queue(rq_conn, settings.queue).remove(job)
    job.set_status("started")
    assert Store(conn).builds.start_attempt(build.id, attempt, runner) is not None


def beat(conn, settings, name: str, build_id: str = "", attempt: int = 0) -> Heartbeat:
    heartbeat = Heartbeat(Store(conn), RunnerBeat(name=name), settings.heartbeat, settings.heartbeat_ttl)
    heartbeat.beat.build, heartbeat.beat.attempt = build_id, attempt
    heartbeat.send()
    return heartbeat


def test_nothing_is_judged_just_after_redis_started(conn, rq_conn, fast, clock) -> None:
    build = submit(rq_conn, fast)
    take(rq_conn, conn, fast, build, "gone-runner")  # a runner that has no key
    sched = scheduler.Scheduler(fast)
    REDIS_UPTIME[0] = 1.0  # runners' keys may have expired while Redis was down
    assert sched.step() == []
    REDIS_UPTIME[0] = 2 * fast.heartbeat
    (action,) = sched.step()
    assert (action.build, action.attempt, action.done) == (build.id, 1, "requeued")


def test_a_lost_attempt_is_recorded_and_the_next_one_queued(conn, rq_conn, fast, clock) -> None:
    build = submit(rq_conn, fast)
    take(rq_conn, conn, fast, build, "r1")
    sched = scheduler.Scheduler(fast)
    sched.step()
    after = Store(conn).records.get_build(build.id)
    assert (after.status, after.attempt, after.runner) == (Status.QUEUED, 2, "")
    (lost,) = Store(conn).records.get_attempts(build.id)
    assert (lost.state, lost.runner) == (AttemptState.LOST, "r1") and "r1 stopped sending heartbeats" in lost.reason
    assert keys.job_id(build.id, 2) in jobqueue.waiting_job_ids(rq_conn, fast)
    job = Job.fetch(keys.job_id(build.id, 1), connection=rq_conn, serializer=jobqueue.JOB_SERIALIZER)
    assert job.get_status().value == "failed"
    # Fencing: the lost attempt can neither start again nor store a result.
    assert Store(conn).builds.start_attempt(build.id, 1, "r1") is None
    assert not Store(conn).builds.finish(build.id, 1, "r1", outcome())
    assert sched.step() == []  # attempt 2 waits in the queue: nothing to do


def test_a_live_runner_keeps_its_build_and_registry_tracks_it(conn, rq_conn, fast, clock) -> None:
    build = submit(rq_conn, fast)
    take(rq_conn, conn, fast, build, "r1")
    heartbeat = beat(conn, fast, "r1", build.id, 1)
    sched = scheduler.Scheduler(fast)
    assert sched.step() == []
    (row,) = Store(conn).runners.table()
    assert (row.name, row.alive, row.build) == ("r1", True, build.id)
    heartbeat.stop()  # a runner leaving removes its key
    sched.step()
    (row,) = Store(conn).runners.table()
    assert (row.alive, row.state) == (False, "gone")


def test_a_runner_that_moved_on_loses_the_build_after_a_ttl(conn, rq_conn, fast, clock) -> None:
    build = submit(rq_conn, fast)
    take(rq_conn, conn, fast, build, "r1")
    beat(conn, fast, "r1")  # alive, but idle: its work-horse died
    sched = scheduler.Scheduler(fast)
    assert sched.step() == []  # first seen unattended now
    beat(conn, fast, "r1")
    clock.now += fast.heartbeat_ttl
    (action,) = sched.step()
    assert "r1 is no longer working on it" in action.reason


def test_a_job_that_failed_before_starting_its_build_is_requeued(conn, rq_conn, fast, clock) -> None:
    build = submit(rq_conn, fast)
    job = Job.fetch(keys.job_id(build.id, 1), connection=rq_conn, serializer=jobqueue.JOB_SERIALIZER)
    jobqueue.volt_queue(rq_conn, fast.queue).remove(job)
    job.set_status("failed")
    sched = scheduler.Scheduler(fast)
    assert sched.step() == []  # first seen unattended
    clock.now += fast.heartbeat_ttl
    (action,) = sched.step()
    assert "its rq job is failed and it never started" in action.reason


def test_after_max_attempts_the_build_ends_error_once(conn, rq_conn, fast, clock) -> None:
    build = submit(rq_conn, fast)
    sched = scheduler.Scheduler(fast)
    for runner, done in (("r1", "requeued"), ("r2", "gave up")):
        take(rq_conn, conn, fast, build, runner)
        (action,) = sched.step()
        assert action.done == done
    after = Store(conn).records.get_build(build.id)
    assert after.status is Status.ERROR and after.results_stored == 1
    assert after.reason.startswith("gave up after 2 attempt(s)")
    assert not conn.sismember(keys.running(), build.id) and not conn.sismember(keys.queued(), build.id)
    assert [lost.then for lost in Store(conn).runners.recent_lost()] == ["gave up", "attempt 2 queued"]
    assert sched.step() == []


def test_only_the_lock_holder_acts(conn, rq_conn, fast, clock) -> None:
    build = submit(rq_conn, fast)
    take(rq_conn, conn, fast, build, "r1")
    first, second = scheduler.Scheduler(fast), scheduler.Scheduler(fast)
    assert len(first.step()) == 1 and first.leading
    assert second.step() == [] and not second.leading
    first.release()
    assert second.step() == [] and second.leading  # nothing left to do, but it leads now
    assert Store(conn).records.get_build(build.id).attempt == 2


def test_redispatch_of_an_attempt_that_moved_on_does_nothing(conn, rq_conn, fast) -> None:
    build = submit(rq_conn, fast)
    take(rq_conn, conn, fast, build, "r1")
    assert Store(conn).builds.finish(build.id, 1, "r1", outcome())
    assert Store(rq_conn, fast).builds.redispatch(build.id, 1, "late") == ""
    assert Store(conn).records.get_build(build.id).status is Status.PASSED


def test_a_runner_whose_first_beat_comes_during_a_pass_is_not_lost(conn, rq_conn, fast, clock, monkeypatch) -> None:
    """A plain `rq worker`'s job writes its runner's first beat just before it starts its attempt: a pass
    that read the beats before that and the running builds after must not call the runner lost."""
    build = submit(rq_conn, fast)
    sched = scheduler.Scheduler(fast)
    read_beats = sched.store.runners.live

    def beats_then_the_job_starts() -> dict[str, RunnerBeat]:
        seen = read_beats()
        beat(conn, fast, "r1", build.id, 1)  # the job's first beat, and its attempt, just after
        take(rq_conn, conn, fast, build, "r1")
        return seen
    monkeypatch.setattr(sched.store.runners, "live", beats_then_the_job_starts)
    assert sched.step() == []
    after = Store(conn).records.get_build(build.id)
    assert (after.status, after.attempt, after.runner) == (Status.RUNNING, 1, "r1")
