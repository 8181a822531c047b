"""The runner host's side: what a runner does with a build, from taking its rq job to storing its
result — the worker process, the workspace and the build's environment, the build's steps in their
sandbox under their limits, and reading what they wrote.

`run_build`, `run_leg` and `run_shard` are the functions Volt's rq jobs name ("voltci.runner.run_build"): they
are imported from here when a job runs, and import the rest only then, so that a settings module
that reads a limit does not load the whole runner.
"""

from __future__ import annotations

from typing import Any


def run_build(build_id: str, attempt: int) -> dict[str, Any]:
    """rq job entry point: run attempt `attempt` of build `build_id` and store its result."""
    from voltci.runner.jobs import run_build as run
    return run(build_id, attempt)


def run_shard(build_id: str, attempt: int, shard: int, shard_attempt: int) -> dict[str, Any]:
    """rq job entry point: run one shard of a split build and store its share of the results."""
    from voltci.runner.jobs import run_shard as run
    return run(build_id, attempt, shard, shard_attempt)


def run_leg(leg_id: str, attempt: int) -> dict[str, Any]:
    """rq job entry point: run one matrix leg of a build (its interpreter, its variables) and store its result."""
    from voltci.runner.jobs import run_leg as run
    return run(leg_id, attempt)
