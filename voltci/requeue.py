"""What an observer queued lately, kept in its own memory, so that a failover that took those builds
with it cannot lose them.

Redis replicates asynchronously: a replica the Sentinels promote may lack the last writes of the old
primary — or everything, when it was promoted while still copying the primary's data. The observer's
pointer goes back with the builds it queued (one transaction), so the next poll queues those commits
again; but a pointer that is gone altogether reads as a branch seen for the first time, which builds
its head only. The observer therefore remembers the builds it queued in the last minutes and, after the
primary changed, queues again those whose records the new primary lacks (their ids make it idempotent).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import replace

from voltci.models import Build, PointerUpdate, Status
from voltci.store import Store

KEPT = 1000  # builds remembered per repository: far more than a failover's window of lost writes holds
KEPT_S = 600.0  # … and for how long: what a failover can lose was written seconds before it


class QueuedJournal:
    """The builds one repository's observer queued lately, oldest first (bounded in count and age)."""

    def __init__(self, kept: int = KEPT, kept_s: float = KEPT_S):
        self.kept_s = kept_s
        self.entries: deque[tuple[float, Build]] = deque(maxlen=kept)

    def remember(self, builds: list[Build]) -> None:
        now = time.monotonic()
        self.entries.extend((now, build) for build in builds)

    def recent(self) -> list[Build]:
        horizon = time.monotonic() - self.kept_s
        while self.entries and self.entries[0][0] < horizon:
            self.entries.popleft()
        return [build for _, build in self.entries]

    def queue_lost(self, store: Store) -> list[Build]:
        """Queue again the remembered builds the store no longer has, per branch in the order they were
        queued, with that branch's pointer where this observer had left it; the builds queued again."""
        by_branch: dict[str, list[Build]] = {}
        for build in self.recent():
            by_branch.setdefault(build.branch, []).append(build)
        queued: list[Build] = []
        for branch, builds in by_branch.items():
            missing = [b for b in builds if not store.records.get_build(b.id) is not None]
            if not missing:
                continue
            fresh = [replace(b, status=Status.QUEUED, attempt=1, jobs=[], push="") for b in missing]
            pointer = PointerUpdate(builds[-1].repo, branch, builds[-1].commit)
            queued += store.builds.submit_push(fresh, pointer)
        return queued
