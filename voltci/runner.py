"""The function an rq worker runs for one attempt of a build: workspace → steps → results.

Any `rq worker` (or `volt worker`) listening on Volt's queue runs `run_build`. It reads the
runner host's settings (environment and config file), claims the attempt in the build record,
checks the commit out from this host's mirror cache, runs the commit's steps (steps.py: its
.volt.toml, environment, setup and tests), streams their output to Redis, and stores the outcome
once. An attempt that is no longer the build's current one (cancelled, or re-dispatched
elsewhere) stops its tests and stores nothing.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from pathlib import Path
from typing import Any, Callable, TypeVar

import redis

from voltci import keys, results
from voltci.config import Settings, load_settings
from voltci.connection import decoded
from voltci.errors import VoltError
from voltci.heartbeat import Heartbeat, RunnerBeat
from voltci.models import Counts, RunOutcome, Status
from voltci.queue import current_job_connection, current_runner_id
from voltci.logstream import LogPump
from voltci.steps import run_steps
from voltci.testrun import OUTPUT_FILE, RESULTS_FILE, LineCounter
from voltci.worker import heartbeat_in_parent
from voltci.workspace import checkout

T = TypeVar("T")

log = logging.getLogger(__name__)
OWNERSHIP_CHECK_INTERVAL_S = 1.0
STORE_RETRY_S = 120.0
STALE_MARGIN_S = 600.0


def run_build(build_id: str, attempt: int) -> dict[str, Any]:
    """rq job entry point: run attempt `attempt` of build `build_id` and store its result."""
    conn = decoded(current_job_connection())
    settings, runner = load_settings(), current_runner_id()
    beat = None
    if not heartbeat_in_parent():
        # A plain `rq worker` has no heartbeat of its own: the build keeps the runner's key alive.
        beat = Heartbeat(conn, RunnerBeat(name=runner, pid=os.getppid()), settings.heartbeat,
                         settings.heartbeat_ttl).start()
        beat.set_work(build_id, attempt)
    try:
        return execute(conn, build_id, attempt, settings, runner)
    finally:
        if beat is not None:
            beat.stop()


def execute(conn: redis.Redis, build_id: str, attempt: int, settings: Settings, runner: str) -> dict[str, Any]:
    build = _retrying(f"start {build_id}", settings.redis_outage_limit,
                      lambda: results.start_attempt(conn, build_id, attempt, runner))
    if build is None:
        log.info("build %s attempt %d is not ours to run (finished, cancelled or superseded)", build_id, attempt)
        return {"build": build_id, "attempt": attempt, "stored": False}
    try:
        with checkout(settings.workspace_dir, build.repo, build.url, build.commit,
                      stale_after_s=2 * settings.build_timeout + STALE_MARGIN_S) as workspace:
            pump = LogPump(conn, build_id, attempt, workspace.scratch / OUTPUT_FILE, settings.log_max_bytes)
            outcome = run_steps(workspace.tree, workspace.scratch, build.repo, settings,
                                _ownership_check(conn, build_id, attempt, workspace.scratch / RESULTS_FILE, pump),
                                keys.job_id(build_id, attempt))
            try:
                if results.is_current(conn, build_id, attempt):
                    pump.finish()
            except redis.RedisError as exc:
                log.warning("build %s: could not store the end of its output (%s)", build_id, exc)
    except VoltError as exc:
        outcome = RunOutcome(Status.ERROR, [], Counts(), reason=f"checkout failed: {exc}")
    except Exception as exc:  # a bug of ours must still end the build, not leave it running
        log.error("build %s failed inside the runner:\n%s", build_id, traceback.format_exc())
        outcome = RunOutcome(Status.ERROR, [], Counts(), reason=f"runner error: {type(exc).__name__}: {exc}")
    stored = _retrying(f"store the result of {build_id}", STORE_RETRY_S,
                       lambda: results.finish_build(conn, build_id, attempt, runner, outcome))
    if not stored:
        log.warning("build %s attempt %d no longer owns the build (cancelled or re-dispatched); its result was dropped",
                    build_id, attempt)
    return {"build": build_id, "attempt": attempt, "stored": stored, "status": outcome.status.value,
            "counts": outcome.counts.to_dict()}


def _retrying(what: str, bound_s: float, call: Callable[[], T]) -> T:
    """`call()`, riding out a Redis outage of up to `bound_s` seconds with backoff."""
    delay = 0.5
    deadline = time.monotonic() + bound_s
    while True:
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("cannot %s yet (%s); retrying in %.1f s", what, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _ownership_check(conn: redis.Redis, build_id: str, attempt: int, results_path: Path | None = None,
                     pump: LogPump | None = None) -> Callable[[], str | None]:
    """A check, once a second, that says why to stop when this attempt no longer owns the build; while
    it does, it also copies the new output to Redis and records how many test results the run has
    written (`volt log -f`, the web page and `volt up` show them)."""
    last = [0.0]
    counter = LineCounter(results_path) if results_path is not None else None
    reported = [-1]

    def should_stop() -> str | None:
        now = time.monotonic()
        if now - last[0] < OWNERSHIP_CHECK_INTERVAL_S:
            return None
        last[0] = now
        try:
            if results.is_current(conn, build_id, attempt):
                if pump is not None:
                    pump.pump()
                if counter is not None and (done := counter.count()) != reported[0]:
                    results.set_progress(conn, build_id, done)
                    reported[0] = done
                return None
            build = results.get_build(conn, build_id)
        except redis.RedisError:
            return None  # a Redis outage is not a reason to stop the tests
        if build and build.status is Status.CANCELLED:
            return "cancelled"
        return f"attempt {attempt} was superseded"
    return should_stop
