"""A repository's history: its builds over time, newest first (listings, pages, a branch's newest,
the recent builds its charts draw), its branches, and what its builds leave it (flaky counts, test
timings).

Every read costs the same however long the history is: builds are found through indexes (a
repository's history by time, the index of all builds, each branch's newest build), never by
scanning. A chart of 200 builds reads 200 records without their output; a branch's builds are found
among the repository's newest SCAN_BUILDS (there is no index per branch).
"""

from __future__ import annotations

from typing import cast

from voltci import keys
from voltci.errors import BadInput
from voltci.models import Build, FlakyTest, Timings
from voltci.store import codec
from voltci.store.records import Records
from voltci.store.repos import Repos
from voltci.store.tx import Client, raw

LEGACY_BRANCH_SCAN = 500  # builds looked at for a branch's newest, in a history written before heads existed
SCAN_BUILDS = 2000
CHUNK = 200


class History:
    """Reads of a repository's builds across time. `History(client, records, repos)`."""

    def __init__(self, client: Client, records: Records, repos: Repos):
        self.r = client
        self.records = records
        self.repos = repos

    def builds(self, repo: str | None = None, limit: int = 20) -> list[Build]:
        """The latest builds, newest first, of one repository or of all of them."""
        if repo is not None:
            if not keys.is_valid_repo_name(repo):
                raise BadInput(f"not a repository name: '{repo}'")
            return self.records.builds(self.r.zrevrange(keys.repo_history(repo), 0, limit - 1))
        repos = sorted(self.repos.known())
        with self.r.pipeline(transaction=False) as pipe:
            pipe.zcard(keys.history())
            for name in repos:
                pipe.zcard(keys.repo_history(name))
            indexed, *per_repo = pipe.execute()
        if indexed >= sum(per_repo):  # every build is in the index of all builds
            return self.records.builds(self.r.zrevrange(keys.history(), 0, limit - 1))
        return self._merged(repos, limit)  # some were recorded before that index existed

    def _merged(self, repos: list[str], limit: int) -> list[Build]:
        with self.r.pipeline(transaction=False) as pipe:
            for name in repos:
                pipe.zrevrange(keys.repo_history(name), 0, limit - 1, withscores=True)
            found = pipe.execute()
        scored = sorted(((score, build_id) for ids in found for build_id, score in ids), reverse=True)
        return self.records.builds([build_id for _, build_id in scored[:limit]])

    def page(self, repo: str, page: int, per_page: int) -> tuple[list[Build], int]:
        """One page (from 1) of a repository's builds, newest first, and how many builds it has."""
        start = (page - 1) * per_page
        with self.r.pipeline(transaction=False) as pipe:
            pipe.zrevrange(keys.repo_history(repo), start, start + per_page - 1)
            pipe.zcard(keys.repo_history(repo))
            build_ids, total = pipe.execute()
        return self.records.builds(list(build_ids)), int(total)

    def latest_builds(self, repos: list[str]) -> dict[str, Build | None]:
        """The newest build of each of `repos` (in two round trips, however many repositories)."""
        with self.r.pipeline(transaction=False) as pipe:
            for repo in repos:
                pipe.zrevrange(keys.repo_history(repo), 0, 0)
            newest = [found[0] if found else None for found in pipe.execute()]
        builds = {b.id: b for b in self.records.builds([build_id for build_id in newest if build_id])}
        return {repo: builds.get(build_id) if build_id else None for repo, build_id in zip(repos, newest, strict=False)}

    def latest_build(self, repo: str, branch: str | None = None) -> Build | None:
        """The newest build of `repo`, or of one of its branches."""
        if branch is None:
            newest = self.r.zrevrange(keys.repo_history(repo), 0, 0)
            return self.records.get_build(newest[0]) if newest else None
        head = self.r.hget(keys.repo_heads(repo), branch)
        if head is not None:
            return self.records.get_build(head)
        if self.r.exists(keys.repo_heads(repo)):
            return None  # the branch has no build
        for build in self.records.builds(self.r.zrevrange(keys.repo_history(repo), 0, LEGACY_BRANCH_SCAN - 1)):
            if build.branch == branch and build.pull_request is None:
                return build
        return None

    def recent_builds(self, repo: str, branch: str | None = None, limit: int = 200) -> list[Build]:
        """The newest `limit` builds of `repo`, or of one of its branches (its own: not the pull requests
        that would merge into it), newest first, read without their output (log tails)."""
        found: list[Build] = []
        history = keys.repo_history(repo)
        for start in range(0, SCAN_BUILDS, CHUNK):
            build_ids = cast(list[str], self.r.zrevrange(history, start, start + CHUNK - 1))
            found += [b for b in self.records.light(build_ids)
                      if branch is None or (b.branch == branch and b.pull_request is None)]
            if len(found) >= limit or len(build_ids) < CHUNK:
                break
        return found[:limit]

    def branches(self, repo: str) -> list[str]:
        """The branches that have builds (each branch's newest build is recorded)."""
        return sorted(cast(list[str], self.r.hkeys(keys.repo_heads(repo))))

    def flaky_tests(self, repos: list[str], limit: int) -> list[FlakyTest]:
        """The tests that were flaky most often, over the history of `repos` (kept through pruning)."""
        found = []
        for repo in repos:
            for test_id, times in self.r.zrevrange(keys.repo_flaky(repo), 0, limit - 1, withscores=True):
                found.append(FlakyTest(repo, test_id, int(times),
                                       self.r.hget(keys.repo_flaky_last(repo), test_id) or ""))
        found.sort(key=lambda f: (-f.times, f.repo, f.test))
        return found[:limit]

    def flaky_record(self, repo: str, test_id: str) -> tuple[int, str]:
        """How many times the test was flaky (over the repository's whole history) and the latest build."""
        with self.r.pipeline(transaction=False) as pipe:
            pipe.zscore(keys.repo_flaky(repo), test_id)
            pipe.hget(keys.repo_flaky_last(repo), test_id)
            times, last = pipe.execute()
        return int(times or 0), last or ""

    def timings(self, repo: str, leg: str = "") -> Timings:
        """What each test (and collecting each file) cost the repository's latest build that ran tests,
        or the latest run of its matrix leg `leg`: for balancing shards."""
        if leg:
            return codec.decode_timings(raw(self.r, "HGET", keys.repo_leg_timings(repo), leg))
        blob = raw(self.r, "GET", keys.repo_timings(repo))
        if blob is not None:
            return codec.decode_timings(blob)
        return Timings({t: float(s) for t, s in self.r.hgetall(keys.repo_durations(repo)).items()})

