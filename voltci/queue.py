"""The only module that speaks rq: enqueueing builds, the job a worker runs, queue and worker stats.

A build is enqueued in one Redis transaction with its record and, when given, the observer's
pointer: either all of them are written or none, and a build that already exists is never
enqueued again (two observers, or one restarted, cannot build a commit twice).
"""

from __future__ import annotations

import socket
import os
import time
from dataclasses import dataclass

import redis
from rq import Queue, Worker, get_current_job
from rq.job import Job

from voltci import keys, results
from voltci.config import Settings
from voltci.models import Build

RUN_BUILD = "voltci.runner.run_build"
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


def make_worker(conn: redis.Redis, settings: Settings, name: str | None = None) -> Worker:
    name = name or f"{socket.gethostname()}.{os.getpid()}"
    return Worker([Queue(settings.queue, connection=conn)], connection=conn, name=name)
