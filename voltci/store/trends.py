"""Reading a repository's recent builds for its charts: the newest builds of a branch without their
output, and the branches a repository has.

A chart of 200 builds reads 200 records; a branch's builds are found among the repository's newest
SCAN_BUILDS (there is no index per branch), so a chart costs the same however long the history is.
"""

from __future__ import annotations

from typing import cast

from voltci import keys
from voltci.models import Build
from voltci.store.records import Reads

SCAN_BUILDS = 2000
CHUNK = 200
# What a chart shows of a build: everything but its output and its jobs.
FIELDS = ("id", "repo", "commit", "branch", "subject", "author", "status", "attempt", "queued_at", "started_at",
          "finished_at", "duration_s", "counts", "reason")


class Trends(Reads):
    def recent_builds(self, repo: str, branch: str | None = None, limit: int = 200) -> list[Build]:
        """The newest `limit` builds of `repo`, or of one of its branches, newest first, read without
        their output (log tails)."""
        found: list[Build] = []
        history = keys.repo_history(repo)
        for start in range(0, SCAN_BUILDS, CHUNK):
            build_ids = cast(list[str], self.r.zrevrange(history, start, start + CHUNK - 1))
            found += [b for b in self._light_builds(build_ids) if branch is None or b.branch == branch]
            if len(found) >= limit or len(build_ids) < CHUNK:
                break
        return found[:limit]

    def _light_builds(self, build_ids: list[str]) -> list[Build]:
        """These builds without their output and jobs (those that exist), in one round trip."""
        with self.r.pipeline(transaction=False) as pipe:
            for build_id in build_ids:
                pipe.hmget(keys.build(build_id), FIELDS)
            rows = pipe.execute()
        return [Build.from_hash({k: v for k, v in zip(FIELDS, values, strict=True) if v is not None})
                for values in rows if values[0] is not None]

    def branches(self, repo: str) -> list[str]:
        """The branches that have builds (each branch's newest build is recorded)."""
        return sorted(cast(list[str], self.r.hkeys(keys.repo_heads(repo))))
