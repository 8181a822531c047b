"""The store: every read and write of Volt's own records in Redis, over one decoded client.

Nothing outside this package formats a key or opens a pipeline; the web page, the CLI, the observer,
the scheduler and the runners call a part of a `Store`: `store.builds.finish(...)`,
`store.records.get_build(...)`. The store owns the client and the settings and holds one part per
kind of record, each a module of its own, each handed at construction the other parts it calls:

    records    a build's own records read by id (builds, attempts, shards, legs, results); commit lookup
    history    a repository's builds over time: listings, pages, charts, branches, flaky counts, timings
    trail      each test's outcome and duration in a repository's newest builds
    repos      watched repositories, the observer's pointers, `volt notify`
    pushes     culprit finding in pushes                                     (records)
    queue      the queue kept in dispatch order; rq's view of it             (records, repos, pushes)
    legs       a matrix build: one leg per interpreter, merged into one result  (trail, queue)
    builds     the build state machine: every change one guarded transaction    (records, legs, trail, queue)
    shards     a build split across runners, merged by its last shard   (records, builds, legs, trail, queue)
    logs       a build's output
    runners    heartbeats, the registry, lost attempts, the scheduler lock
    outbox     webhook messages to send
    statuses   builds with news for their forge's commit statuses, and what each forge was last told
    hooks      forge push hooks received, so that a replayed one is refused
    pulls      pull requests: trust, approval, the builds of their heads     (records, repos, builds, queue)
    metrics    counters and histograms for /metrics
    retention  pruning old builds                                            (records, repos)
    usage      memory used, bytes per build                                  (records)

and modules of functions they share: tx.py (the guarded transaction), endings.py (the writes that end
a build, in whichever part's transaction decides it), codec.py (the compact encodings of finished
results), budget.py (what a build keeps of its results at most), channels.py (publish/subscribe).
"""

from __future__ import annotations

import redis

from voltci.config import Settings
from voltci.connection import decoded
from voltci.store.builds import Builds
from voltci.store.codec import CorruptRecord
from voltci.store.history import History
from voltci.store.hooks import Hooks
from voltci.store.legs import Legs, merge_legs
from voltci.store.logs import Logs
from voltci.store.metrics import Metrics
from voltci.store.outbox import Outbox
from voltci.store.pulls import Pulls
from voltci.store.pushes import Pushes
from voltci.store.queue import Queue
from voltci.store.records import Records
from voltci.store.repos import Repos
from voltci.store.retention import Policy, Retention
from voltci.store.runners import Runners
from voltci.store.shards import Shards, merge
from voltci.store.statuses import Statuses
from voltci.store.trail import Trail
from voltci.store.tx import Client, Contended
from voltci.store.usage import Memory, RepoUsage, Usage

__all__ = ["Contended", "CorruptRecord", "Memory", "Policy", "RepoUsage", "Store", "merge", "merge_legs"]


def _decodes(client: redis.Redis) -> bool:
    return bool(client.connection_pool.connection_kwargs.get("decode_responses"))


class Store:
    """Volt's records in one Redis: `Store(client, settings)`, its parts as attributes (see the package's
    docstring). Given rq's bytes client (a runner's job connection), it opens a decoding one on the same
    server: Volt's records are read as text everywhere, and compressed blobs are fetched as bytes on
    purpose (`tx.raw`)."""

    def __init__(self, client: redis.Redis, settings: Settings | None = None):
        # redis-py types every reply as `bytes | str`; this client decodes, so its replies are str (and
        # the store's records say what each one holds).
        self.r: Client = client if _decodes(client) else decoded(client)
        self.settings = settings or Settings()
        r, settings = self.r, self.settings
        self.records = Records(r)
        self.repos = Repos(r)
        self.history = History(r, self.records, self.repos)
        self.trail = Trail(r, self.records)
        self.pushes = Pushes(r, self.records)
        self.queue = Queue(r, settings, self.records, self.repos, self.pushes)
        self.legs = Legs(r, settings, self.trail, self.queue)
        self.builds = Builds(r, settings, self.records, self.legs, self.trail, self.queue)
        self.shards = Shards(r, settings, self.records, self.builds, self.legs, self.trail, self.queue)
        self.logs = Logs(r)
        self.runners = Runners(r)
        self.outbox = Outbox(r)
        self.statuses = Statuses(r)
        self.hooks = Hooks(r)
        self.pulls = Pulls(r, settings, self.records, self.repos, self.builds, self.queue)
        self.metrics = Metrics(r)
        self.retention = Retention(r, self.records, self.repos)
        self.usage = Usage(r, self.records)
