"""Where builds meet rq: enqueueing, re-dispatching and cancelling builds, and queue and job stats.

(worker.py, the runner process, is the other module that imports rq.)

A build is enqueued in one Redis transaction with its record and, when given, the observer's
pointer: either all of them are written or none, and a build that already exists is never
enqueued again (two observers, or one restarted, cannot build a commit twice). Re-dispatching a
lost attempt and cancelling are transactions on the build record too, so they cannot race a
runner that starts or ends the same attempt.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, replace
from typing import Callable

import redis
from rq import Queue, Worker, get_current_job
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry

from voltci import keys, results
from voltci.config import Settings
from voltci.connection import decoded
from voltci.models import Attempt, AttemptState, Build, Shard, Status

log = logging.getLogger("volt.queue")
TRANSACTION_TRIES = 10

RUN_BUILD = "voltci.runner.run_build"
RUN_SHARD = "voltci.runner.run_shard"
# rq's own job timeout is only a backstop behind the runner's build timeout.
RQ_TIMEOUT_MARGIN_S = 300


@dataclass(frozen=True)
class PointerUpdate:
    repo: str
    branch: str
    sha: str


def describe(build: Build) -> str:
    """What rq-dashboard shows for a build's job: repo, short sha, subject."""
    subject = build.subject if len(build.subject) <= 72 else build.subject[:71] + "…"
    return f"{build.repo} {build.commit[:10]} {subject}".strip()


def submit_build(conn: redis.Redis, build: Build, settings: Settings, pointer: PointerUpdate | None = None) -> bool:
    """Record and enqueue `build` (and move the pointer) atomically. False if the build already existed.

    `conn` is a bytes connection, as rq needs.
    """
    queue = Queue(settings.queue, connection=conn)
    queue.get_redis_server_version()  # cached; rq would otherwise ask in the middle of the transaction
    build_key = keys.build(build.id)
    with conn.pipeline() as pipe:
        while True:
            try:
                pipe.watch(build_key)
                exists = bool(pipe.exists(build_key))
                pipe.multi()
                if not exists:
                    results.add_build(build, pipe, score=time.time())
                    enqueue_attempt(queue, build, 1, settings, pipe)
                if pointer is not None:
                    pipe.hset(keys.pointer(pointer.repo), pointer.branch, pointer.sha)
                pipe.execute()
                return not exists
            except redis.WatchError:
                continue  # another observer created it meanwhile: look again


def enqueue_attempt(queue: Queue, build: Build, attempt: int, settings: Settings,
                    pipeline: redis.client.Pipeline | None = None) -> Job:
    return queue.enqueue_call(
        RUN_BUILD, args=(build.id, attempt), job_id=keys.job_id(build.id, attempt),
        timeout=int(settings.build_timeout) + RQ_TIMEOUT_MARGIN_S,
        result_ttl=settings.result_ttl, failure_ttl=settings.result_ttl,
        description=describe(build), pipeline=pipeline,
        at_front=attempt > 1,  # a re-dispatched build was already under way: it goes first
    )


def queue_depth(conn: redis.Redis, settings: Settings) -> int:
    return Queue(settings.queue, connection=conn).count


def workers(conn: redis.Redis) -> list[dict[str, str]]:
    """The rq workers registered in this Redis, with what each is doing."""
    found = []
    for worker in Worker.all(connection=conn):
        job_id = worker.get_current_job_id()
        found.append({"name": worker.name, "state": str(worker.get_state()),
                      "queues": ",".join(worker.queue_names()), "job": job_id or "",
                      "last_heartbeat": worker.last_heartbeat.isoformat() if worker.last_heartbeat else ""})
    return found


def current_job_connection() -> redis.Redis:
    """The Redis connection of the rq job being run (the worker's own)."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("this runs inside an rq worker")
    return job.connection


def current_runner_id() -> str:
    """The worker's name when rq knows it, else `host.pid` of the worker (the work-horse's parent)."""
    job = get_current_job()
    name = getattr(job, "worker_name", None) if job else None
    return name or f"{socket.gethostname()}.{os.getppid()}"


@dataclass(frozen=True)
class Work:
    """What an rq job of Volt's works on: an attempt of a build, or of one shard of it."""

    build: str
    attempt: int
    shard: int = -1
    shard_attempt: int = 0


def build_of(job: Job) -> Work | None:
    """The build (and shard) an rq job runs, or None for a job that is not Volt's."""
    if job.func_name == RUN_BUILD and len(job.args) == 2:
        return Work(str(job.args[0]), int(job.args[1]))
    if job.func_name == RUN_SHARD and len(job.args) == 4:
        return Work(str(job.args[0]), int(job.args[1]), int(job.args[2]), int(job.args[3]))
    return None


def enqueue_shard(queue: Queue, build: Build, attempt: int, shard: int, shard_attempt: int, settings: Settings,
                  pipeline: redis.client.Pipeline) -> Job:
    return queue.enqueue_call(
        RUN_SHARD, args=(build.id, attempt, shard, shard_attempt),
        job_id=keys.shard_job_id(build.id, attempt, shard, shard_attempt),
        timeout=int(settings.build_timeout) + RQ_TIMEOUT_MARGIN_S,
        result_ttl=settings.result_ttl, failure_ttl=settings.result_ttl,
        description=f"{describe(build)} [shard {shard}]", pipeline=pipeline, at_front=True,
    )


def start_shards(conn: redis.Redis, build_id: str, attempt: int, plans: list[list[str]], runner: str,
                 settings: Settings, rest: bool = False) -> bool:
    """Split a running build: record the plan, queue shards 1… as jobs of their own (the caller runs
    shard 0). False when `attempt` no longer owns the build."""
    queue = Queue(settings.queue, connection=conn)
    queue.get_redis_server_version()

    def decide(pipe: redis.client.Pipeline, build: Build) -> Callable[[], str] | None:
        if build.attempt != attempt or build.status is not Status.RUNNING:
            return None

        def write() -> str:
            results.start_shards(pipe, build, plans, runner, rest)
            for number in range(1, len(plans)):
                enqueue_shard(queue, build, attempt, number, 1, settings, pipe)
            return "split"
        return write

    return bool(_transaction(conn, build_id, decide))


def redispatch_shard(conn: redis.Redis, build_id: str, attempt: int, shard: int, shard_attempt: int, reason: str,
                     settings: Settings) -> str:
    """Record a shard's attempt as lost and queue its next one, or end the build `error` once the shard
    has had `max_attempts`. Returns "requeued", "gave up" or "" (nothing done)."""
    queue = Queue(settings.queue, connection=conn)
    queue.get_redis_server_version()

    def decide(pipe: redis.client.Pipeline, build: Build) -> Callable[[], str] | None:
        raw = pipe.hget(keys.build_shards(build_id), str(shard))
        record = Shard.from_json(raw.decode()) if raw else None
        if (build.attempt != attempt or build.status is not Status.RUNNING or record is None
                or record.attempt != shard_attempt or record.state is AttemptState.FINISHED):
            return None
        lost = Attempt(attempt, AttemptState.LOST, record.runner, record.started_at, results.now_iso(),
                       reason=f"shard {shard}: {reason}")

        def write() -> str:
            if shard_attempt >= settings.max_attempts:
                results.end_without_result(
                    pipe, build, Status.ERROR,
                    f"gave up after shard {shard} had {shard_attempt} attempt(s): each one's runner was lost "
                    f"(last: {reason})")
                results.record_lost(pipe, build, lost, "gave up")
                return "gave up"
            pipe.hset(keys.build_shards(build_id), str(shard), Shard(shard, shard_attempt + 1).to_json())
            enqueue_shard(queue, build, attempt, shard, shard_attempt + 1, settings, pipe)
            results.record_lost(pipe, build, lost, f"shard {shard} attempt {shard_attempt + 1} queued")
            return "requeued"
        return write

    done = _transaction(conn, build_id, decide, also_watch=(keys.build_shards(build_id),))
    if done:
        retire_job(conn, keys.shard_job_id(build_id, attempt, shard, shard_attempt),
                   f"Volt: shard attempt lost ({reason})", settings)
    return done


def waiting_job_ids(conn: redis.Redis, settings: Settings) -> set[str]:
    """Ids of the jobs waiting in Volt's queue."""
    return set(Queue(settings.queue, connection=conn).get_job_ids())


def job_states(conn: redis.Redis, job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """job id -> (rq status, worker name) for the jobs rq still has."""
    found = {}
    for job_id, job in zip(job_ids, Job.fetch_many(job_ids, connection=conn)):
        if job is not None:
            status = job.get_status(refresh=False)
            found[job_id] = (status.value if status else "", job.worker_name or "")
    return found


def _read_build(pipe: redis.client.Pipeline, build_id: str) -> Build | None:
    data = pipe.hgetall(keys.build(build_id))
    return Build.from_hash({k.decode(): v.decode() for k, v in data.items()}) if data else None


def _attempt_record(pipe: redis.client.Pipeline, build: Build) -> Attempt:
    raw = pipe.hget(keys.build_attempts(build.id), str(build.attempt))
    if raw:
        return Attempt.from_json(raw.decode())
    return Attempt(build.attempt, AttemptState.RUNNING, build.runner, build.started_at)


def _transaction(conn: redis.Redis, build_id: str,
                 decide: Callable[[redis.client.Pipeline, Build], Callable[[], str] | None],
                 also_watch: tuple[str, ...] = ()) -> str:
    """Read the build under WATCH, let `decide` return the writes to make (or None), make them
    atomically; what the writes returned, or "" when there was nothing to do."""
    with conn.pipeline() as pipe:
        for _ in range(TRANSACTION_TRIES):
            try:
                pipe.watch(keys.build(build_id), *also_watch)
                build = _read_build(pipe, build_id)
                write = decide(pipe, build) if build is not None else None
                if write is None:
                    return ""
                pipe.multi()
                done = write()
                pipe.execute()
                return done
            except redis.WatchError:
                continue  # a runner or another scheduler changed it: read again, decide again
    return ""


def redispatch(conn: redis.Redis, build_id: str, attempt: int, reason: str, settings: Settings,
               runner: str = "") -> str:
    """Record attempt `attempt` of a build as lost and queue the next one, or end the build `error`
    once it has had `max_attempts`. Does nothing unless `attempt` is still the build's current one.
    Returns "requeued", "gave up" or "" (nothing done). `conn` is a bytes connection."""
    queue = Queue(settings.queue, connection=conn)
    queue.get_redis_server_version()  # cached; rq would otherwise ask in the middle of the transaction

    def decide(pipe: redis.client.Pipeline, build: Build) -> Callable[[], str] | None:
        if build.attempt != attempt or build.status.is_final:
            return None
        prior = _attempt_record(pipe, build)
        lost = replace(prior, state=AttemptState.LOST, runner=prior.runner or runner,
                       ended_at=results.now_iso(), reason=reason)

        def write() -> str:
            if attempt >= settings.max_attempts:
                results.end_without_result(
                    pipe, build, Status.ERROR,
                    f"gave up after {attempt} attempt(s): each one's runner was lost (last: {reason})", lost)
                results.record_lost(pipe, build, lost, "gave up")
                return "gave up"
            results.requeue(pipe, build, lost)
            enqueue_attempt(queue, build, attempt + 1, settings, pipe)
            results.record_lost(pipe, build, lost, f"attempt {attempt + 1} queued")
            return "requeued"
        return write

    done = _transaction(conn, build_id, decide)
    if done:
        retire_job(conn, keys.job_id(build_id, attempt), f"Volt: attempt lost ({reason})", settings)
    return done


def cancel(conn: redis.Redis, build_id: str, settings: Settings, why: str = "cancelled on request") -> Build | None:
    """End a queued or running build `cancelled`. Its runner sees that within a second and kills
    the tests' process group. Returns the build as it was before, or None if it had already ended."""
    before: list[Build] = []

    def decide(pipe: redis.client.Pipeline, build: Build) -> Callable[[], str] | None:
        if build.status.is_final:
            return None
        record = None
        if build.status is Status.RUNNING:
            record = replace(_attempt_record(pipe, build), state=AttemptState.FINISHED, ended_at=results.now_iso(),
                             status=Status.CANCELLED.value)
        before[:] = [build]

        def write() -> str:
            results.end_without_result(pipe, build, Status.CANCELLED, why, record)
            return "cancelled"
        return write

    if not _transaction(conn, build_id, decide):
        return None
    build = before[0]
    if build.status is Status.QUEUED:
        retire_job(conn, keys.job_id(build_id, build.attempt), "Volt: build cancelled", settings)
    return build


def supersede(conn: redis.Redis, newest: Build, settings: Settings) -> list[Build]:
    """Mark `skipped` every other build of `newest`'s repository and branch still waiting in the queue
    (the observer calls this with the newest commit it enqueued): a busy pool then builds what matters.
    Running builds are left to finish."""
    older = [b for b in results.queued_builds(decoded(conn)) if b.repo == newest.repo and b.branch == newest.branch
             and b.id != newest.id]
    skipped = []
    for build in older:
        def decide(pipe: redis.client.Pipeline, current: Build) -> Callable[[], str] | None:
            if current.status is not Status.QUEUED:
                return None

            def write() -> str:
                results.end_without_result(pipe, current, Status.SKIPPED, f"superseded by {newest.short}")
                return "skipped"
            return write

        if _transaction(conn, build.id, decide):
            retire_job(conn, keys.job_id(build.id, build.attempt), f"Volt: superseded by {newest.short}", settings)
            skipped.append(build)
    return skipped


def rebuild(conn: redis.Redis, build_id: str, settings: Settings) -> Build | None:
    """Queue an ended build again, as its next attempt (the earlier ones stay in its history).
    Returns the build as it was, or None when it has not ended (it is queued or running)."""
    queue = Queue(settings.queue, connection=conn)
    queue.get_redis_server_version()
    before: list[Build] = []

    def decide(pipe: redis.client.Pipeline, build: Build) -> Callable[[], str] | None:
        if not build.status.is_final:
            return None
        before[:] = [build]

        def write() -> str:
            results.reset_for_rebuild(pipe, build)
            enqueue_attempt(queue, build, build.attempt + 1, settings, pipe)
            return "queued"
        return write

    return before[0] if _transaction(conn, build_id, decide) else None


def retire_job(conn: redis.Redis, job_id: str, why: str, settings: Settings) -> None:
    """Take a job that no longer runs a build out of rq's queue or started registry (moved to failed),
    so rq-dashboard shows what happened. Best effort: Volt's own records already say it."""
    try:
        job = Job.fetch(job_id, connection=conn)
        status = job.get_status()
        if status in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED):
            job.cancel()
        elif status == JobStatus.STARTED:
            queue = Queue(settings.queue, connection=conn)
            with conn.pipeline() as pipe:
                StartedJobRegistry(queue=queue).remove_executions(job, pipeline=pipe)
                job.set_status(JobStatus.FAILED, pipeline=pipe)
                FailedJobRegistry(queue=queue).add(job, ttl=settings.result_ttl, exc_string=why, pipeline=pipe)
                pipe.execute()
    except (NoSuchJobError, InvalidJobOperation):
        pass
    except redis.RedisError as exc:
        log.warning("could not retire rq job %s: %s", job_id, exc)
