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
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import redis

from voltci import keys
from voltci.config import load_settings
from voltci.errors import VoltError
from voltci.heartbeat import Heartbeat, worker_beats
from voltci.logstream import LogPump
from voltci.models import Build, Counts, RunnerBeat, RunOutcome, Share, Status
from voltci.outage import Outage, is_full
from voltci.queue import Work, current_job_connection, current_runner_id
from voltci.runner.sandbox import out_dir
from voltci.runner.sharding import partition
from voltci.runner.steps import Splitter, run_steps
from voltci.runner.testrun import OUTPUT_FILE, RESULTS_FILE, LineCounter
from voltci.runner.workspace import checkout
from voltci.store import Contended, Store

T = TypeVar("T")

log = logging.getLogger(__name__)
OWNERSHIP_CHECK_INTERVAL_S = 1.0
STORE_RETRY_S = 120.0
STALE_MARGIN_S = 600.0


def run_build(build_id: str, attempt: int) -> dict[str, Any]:
    """rq job entry point: run attempt `attempt` of build `build_id` and store its result."""
    store, runner = Store(current_job_connection(), load_settings()), current_runner_id()
    with _plain_worker_heartbeat(store, runner, Work(build_id, attempt)):
        return execute(store, build_id, attempt, runner)


def run_shard(build_id: str, attempt: int, shard: int, shard_attempt: int) -> dict[str, Any]:
    """rq job entry point: run one shard of a split build and store its share of the results."""
    store, runner = Store(current_job_connection(), load_settings()), current_runner_id()
    with _plain_worker_heartbeat(store, runner, Work(build_id, attempt, shard, shard_attempt)):
        return execute_shard(store, build_id, attempt, shard, shard_attempt, runner)


@contextmanager
def _plain_worker_heartbeat(store: Store, runner: str, work: Work) -> Iterator[None]:
    """A plain `rq worker` has no heartbeat of its own: the job keeps the runner's key alive."""
    if worker_beats():
        yield
        return
    settings = store.settings
    beat = Heartbeat(store, RunnerBeat(name=runner, pid=os.getppid()), settings.heartbeat,
                     settings.heartbeat_ttl).start()
    beat.set_work(work.build, work.attempt, work.shard, work.shard_attempt)
    try:
        yield
    finally:
        beat.stop()


def execute(store: Store, build_id: str, attempt: int, runner: str) -> dict[str, Any]:
    settings = store.settings
    build = _retrying(f"start {build_id}", settings.redis_outage_limit,
                      lambda: store.start_attempt(build_id, attempt, runner))
    if build is None:
        log.info("build %s attempt %d is not ours to run (finished, cancelled or superseded)", build_id, attempt)
        return {"build": build_id, "attempt": attempt, "stored": False}
    owned = Ownership(store, build_id, attempt)
    split = _splitter(store, build, attempt, runner, owned)
    outcome = _run_in_workspace(store, build, owned, keys.job_id(build_id, attempt), split=split, stream_log=True)
    if owned.shard is not None:
        done = _retrying(f"store shard 0 of {build_id}", STORE_RETRY_S, lambda: store.finish_shard(
            build_id, attempt, 0, 1, runner, outcome))
        stored = done is not None
    else:
        stored = _retrying(f"store the result of {build_id}", STORE_RETRY_S,
                           lambda: store.finish_build(build_id, attempt, runner, outcome))
    if not stored:
        log.warning("build %s attempt %d no longer owns the build (cancelled or re-dispatched); its result was dropped",
                    build_id, attempt)
    return {"build": build_id, "attempt": attempt, "stored": stored, "status": outcome.status.value,
            "counts": outcome.counts.to_dict()}


def execute_shard(store: Store, build_id: str, attempt: int, shard: int, shard_attempt: int,
                  runner: str) -> dict[str, Any]:
    settings = store.settings
    build = _retrying(f"start shard {shard} of {build_id}", settings.redis_outage_limit,
                      lambda: store.claim_shard(build_id, attempt, shard, shard_attempt, runner))
    if build is None:
        log.info("shard %d of build %s is not ours to run", shard, build_id)
        return {"build": build_id, "shard": shard, "stored": False}
    owned = Ownership(store, build_id, attempt, (shard, shard_attempt))
    share = _retrying(f"read shard {shard} of {build_id}", settings.redis_outage_limit,
                      lambda: store.shard_share(build_id, shard))
    outcome = _run_in_workspace(store, build, owned, keys.shard_job_id(build_id, attempt, shard, shard_attempt),
                                only=share)
    done = _retrying(f"store shard {shard} of {build_id}", STORE_RETRY_S, lambda: store.finish_shard(
        build_id, attempt, shard, shard_attempt, runner, outcome))
    if done is None:
        log.warning("shard %d of build %s no longer ours; its results were dropped", shard, build_id)
    return {"build": build_id, "shard": shard, "stored": done is not None, "merged": done == "merged",
            "status": outcome.status.value}


def _run_in_workspace(store: Store, build: Build, owned: "Ownership", run_id: str, split: Splitter | None = None,
                      only: Share | None = None, stream_log: bool = False) -> RunOutcome:
    """Check the commit out and run its steps; every failure of ours becomes an `error` outcome."""
    settings = store.settings
    try:
        with checkout(settings.workspace_dir, build.repo, build.url, build.commit,
                      stale_after_s=2 * settings.build_timeout + STALE_MARGIN_S) as workspace:
            pump = LogPump(store, build.id, build.attempt, workspace.scratch / OUTPUT_FILE,
                           settings.log_max_bytes) if stream_log else None
            outcome = run_steps(workspace.tree, workspace.scratch, build.repo, settings,
                                owned.check(out_dir(workspace.scratch) / RESULTS_FILE, pump), run_id, split=split, only=only)
            try:
                if pump is not None and owned.owns():
                    pump.finish()
                    _retrying(f"store the end of the output of {build.id}", STORE_RETRY_S,
                              lambda: pump.flush(raise_errors=True))
            except redis.RedisError as exc:
                log.warning("build %s: could not store the end of its output (%s)", build.id, exc)
            return outcome
    except VoltError as exc:
        return RunOutcome(Status.ERROR, [], Counts(), reason=f"checkout failed: {exc}")
    except Exception as exc:  # a bug of ours must still end the build, not leave it running
        log.error("build %s failed inside the runner:\n%s", build.id, traceback.format_exc())
        return RunOutcome(Status.ERROR, [], Counts(), reason=f"runner error: {type(exc).__name__}: {exc}")


def _splitter(store: Store, build: Build, attempt: int, runner: str, owned: "Ownership") -> Splitter | None:
    """How this build would be split across the live runners, if its suite is large enough.

    With the repository's recorded test durations, the split is planned from them at once and this
    run (shard 0) takes every test the other shards do not — new tests included; without them, the
    tests are listed first."""
    settings = store.settings
    if settings.shard_threshold <= 0:
        return None
    try:
        wanted = settings.shards or sum(1 for beat in store.live_runners().values() if settings.queue in beat.queues)
    except redis.RedisError:
        return None  # Redis is away: this build runs whole
    if wanted < 2:
        return None

    def split(list_ids: Callable[[], list[str]] | None) -> Share | None:
        if owned.shard is not None:
            return None  # split already
        try:
            return plan(list_ids)
        except redis.RedisError as exc:
            log.warning("build %s runs whole: Redis was away when it could have been split (%s)", build.id, exc)
            return None

    def plan(list_ids: Callable[[], list[str]] | None) -> Share | None:
        history = store.durations(build.repo)
        from_history = len(history) >= settings.shard_threshold
        if from_history:
            ids = sorted(history)
        elif list_ids is not None:
            ids = list_ids()
        else:
            return None  # asked again once the tests can be listed
        if len(ids) < settings.shard_threshold:
            return None
        plans = partition(ids, wanted, history)
        if len(plans) < 2 or not store.start_shards(build.id, attempt, plans, runner, from_history):
            return None
        owned.shard = (0, 1)
        log.info("build %s split into %d shards of %s tests", build.id, len(plans),
                 "/".join(str(len(p)) for p in plans))
        if from_history:
            return Share([test_id for plan in plans[1:] for test_id in plan], exclude=True)
        return Share(plans[0])
    return split


_full = Outage(log)


def _retrying(what: str, bound_s: float, call: Callable[[], T]) -> T:
    """`call()`, riding out for up to `bound_s` seconds, with backoff, a Redis that is away or full (said
    once until it has room again), or a record others kept changing."""
    delay = 0.5
    deadline = time.monotonic() + bound_s
    while True:
        try:
            result = call()
            _full.ok()
            return result
        except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.OutOfMemoryError, Contended) as exc:
            if time.monotonic() + delay > deadline:
                raise
            if is_full(exc):
                _full.failed(exc)
            else:
                log.warning("cannot %s yet (%s); retrying in %.1f s", what, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


class Ownership:
    """Whether this job still owns what it runs: the build's attempt, and its shard when it runs one."""

    def __init__(self, store: Store, build_id: str, attempt: int, shard: tuple[int, int] | None = None):
        self.store, self.build_id, self.attempt, self.shard = store, build_id, attempt, shard

    def owns(self) -> bool:
        if self.shard is None:
            return self.store.is_current(self.build_id, self.attempt)
        return self.store.owns_shard(self.build_id, self.attempt, *self.shard)

    def check(self, results_path: Path | None = None, pump: LogPump | None = None) -> Callable[[], str | None]:
        """A check, once a second, that says why to stop when this job no longer owns its work; while
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
                if self.owns():
                    if pump is not None:
                        pump.pump()
                    if counter is not None and self.shard in (None, (0, 1)) and (done := counter.count()) != reported[0]:
                        self.store.set_progress(self.build_id, done)
                        reported[0] = done
                    return None
                build = self.store.get_build(self.build_id)
            except redis.RedisError:
                return None  # a Redis outage is not a reason to stop the tests
            if build and build.status is Status.CANCELLED:
                return "cancelled"
            return f"attempt {self.attempt} was superseded"
        return should_stop
