"""Where builds meet rq: enqueueing, re-dispatching and cancelling builds, and queue and job stats.

(worker.py, the runner process, is the other module that imports rq.)

Volt's rq jobs are JSON (JOB_SERIALIZER), never pickle: whoever can write to Redis could otherwise
hand every runner a pickle that runs code as it loads. `refusal` says which jobs a runner may run:
only Volt's two job functions, with the arguments Volt gives them.

A build is enqueued in one Redis transaction with its record and, when given, the observer's
pointer: either all of them are written or none, and a build that already exists is never
enqueued again (two observers, or one restarted, cannot build a commit twice). Re-dispatching a
lost attempt and cancelling are transactions on the build record too, so they cannot race a
runner that starts or ends the same attempt.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Callable

import redis
from rq import Queue, Worker, get_current_job
from rq.exceptions import DeserializationError, InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.results import Result
from rq.serializers import JSONSerializer

from voltci import keys, results
from voltci.config import Settings
from voltci.connection import decoded
from voltci.models import Attempt, AttemptState, Build, Shard, Status

log = logging.getLogger("volt.queue")
TRANSACTION_TRIES = 10

RUN_BUILD = "voltci.runner.run_build"
RUN_SHARD = "voltci.runner.run_shard"
# The one serializer of Volt's rq jobs: JSON, so reading a job can never run code.
JOB_SERIALIZER = JSONSerializer
# Each job function's arguments, by type: (build id, attempt) and (build id, attempt, shard, shard attempt).
JOB_ARGUMENTS: dict[str, tuple[type, ...]] = {RUN_BUILD: (str, int), RUN_SHARD: (str, int, int, int)}
_JOB_ID_PART = re.compile(r"[A-Za-z0-9_-]{1,300}")
# rq's own job timeout is only a backstop behind the runner's build timeout.
RQ_TIMEOUT_MARGIN_S = 300


@dataclass(frozen=True)
class PointerUpdate:
    repo: str
    branch: str
    sha: str


def volt_queue(conn: redis.Redis, name: str) -> Queue:
    """Volt's rq queue `name`, reading and writing jobs as JSON (`conn` is a bytes connection)."""
    return Queue(name, connection=conn, serializer=JOB_SERIALIZER)


def describe(build: Build) -> str:
    """What rq-dashboard shows for a build's job: repo, short sha, subject."""
    subject = build.subject if len(build.subject) <= 72 else build.subject[:71] + "…"
    return f"{build.repo} {build.commit[:10]} {subject}".strip()


def submit_build(conn: redis.Redis, build: Build, settings: Settings, pointer: PointerUpdate | None = None) -> bool:
    """Record and enqueue `build` (and move the pointer) atomically. False if the build already existed.

    `conn` is a bytes connection, as rq needs.
    """
    queue = volt_queue(conn, settings.queue)
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
    return volt_queue(conn, settings.queue).count


def workers(conn: redis.Redis) -> list[dict[str, str]]:
    """The rq workers registered in this Redis, with what each is doing."""
    found = []
    for worker in Worker.all(connection=conn, serializer=JOB_SERIALIZER):
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
    if refusal(job) is not None:
        return None
    return Work(*job.args)


REFUSED = "refused by Volt: "
MAX_SHOWN = 120
_CALLBACKS = ("_success_callback_name", "_failure_callback_name", "_stopped_callback_name")


def refusal(job: Job) -> str | None:
    """Why a runner must not run `job`, in one line, or None for one of Volt's own jobs.

    It reads the job as data only: nothing the job names is imported or called. Anyone who can
    write to Redis can push a job; only Volt's two job functions, with the arguments Volt gives
    them, may run on a runner host."""
    try:
        func, instance, args, kwargs = job.func_name, job.instance, job.args, job.kwargs
    except DeserializationError:
        return REFUSED + "its data is not JSON (Volt's jobs are JSON; a pickle could run code as it is read)"
    if not isinstance(func, str) or func not in JOB_ARGUMENTS:
        return REFUSED + f"it names {_shown(func)}, not one of Volt's job functions ({RUN_BUILD}, {RUN_SHARD})"
    if instance is not None or not isinstance(kwargs, dict) or kwargs:
        return REFUSED + f"{func} takes positional arguments only, not an instance or keyword arguments"
    if any(getattr(job, name, None) for name in _CALLBACKS):
        return REFUSED + "it names callbacks, and Volt's jobs have none"
    if not _arguments_fit(args, JOB_ARGUMENTS[func]):
        return REFUSED + f"{func} takes {_signature(JOB_ARGUMENTS[func])}, not {_shown(args)}"
    return None


def _arguments_fit(args: object, types: tuple[type, ...]) -> bool:
    """A build id (rq job id characters) and small non-negative integers, exactly as Volt enqueues them."""
    if not isinstance(args, (list, tuple)) or len(args) != len(types):
        return False
    for value, kind in zip(args, types):
        if type(value) is not kind:  # noqa: E721 -- bool is an int, and not an attempt number
            return False
        if kind is str and not _JOB_ID_PART.fullmatch(value):
            return False
        if kind is int and not 0 <= value <= 1_000_000:
            return False
    return True


def _signature(types: tuple[type, ...]) -> str:
    return "(" + ", ".join(kind.__name__ for kind in types) + ")"


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 1] + "…"


def record_refused(conn: redis.Redis, job: Job, queue_name: str, reason: str, ttl: int, worker_name: str) -> None:
    """Take a job a runner refused out of rq's intermediate queue and record it failed, with the
    reason, in rq's failed registry (rq-dashboard shows it). Nothing of the job runs."""
    queue = volt_queue(conn, queue_name)
    with conn.pipeline() as pipe:
        pipe.lrem(queue.intermediate_queue_key, 1, job.id)
        job.ended_at = job.ended_at or datetime.now(timezone.utc)
        job.set_status(JobStatus.FAILED, pipeline=pipe)
        FailedJobRegistry(queue=queue).add(job, ttl=ttl, exc_string=reason, pipeline=pipe)
        Result.create_failure(job, ttl, exc_string=reason, worker_name=worker_name, pipeline=pipe)
        pipe.execute()


def unreadable_job(conn: redis.Redis, job_id: str, queue_name: str) -> Job:
    """A stand-in for a job whose record rq cannot even read: the record is replaced by one that
    says so, so the failed registry (and rq-dashboard) can show it."""
    conn.delete(Job.key_for(job_id))
    job = Job(job_id, connection=conn, serializer=JOB_SERIALIZER)
    job.data = JOB_SERIALIZER.dumps(None)  # reads back as "not Volt's JSON", never as a call
    job.origin, job.description = queue_name, "an unreadable job"
    return job


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
    queue = volt_queue(conn, settings.queue)
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
    queue = volt_queue(conn, settings.queue)
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
    return set(volt_queue(conn, settings.queue).get_job_ids())


def job_states(conn: redis.Redis, job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """job id -> (rq status, worker name) for the jobs rq still has."""
    found = {}
    for job_id, job in zip(job_ids, Job.fetch_many(job_ids, connection=conn, serializer=JOB_SERIALIZER)):
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
    queue = volt_queue(conn, settings.queue)
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
    queue = volt_queue(conn, settings.queue)
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
        job = Job.fetch(job_id, connection=conn, serializer=JOB_SERIALIZER)
        status = job.get_status()
        if status in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED):
            job.cancel()
        elif status == JobStatus.STARTED:
            queue = volt_queue(conn, settings.queue)
            with conn.pipeline() as pipe:
                StartedJobRegistry(queue=queue).remove_executions(job, pipeline=pipe)
                job.set_status(JobStatus.FAILED, pipeline=pipe)
                FailedJobRegistry(queue=queue).add(job, ttl=settings.result_ttl, exc_string=why, pipeline=pipe)
                pipe.execute()
    except (NoSuchJobError, InvalidJobOperation):
        pass
    except redis.RedisError as exc:
        log.warning("could not retire rq job %s: %s", job_id, exc)
