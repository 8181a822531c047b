"""The runner process: rq's Worker plus what Volt needs of a runner.

- a heartbeat key, refreshed from a thread every `heartbeat` seconds whether the runner is idle or
  busy, saying which build and attempt it works on (see heartbeat.py);
- riding out a Redis restart: rq's own calls to Redis between jobs and while a job runs are retried
  instead of ending the worker, and reconnecting backs off up to a few seconds;
- a bound on that: a runner that cannot reach Redis for `redis_outage_limit` seconds stops its build
  (it has been given to another runner by then), says so in one line and exits with status 75, for
  its supervisor (systemd, `volt up`) to start it again;
- reaping the test processes that a killed runner on this host left behind;
- saying at start how builds are sandboxed and limited, and refusing to start when this host cannot
  sandbox them (unless the runner is started with `sandbox = false`);
- listening, before Volt's queue, on the matrix-leg queue of each interpreter this host has
  (interpreters.py), and naming them in its heartbeat: rq then hands a leg only to a runner that can
  run it, and the scheduler knows which interpreters some live runner has.

Start it as `volt worker`, or as `rq worker -w voltci.worker.VoltWorker --url URL volt`. A plain
`rq worker -S rq.serializers.JSONSerializer` also runs builds correctly (the build then keeps the
runner's key alive itself), but it runs whatever function a job names.

A VoltWorker runs nothing but builds: it reads jobs as JSON whatever serializer it is given (rq's
CLI defaults to pickle, which runs code as it loads), and refuses — records failed, with the
reason, without forking — every job that is not a call of Volt's own job functions
(jobqueue.refusal). Anyone who can write to Redis can push a job; only Volt's code decides.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import redis
from rq import Queue, Worker
from rq.job import Job

from voltci import jobqueue
from voltci.config import Settings, load_settings
from voltci.connection import warn_if_unprotected
from voltci.errors import RedisLost
from voltci.heartbeat import WORKER_BEATS, Heartbeat
from voltci.models import RunnerBeat
from voltci.outage import Outage
from voltci.runner import jobs  # noqa: F401  imported once here, not again in each work-horse rq forks
from voltci.runner.interpreters import interpreters
from voltci.runner.limits import Limits
from voltci.runner.procs import reap_orphaned_tests
from voltci.runner.sandbox import SandboxUnavailable, describe_network, describe_runner, overlays_work
from voltci.store import Store

REAP_EVERY_S = 5.0
# Redis away, or full (maxmemory with noeviction: it refuses writes until memory is freed)
_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.OutOfMemoryError)

class VoltWorker(Worker):
    """An rq worker that heartbeats, rides out Redis restarts within a bound, and reaps orphans."""

    max_connection_wait_time = 5.0  # rq's reconnect backoff would otherwise grow to a minute

    def __init__(self, queues: Any, *args: Any, settings: Settings | None = None, **kwargs: Any):
        """Whatever serializer rq's CLI passes (pickle by default), jobs are read as JSON: the queues
        are made again by name, with Volt's serializer."""
        kwargs["serializer"] = jobqueue.JOB_SERIALIZER
        given = queues if isinstance(queues, (list, tuple)) else [queues]
        if kwargs.get("connection") is None:
            kwargs["connection"] = next((q.connection for q in given if isinstance(q, Queue)), None)
        self.volt_settings = settings or load_settings()
        self.pythons = interpreters(self.volt_settings.pythons)
        super().__init__(self._with_leg_queues([q.name if isinstance(q, Queue) else q for q in given]),
                         *args, **kwargs)
        if kwargs.get("prepare_for_work", True):  # then rq has spoken to Redis: it took the connection
            warn_if_unprotected(self.connection)
        self._heartbeat: Heartbeat | None = None
        self._last_reap = 0.0
        self._full = Outage(self.log, f"Worker {self.name}")

    def _with_leg_queues(self, names: list[str]) -> list[str]:
        """Volt's queue, with before it the queue of the matrix legs of each interpreter this host has:
        rq routes each leg to a runner that can run it, and a leg's build is already under way."""
        main = self.volt_settings.queue
        if main not in names:
            return names
        legs = [jobqueue.leg_queue(self.volt_settings, python) for python in reversed(self.pythons)]
        return [*(name for name in legs if name not in names), *names]

    def work(self, *args: Any, **kwargs: Any) -> bool:
        os.environ[WORKER_BEATS] = "1"  # the work-horses it forks leave the heartbeat to its thread
        settings = self.volt_settings
        self._say_how_builds_are_walled_in()
        self._reap()
        beat = RunnerBeat(name=self.name, queues=self.queue_names(), pythons=list(self.pythons))
        self._heartbeat = Heartbeat(Store(self.connection, settings), beat,
                                    settings.heartbeat, settings.heartbeat_ttl,
                                    on_outage=self._on_outage, on_tick=self._reap_now_and_then).start()
        try:
            return super().work(*args, **kwargs)
        finally:
            self._heartbeat.stop()

    def _say_how_builds_are_walled_in(self) -> None:
        """One line at start: how builds are sandboxed and limited here; or, when this host cannot
        sandbox them and the runner was not told to build without, why not, and exit."""
        settings = self.volt_settings
        try:
            said = describe_runner(settings.sandbox, Limits.of_runner(settings.build_memory, settings.build_processes),
                                   settings.build_disk)
        except SandboxUnavailable as exc:
            print(f"volt worker {self.name}: refusing to run builds: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(exc.exit_code) from None
        print(f"volt worker {self.name}: {said}", file=sys.stderr, flush=True)
        print(f"volt worker {self.name}: network: "
              f"{describe_network(settings.sandbox, settings.build_network, settings.build_network_allow)}",
              file=sys.stderr, flush=True)
        if settings.sandbox:  # tried here once, for every work-horse it forks
            scopes = "an overlay of the protected branches' environment" if overlays_work() else \
                "an environment of its own (this host's bwrap or kernel mounts no overlay)"
            print(f"volt worker {self.name}: trust scopes: each other branch's builds get {scopes}",
                  file=sys.stderr, flush=True)
        print(f"volt worker {self.name}: matrix legs on python {', '.join(self.pythons)}", file=sys.stderr, flush=True)

    def execute_job(self, job: Job, queue: Queue) -> None:
        reason = jobqueue.refusal(job)
        if reason is not None:
            self._refuse(job, queue.name, reason)
            return
        work = jobqueue.work_of(job)
        if self._heartbeat is not None and work is not None:
            self._heartbeat.set_work(work)
        try:
            super().execute_job(job, queue)
        except _REDIS_DOWN as exc:
            # rq could not record the job's end; the build's own result is stored by the job itself.
            self.log.warning("Worker %s: could not record the end of job %s in rq (%s)", self.name, job.id, exc)
            if self.horse_pid:
                self.wait_for_horse()
        finally:
            if self._heartbeat is not None:
                self._heartbeat.clear_work()

    def _refuse(self, job: Job, queue_name: str, reason: str) -> None:
        """Record a job that is not Volt's as failed, with the reason; nothing of it runs."""
        self.log.warning("Worker %s: job %s %s", self.name, job.id, reason)
        jobqueue.record_refused(self.connection, job, queue_name, reason, self.volt_settings.result_ttl, self.name)

    def register_birth(self) -> None:
        """A full Redis refuses a runner's registration: say so once and try again, for up to
        `redis_outage_limit` (then the one line of `volt worker`, for its supervisor to start it again)."""
        deadline = time.monotonic() + self.volt_settings.redis_outage_limit
        delay = 1.0
        while True:
            try:
                super().register_birth()
                self._full.ok()
                return
            except redis.exceptions.OutOfMemoryError as exc:
                if time.monotonic() + delay > deadline:
                    raise
                self._full.failed(exc)
                time.sleep(delay)
                delay = min(delay * 2, self.max_connection_wait_time)

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        """rq retries a refused connection here but ends the worker on a socket timeout (a network
        cut rather than a restart); retry that too. The heartbeat thread bounds the outage.

        rq also ends the worker when a job's record cannot be read at all (a forged one): refuse
        that job instead and take the next."""
        delay = 1.0
        while True:
            try:
                found = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
                self._full.ok()
                return found
            except redis.exceptions.OutOfMemoryError as exc:
                self._full.failed(exc)  # once until Redis has room: the job stays in the queue meanwhile
            except redis.TimeoutError as exc:
                self.log.warning("Worker %s: Redis timed out (%s); retrying in %g s", self.name, exc, delay)
            except Exception as exc:
                job_id, queue = getattr(exc, "job_id", None), getattr(exc, "queue", None)
                if job_id is None or queue is None or isinstance(exc, redis.RedisError):
                    raise
                reason = f"refused by Volt: its record cannot be read ({type(exc).__name__})"
                self._refuse(jobqueue.unreadable_job(self.connection, job_id, queue.name), queue.name, reason)
                continue
            time.sleep(delay)
            delay = min(delay * 2, self.max_connection_wait_time)

    # rq's calls to Redis outside its dequeue loop end the worker on a connection error; these
    # tolerate one, so a Redis restart costs a log line instead of a runner.

    def _tolerating_outage(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except redis.exceptions.OutOfMemoryError as exc:
            self._full.failed(exc)
        except _REDIS_DOWN as exc:
            self.log.warning("Worker %s: %s skipped, Redis unavailable (%s)", self.name, what, exc)
        return None

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        """rq's start (its birth, its pubsub) talks to Redis after the runner connected: a failover or
        restart then is waited out, for up to `redis_outage_limit`, as the work loop waits one out."""
        deadline = time.monotonic() + self.volt_settings.redis_outage_limit
        while True:
            try:
                super().bootstrap(*args, **kwargs)
                return
            except _REDIS_DOWN as exc:
                if time.monotonic() >= deadline:
                    raise
                self.log.warning("Worker %s: starting: Redis unavailable (%s); retrying", self.name, exc)
                time.sleep(1.0)
                try:  # a birth half written: rq would refuse a name that looks alive
                    self.connection.delete(self.key)
                except _REDIS_DOWN:
                    pass

    def heartbeat(self, *args: Any, **kwargs: Any) -> None:
        self._tolerating_outage("rq heartbeat", lambda: super(VoltWorker, self).heartbeat(*args, **kwargs))

    def maintain_heartbeats(self, job: Job) -> None:
        self._tolerating_outage("rq job heartbeat", lambda: super(VoltWorker, self).maintain_heartbeats(job))

    def set_current_job_working_time(self, *args: Any, **kwargs: Any) -> None:
        self._tolerating_outage("working time",
                                lambda: super(VoltWorker, self).set_current_job_working_time(*args, **kwargs))

    def set_state(self, *args: Any, **kwargs: Any) -> None:
        self._tolerating_outage("state", lambda: super(VoltWorker, self).set_state(*args, **kwargs))

    def check_for_suspension(self, burst: bool) -> None:
        self._tolerating_outage("suspension check", lambda: super(VoltWorker, self).check_for_suspension(burst))

    def run_maintenance_tasks(self) -> None:
        self._tolerating_outage("maintenance", lambda: super(VoltWorker, self).run_maintenance_tasks())

    def _on_outage(self, out_for: float) -> None:
        limit = self.volt_settings.redis_outage_limit
        if out_for < limit:
            return
        print(f"volt worker {self.name}: cannot reach Redis for {out_for:.0f} s (redis_outage_limit {limit:g} s);"
              " stopping its build and exiting", file=sys.stderr, flush=True)
        horse = self.horse_pid
        if horse:
            try:
                os.killpg(horse, signal.SIGKILL)  # rq's work-horse leads a process group of its own
            except ProcessLookupError:
                pass
            try:
                os.waitpid(horse, 0)
            except ChildProcessError:
                pass
        self._reap()
        os._exit(RedisLost.exit_code)

    def _reap_now_and_then(self) -> None:
        if time.monotonic() - self._last_reap >= REAP_EVERY_S:
            self._reap()

    def _reap(self) -> None:
        self._last_reap = time.monotonic()
        killed = reap_orphaned_tests()
        if killed:
            self.log.warning("Worker %s: killed %d test process(es) left behind by a dead runner", self.name, killed)


def make_worker(conn: redis.Redis, settings: Settings, name: str | None = None) -> VoltWorker:
    name = name or f"{socket.gethostname()}.{os.getpid()}"
    return VoltWorker([settings.queue], connection=conn, name=name, settings=settings)
