"""The functions Volt's rq jobs name, run by any `rq worker` (or `volt worker`) on Volt's queue:
`run_build` for an attempt of a build, `run_leg` for an attempt of one matrix leg of it, `run_shard`
for an attempt of one shard of a split build (or of a split leg). Jobs name them as
`voltci.runner.run_build` and so on; the package hands out these (runner/__init__.py).

Each reads the runner host's settings (environment and config file) and hands the work to a
BuildRun (build.py). Under a plain `rq worker`, which has no heartbeat of its own, the job keeps the
runner's heartbeat key alive itself while it runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from voltci.config import load_settings
from voltci.heartbeat import Heartbeat, worker_beats
from voltci.jobqueue import current_job_connection, current_runner_id
from voltci.models import RunnerBeat, Work
from voltci.runner.build import BuildRun
from voltci.runner.interpreters import interpreters
from voltci.store import Store


def run_build(build_id: str, attempt: int) -> dict[str, Any]:
    """rq job entry point: run attempt `attempt` of build `build_id` and store its result."""
    return _run(Work(build_id, attempt))


def run_shard(build_id: str, attempt: int, shard: int, shard_attempt: int) -> dict[str, Any]:
    """rq job entry point: run one shard of a split build and store its share of the results."""
    return _run(Work(build_id, attempt, shard, shard_attempt))


def run_leg(leg_id: str, attempt: int) -> dict[str, Any]:
    """rq job entry point: run one matrix leg of a build and store its result (the last leg to end
    merges every leg's into the build's one result)."""
    return _run(Work(leg_id, attempt))


def _run(work: Work) -> dict[str, Any]:
    store, runner = Store(current_job_connection(), load_settings()), current_runner_id()
    with _plain_worker_heartbeat(store, runner, work):
        return BuildRun(store, work, runner).run()


@contextmanager
def _plain_worker_heartbeat(store: Store, runner: str, work: Work) -> Iterator[None]:
    """A plain `rq worker` has no heartbeat of its own: the job keeps the runner's key alive."""
    if worker_beats():
        yield
        return
    settings = store.settings
    beat = Heartbeat(store, RunnerBeat(name=runner, pid=os.getppid(), pythons=list(interpreters(settings.pythons))),
                     settings.heartbeat, settings.heartbeat_ttl).start()
    beat.set_work(work)
    try:
        yield
    finally:
        beat.stop()
