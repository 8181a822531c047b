"""`rq worker -w voltci.worker.VoltWorker`: the runner's worker class, under the name deployments use.
It lives in voltci.runner.worker."""

from voltci.runner.worker import VoltWorker, make_worker

__all__ = ["VoltWorker", "make_worker"]
