"""Kept for users: `rq worker -w voltci.worker.VoltWorker` is how deployments name the runner's worker
class. It lives in voltci.runner.worker, which Volt's own code imports; this module only passes it on."""

from voltci.runner.worker import VoltWorker, make_worker

__all__ = ["VoltWorker", "make_worker"]
