"""The runner host's side: what a runner does with a build, from taking its rq job to storing its
result — the worker process, the workspace and the build's environment, the build's steps in their
sandbox under their limits, and reading what they wrote.

Volt's rq jobs name their function by its place here, `voltci.runner.run_build` (and `run_leg`,
`run_shard`): every job already queued holds that name, so it stays. The functions themselves are
jobs.py's, fetched from there only when rq looks one up, so that a module that needs one part of the
runner (a limit, the sandbox) does not load the whole of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

JOB_FUNCTIONS = ("run_build", "run_leg", "run_shard")


def __getattr__(name: str) -> Callable[..., dict[str, Any]]:
    """`voltci.runner.run_build` and the others, as rq's `import_attribute` finds them: jobs.py's."""
    if name in JOB_FUNCTIONS:
        from voltci.runner import jobs
        return getattr(jobs, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
