"""Where Volt meets rq: enqueueing an attempt of a build, of a matrix leg or of a shard, taking jobs that no longer run
anything out of rq's queue, deleting the jobs of pruned builds, and reading queue and job state.

The store (voltci/store) calls this inside its transactions: an enqueue is written in the same
Redis transaction as the build record that it runs, so either both are written or neither. The
store's client decodes replies to text; rq needs a client that does not, and that client stays in
here (worker.py, the runner process, is the other module that uses rq).

Volt's rq jobs are JSON (JOB_SERIALIZER), never pickle: whoever can write to Redis could otherwise
hand every runner a pickle that runs code as it loads. `refusal` says which jobs a runner may run:
only Volt's three job functions, with the arguments Volt gives them.

Matrix legs are routed by rq itself: a leg on Python 3.12 is queued on `<queue>-py3.12`, and a runner
listens on the queue of each interpreter it has (before the main queue: a leg's build is already
under way), so no runner ever takes a leg it cannot run. The shards of a leg go on the leg's queue.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import weakref
from datetime import UTC, datetime

import redis
from rq import Queue, get_current_job
from rq.exceptions import DeserializationError, InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.results import Result
from rq.serializers import JSONSerializer

from voltci import keys
from voltci.config import Settings
from voltci.connection import sibling
from voltci.models import Build, Work

log = logging.getLogger("volt.queue")

# The names rq stores in every job, so they outlive an upgrade: the runner package hands out
# runner/jobs.py's functions under them.
RUN_BUILD = "voltci.runner.run_build"
RUN_SHARD = "voltci.runner.run_shard"
RUN_LEG = "voltci.runner.run_leg"
# The one serializer of Volt's rq jobs: JSON, so reading a job can never run code.
JOB_SERIALIZER = JSONSerializer
# Each job function's arguments, by type: (build id, attempt), (build or leg id, attempt, shard, shard
# attempt) and (leg id, leg attempt).
JOB_ARGUMENTS: dict[str, tuple[type, ...]] = {RUN_BUILD: (str, int), RUN_SHARD: (str, int, int, int),
                                              RUN_LEG: (str, int)}
_JOB_ID_PART = re.compile(r"[A-Za-z0-9_-]{1,300}")
# rq's own job timeout is only a backstop behind the runner's build timeout.
RQ_TIMEOUT_MARGIN_S = 300

_rq_clients: weakref.WeakKeyDictionary[redis.ConnectionPool, redis.Redis] = weakref.WeakKeyDictionary()


def _rq(client: redis.Redis) -> redis.Redis:
    """rq's bytes client on the same server as the store's `client` (one per client, reused)."""
    pool = client.connection_pool
    if not pool.connection_kwargs.get("decode_responses"):
        return client
    found = _rq_clients.get(pool)
    if found is None:
        found = sibling(client, decode=False)
        _rq_clients[pool] = found
    return found


def volt_queue(conn: redis.Redis, name: str) -> Queue:
    """Volt's rq queue `name`, reading and writing jobs as JSON (`conn` is a bytes connection)."""
    return Queue(name, connection=conn, serializer=JOB_SERIALIZER)


def leg_queue(settings: Settings, python: str) -> str:
    """The rq queue of matrix legs (and their shards) on Python `python`: runners that have it listen on it."""
    return f"{settings.queue}-py{python}"


def unit_queue(settings: Settings, build: Build) -> str:
    """The queue of a build's jobs, or of a matrix leg's."""
    return leg_queue(settings, build.python) if build.is_leg else settings.queue


def _queue(client: redis.Redis, settings: Settings, name: str | None = None) -> Queue:
    queue = volt_queue(_rq(client), name or settings.queue)
    queue.get_redis_server_version()  # cached; rq would otherwise ask in the middle of a transaction
    return queue


def describe(build: Build) -> str:
    """What rq-dashboard shows for a build's job: repo, short sha, subject."""
    subject = build.subject if len(build.subject) <= 72 else build.subject[:71] + "…"
    return f"{build.repo} {build.commit[:10]} {subject}".strip()


def enqueue_attempt(client: redis.Redis, build: Build, attempt: int, settings: Settings,
                    pipeline: redis.client.Pipeline | None = None) -> Job:
    return _queue(client, settings).enqueue_call(
        RUN_BUILD, args=(build.id, attempt), job_id=keys.job_id(build.id, attempt),
        timeout=int(settings.build_timeout) + RQ_TIMEOUT_MARGIN_S,
        result_ttl=settings.result_ttl, failure_ttl=settings.result_ttl,
        description=describe(build), pipeline=pipeline,
        at_front=attempt > 1,  # a re-dispatched build was already under way: it goes first
    )


def enqueue_leg(client: redis.Redis, leg: Build, attempt: int, settings: Settings,
                pipeline: redis.client.Pipeline | None = None) -> Job:
    """An attempt of a matrix leg, on the queue of its interpreter (a re-dispatched one at its front)."""
    return _queue(client, settings, unit_queue(settings, leg)).enqueue_call(
        RUN_LEG, args=(leg.id, attempt), job_id=keys.job_id(leg.id, attempt),
        timeout=int(settings.build_timeout) + RQ_TIMEOUT_MARGIN_S,
        result_ttl=settings.result_ttl, failure_ttl=settings.result_ttl,
        description=f"{describe(leg)} [{leg.leg}]", pipeline=pipeline, at_front=attempt > 1,
    )


def enqueue_shard(client: redis.Redis, build: Build, attempt: int, shard: int, shard_attempt: int,
                  settings: Settings, pipeline: redis.client.Pipeline | None = None) -> Job:
    return _queue(client, settings, unit_queue(settings, build)).enqueue_call(
        RUN_SHARD, args=(build.id, attempt, shard, shard_attempt),
        job_id=keys.shard_job_id(build.id, attempt, shard, shard_attempt),
        timeout=int(settings.build_timeout) + RQ_TIMEOUT_MARGIN_S,
        result_ttl=settings.result_ttl, failure_ttl=settings.result_ttl,
        description=f"{describe(build)} [shard {shard}]", pipeline=pipeline, at_front=True,
    )


def queue_depth(client: redis.Redis, settings: Settings) -> int:
    return volt_queue(_rq(client), settings.queue).count


def queue_key(settings: Settings) -> str:
    """The Redis list of rq's queue, which store/queue.py keeps in dispatch order (rq pops its front)."""
    return Queue.redis_queue_namespace_prefix + settings.queue


def waiting_in_order(client: redis.Redis, settings: Settings, limit: int) -> list[str]:
    """Ids of the first `limit` jobs waiting in Volt's queue, in the order runners take them."""
    return [job_id.decode() if isinstance(job_id, bytes) else job_id
            for job_id in client.lrange(queue_key(settings), 0, limit - 1)]


def job_place(client: redis.Redis, settings: Settings, job_id: str, scan: int = 10_000) -> int | None:
    """Where job `job_id` stands in Volt's queue (1: taken next), looked for among the first `scan`."""
    found = client.execute_command("LPOS", queue_key(settings), job_id, "MAXLEN", scan)
    return int(found) + 1 if found is not None else None


def waiting_job_ids(client: redis.Redis, settings: Settings, queues: list[str] | None = None) -> set[str]:
    """Ids of the jobs waiting in Volt's queue (or in the queues named)."""
    return {job_id for name in queues or [settings.queue] for job_id in volt_queue(_rq(client), name).get_job_ids()}


def job_states(client: redis.Redis, job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """job id -> (rq status, worker name) for the jobs rq still has."""
    found = {}
    jobs = Job.fetch_many(job_ids, connection=_rq(client), serializer=JOB_SERIALIZER)
    for job_id, job in zip(job_ids, jobs, strict=True):
        if job is not None:
            status = job.get_status(refresh=False)
            found[job_id] = (status.value if status else "", job.worker_name or "")
    return found


def retire_job(client: redis.Redis, job_id: str, why: str, settings: Settings) -> None:
    """Take a job that no longer runs a build out of rq's queue or started registry (moved to failed),
    so rq-dashboard shows what happened. Best effort: Volt's own records already say it."""
    conn = _rq(client)
    try:
        job = Job.fetch(job_id, connection=conn, serializer=JOB_SERIALIZER)
        status = job.get_status()
        if status in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED):
            job.cancel()
        elif status == JobStatus.STARTED:
            queue = volt_queue(conn, job.origin or settings.queue)
            with conn.pipeline() as pipe:
                StartedJobRegistry(queue=queue).remove_executions(job, pipeline=pipe)
                job.set_status(JobStatus.FAILED, pipeline=pipe)
                FailedJobRegistry(queue=queue).add(job, ttl=settings.result_ttl, exc_string=why, pipeline=pipe)
                pipe.execute()
    except (NoSuchJobError, InvalidJobOperation):
        pass
    except redis.RedisError as exc:
        log.warning("could not retire rq job %s: %s", job_id, exc)


def delete_jobs(client: redis.Redis, job_ids: list[str], pipeline: redis.client.Pipeline) -> None:
    """Queue the deletion of these jobs' every record in rq (job, results, registries, queue) on
    `pipeline` (a pruned build leaves nothing behind). Only deletions: a full Redis allows them."""
    conn = _rq(client)
    for job_id, job in zip(job_ids, Job.fetch_many(job_ids, connection=conn, serializer=JOB_SERIALIZER), strict=False):
        if job is not None:
            job.delete(pipeline=pipeline, remove_from_queue=True)
        else:
            pipeline.delete(Job.key_for(job_id), Job.dependents_key_for(job_id))
        pipeline.delete(Result.get_key(job_id))


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


def work_of(job: Job) -> Work | None:
    """What an rq job works on (an attempt of a build, or of one shard of it), or None for a job that
    is not Volt's."""
    if refusal(job) is not None:
        return None
    return Work(*job.args)


REFUSED = "refused by Volt: "
MAX_SHOWN = 120
_CALLBACKS = ("_success_callback_name", "_failure_callback_name", "_stopped_callback_name")


def refusal(job: Job) -> str | None:
    """Why a runner must not run `job`, in one line, or None for one of Volt's own jobs.

    It reads the job as data only: nothing the job names is imported or called. Anyone who can
    write to Redis can push a job; only Volt's three job functions, with the arguments Volt gives
    them, may run on a runner host."""
    try:
        func, instance, args, kwargs = job.func_name, job.instance, job.args, job.kwargs
    except DeserializationError:
        return REFUSED + "its data is not JSON (Volt's jobs are JSON; a pickle could run code as it is read)"
    if not isinstance(func, str) or func not in JOB_ARGUMENTS:
        return REFUSED + f"it names {_shown(func)}, not one of Volt's job functions ({', '.join(JOB_ARGUMENTS)})"
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
    for value, kind in zip(args, types, strict=True):
        if type(value) is not kind:
            return False
        if isinstance(value, str) and not _JOB_ID_PART.fullmatch(value):
            return False
        if isinstance(value, int) and not 0 <= value <= 1_000_000:
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
        job.ended_at = job.ended_at or datetime.now(UTC)
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

