"""Where Volt meets rq: enqueueing an attempt of a build or of a shard, taking jobs that no longer run
anything out of rq's queue, deleting the jobs of pruned builds, and reading queue and job state.

The store (voltci/store) calls this inside its transactions: an enqueue is written in the same
Redis transaction as the build record that it runs, so either both are written or neither. The
store's client decodes replies to text; rq needs a client that does not, and that client stays in
here (worker.py, the runner process, is the other module that uses rq).
"""

from __future__ import annotations

import logging
import os
import socket
import weakref
from dataclasses import dataclass

import redis
from rq import Queue, Worker, get_current_job
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.results import Result

from voltci import keys
from voltci.config import Settings
from voltci.models import Build

log = logging.getLogger("volt.queue")

RUN_BUILD = "voltci.runner.run_build"
RUN_SHARD = "voltci.runner.run_shard"
# rq's own job timeout is only a backstop behind the runner's build timeout.
RQ_TIMEOUT_MARGIN_S = 300

_rq_clients: "weakref.WeakKeyDictionary[redis.ConnectionPool, redis.Redis]" = weakref.WeakKeyDictionary()


def _rq(client: redis.Redis) -> redis.Redis:
    """rq's bytes client on the same server as the store's `client` (one per client, reused)."""
    pool = client.connection_pool
    if not pool.connection_kwargs.get("decode_responses"):
        return client
    found = _rq_clients.get(pool)
    if found is None:
        kwargs = {**pool.connection_kwargs, "decode_responses": False}
        found = redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))
        _rq_clients[pool] = found
    return found


def _queue(client: redis.Redis, settings: Settings) -> Queue:
    queue = Queue(settings.queue, connection=_rq(client))
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


def enqueue_shard(client: redis.Redis, build: Build, attempt: int, shard: int, shard_attempt: int,
                  settings: Settings, pipeline: redis.client.Pipeline | None = None) -> Job:
    return _queue(client, settings).enqueue_call(
        RUN_SHARD, args=(build.id, attempt, shard, shard_attempt),
        job_id=keys.shard_job_id(build.id, attempt, shard, shard_attempt),
        timeout=int(settings.build_timeout) + RQ_TIMEOUT_MARGIN_S,
        result_ttl=settings.result_ttl, failure_ttl=settings.result_ttl,
        description=f"{describe(build)} [shard {shard}]", pipeline=pipeline, at_front=True,
    )


def queue_depth(client: redis.Redis, settings: Settings) -> int:
    return Queue(settings.queue, connection=_rq(client)).count


def waiting_job_ids(client: redis.Redis, settings: Settings) -> set[str]:
    """Ids of the jobs waiting in Volt's queue."""
    return set(Queue(settings.queue, connection=_rq(client)).get_job_ids())


def job_states(client: redis.Redis, job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """job id -> (rq status, worker name) for the jobs rq still has."""
    found = {}
    for job_id, job in zip(job_ids, Job.fetch_many(job_ids, connection=_rq(client))):
        if job is not None:
            status = job.get_status(refresh=False)
            found[job_id] = (status.value if status else "", job.worker_name or "")
    return found


def workers(client: redis.Redis) -> list[dict[str, str]]:
    """The rq workers registered in this Redis, with what each is doing."""
    found = []
    for worker in Worker.all(connection=_rq(client)):
        job_id = worker.get_current_job_id()
        found.append({"name": worker.name, "state": str(worker.get_state()),
                      "queues": ",".join(worker.queue_names()), "job": job_id or "",
                      "last_heartbeat": worker.last_heartbeat.isoformat() if worker.last_heartbeat else ""})
    return found


def retire_job(client: redis.Redis, job_id: str, why: str, settings: Settings) -> None:
    """Take a job that no longer runs a build out of rq's queue or started registry (moved to failed),
    so rq-dashboard shows what happened. Best effort: Volt's own records already say it."""
    conn = _rq(client)
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


def delete_jobs(client: redis.Redis, job_ids: list[str], pipeline: redis.client.Pipeline) -> None:
    """Queue the deletion of these jobs' every record in rq (job, results, registries, queue) on
    `pipeline` (a pruned build leaves nothing behind). Only deletions: a full Redis allows them."""
    conn = _rq(client)
    for job_id, job in zip(job_ids, Job.fetch_many(job_ids, connection=conn)):
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
