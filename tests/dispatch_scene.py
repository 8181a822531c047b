"""A dispatch scene for tests: repositories pushed to through the store, and one runner that takes the
front of Volt's queue as `rq worker` does and ends each build as the test says."""

from __future__ import annotations

import time

import redis

from voltci import jobqueue, keys
from voltci.bisect import halving
from voltci.clock import now_iso
from voltci.dispatch import Priority
from voltci.models import Build, Counts, PointerUpdate, Push, QueuedFor, RunOutcome, Status
from voltci.store import Store


def sha(repo: str, n: int) -> str:
    return f"{abs(hash((repo, n))) % 16 ** 12:012x}".ljust(40, "0")


class Scene:
    """Repositories pushed to, and one runner taking the front of the queue as `rq worker` does."""

    def __init__(self, conn: redis.Redis, settings):
        self.store = Store(conn, settings)
        self.conn, self.settings = conn, settings
        self.pointers: dict[tuple[str, str], str] = {}
        self.taken: list[Build] = []

    def repo(self, name: str, priority: Priority = Priority.NORMAL) -> None:
        self.store.repos.register(name, f"/src/{name}", ["main"], priority.value)

    def push(self, repo: str, n: int, start: int = 0, branch: str = "main", wanted: QueuedFor | None = None,
             ) -> list[Build]:
        shas = [sha(repo, start + i) for i in range(n)]
        queued = now_iso()
        builds = [Build(keys.build_id(repo, s), repo, f"/src/{repo}", s, branch, subject=f"{repo} {start + i + 1}",
                        author="Ann <ann@volt.invalid>", queued_at=queued) for i, s in enumerate(shas)]
        if wanted is not None:
            builds[-1].queued_for = wanted.value
        base = self.pointers.get((repo, branch), "")
        record = Push(builds[-1].id, repo, branch, base, shas, queued_at=queued) if n > 1 else None
        first = [builds[-1].id] + [builds[j - 1].id for j in halving(0, n)] if self.settings.dispatch == "fair" \
            else None
        self.pointers[(repo, branch)] = shas[-1]
        return self.store.builds.submit_push(builds, PointerUpdate(repo, branch, shas[-1]), record, first)

    def order(self) -> list[str]:
        """Commits' labels (their subjects) in queue order."""
        ids = jobqueue.waiting_in_order(self.conn, self.settings, 1000)
        builds = {b.id: b for b in self.store.records.builds([keys.parse_job_id(j)[0] for j in ids])}
        return [builds[keys.parse_job_id(j)[0]].subject for j in ids]

    def take(self) -> Build | None:
        """Pop the front of the queue and start that attempt."""
        job_id = self.conn.lpop(jobqueue.queue_key(self.settings))
        if job_id is None:
            return None
        build_id, attempt, _ = keys.parse_job_id(job_id)
        build = self.store.builds.start_attempt(build_id, attempt, "runner-1")
        assert build is not None
        self.taken.append(build)
        return build

    def finish(self, build: Build, status: Status) -> None:
        assert self.store.builds.finish(build.id, build.attempt, "runner-1", RunOutcome(status, [], Counts()))

    def run_one(self, broken: dict[str, int], seconds: float = 0.0) -> Build | None:
        """Take the next build and end it after `seconds`: failed from commit `broken[repo]` on, else passed."""
        build = self.take()
        if build is not None:
            time.sleep(seconds)
            number = int(build.subject.split()[-1])
            self.finish(build, Status.FAILED if number >= broken.get(build.repo, 10 ** 9) else Status.PASSED)
        return build
