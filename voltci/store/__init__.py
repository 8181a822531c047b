"""The store: every read and write of Volt's own records in Redis, over one decoded client.

Builds, their attempts, shards, per-test results and output; the runner registry and heartbeats;
the webhook outbox; the history and commit indexes; retention. Nothing outside this package formats
a key or opens a pipeline; the web page, the CLI, the observer, the scheduler and the runners call a
`Store`. Its parts, one module each:

    records.py      reading builds, results, histories; commit lookup
    transitions.py  the build state machine (each change one guarded transaction: tx.py)
    dispatch.py     the queue kept in dispatch order; culprit finding in pushes
    metrics.py      counters and histograms for /metrics
    shards.py       a build split across runners
    legs.py         a matrix build: one leg per interpreter and variable set, merged into one result
    logs.py         a build's output
    runners.py      heartbeats, the registry, lost attempts, the scheduler lock
    repos.py        watched repositories, pointers, notifications
    outbox.py       webhook messages to send
    hooks.py        forge push hooks received, so that a replayed one is refused
    retention.py    pruning old builds
    usage.py        memory used, bytes per build
    trail.py        each test's outcome and duration in a repository's newest builds (its history)
    trends.py       a repository's recent builds for charts, its branches
    codec.py        the compact encodings of finished results
    budget.py       what a build keeps of its results at most, and cutting them to it
"""

from __future__ import annotations

from voltci import jobqueue
from voltci.store.codec import CorruptRecord
from voltci.store.dispatch import Dispatch
from voltci.store.hooks import Hooks
from voltci.store.legs import Legs, merge_legs
from voltci.store.logs import Logs
from voltci.store.metrics import Metrics
from voltci.store.outbox import Outbox
from voltci.store.repos import Repos
from voltci.store.retention import Policy, Retention
from voltci.store.runners import Runners
from voltci.store.shards import merge
from voltci.store.trends import Trends
from voltci.store.tx import Contended
from voltci.store.usage import Memory, RepoUsage, Usage

__all__ = ["Contended", "CorruptRecord", "Memory", "Policy", "RepoUsage", "Store", "merge", "merge_legs"]


class Store(Dispatch, Legs, Retention, Usage, Logs, Runners, Repos, Outbox, Hooks, Metrics, Trends):
    """Volt's records in one Redis. `Store(client, settings)`; see the package's docstring for its parts."""

    # rq's view of the queue, for the scheduler and the pages (through jobqueue.py, which owns rq's client)

    def queue_depth(self) -> int:
        return jobqueue.queue_depth(self.r, self.settings)

    def waiting_job_ids(self, queues: list[str] | None = None) -> set[str]:
        return jobqueue.waiting_job_ids(self.r, self.settings, queues)

    def job_states(self, job_ids: list[str]) -> dict[str, tuple[str, str]]:
        return jobqueue.job_states(self.r, job_ids)
