"""Reading builds: records, attempts, per-test results, histories, and commit lookup by prefix.

Every read a person makes (a report, a page, a listing) costs the same whatever the number of builds
kept: builds are found through indexes (a repository's history by time, the commit index by sha
prefix, each branch's newest build), never by scanning.
"""

from __future__ import annotations

import json

from voltci import keys
from voltci.errors import BadInput
from voltci.git import SHA_PREFIX
from voltci.models import Attempt, AttemptState, Build, FlakyTest, LostAttempt, Shard, TestResult, Timings
from voltci.store import codec
from voltci.store.base import StoreBase
from voltci.store.tx import Txn, raw

LEGACY_BRANCH_SCAN = 500  # builds looked at for a branch's newest, in a history written before heads existed


def leg_ids(build: Build) -> list[str]:
    """The ids of the matrix legs of `build`'s current attempt."""
    return [keys.leg_id(build.id, build.attempt, n) for n in range(build.legs)]


class Reads(StoreBase):
    def get_build(self, build_id: str) -> Build | None:
        data = self.r.hgetall(keys.build(build_id))
        return Build.from_hash(data) if data else None

    @staticmethod
    def _read_build(pipe: Txn, build_id: str) -> Build | None:
        """The record, read inside a guarded transaction."""
        data = pipe.hgetall(keys.build(build_id))
        return Build.from_hash(data) if data else None

    def get_tests(self, build_id: str) -> list[TestResult]:
        """Every test result of a build, in the order the tests ran."""
        fields = raw(self.r, "HGETALL", keys.build_results(build_id))
        if fields:
            return codec.decode_tests(fields)
        return self._legacy_tests(build_id)

    def listed_tests(self, build_id: str) -> list[TestResult]:
        """Only the failed, erroring and flaky tests (with their messages): what `volt report` names,
        read without decoding every other test."""
        blob = raw(self.r, "HGET", keys.build_results(build_id), "listed")
        if blob is not None:
            return codec.decode_listed(blob)
        return [t for t in self._legacy_tests(build_id) if t.outcome in codec.LISTED]

    def _legacy_tests(self, build_id: str) -> list[TestResult]:
        """A build stored by an earlier Volt: one hash field per test."""
        found = self.r.hgetall(keys.build_tests(build_id))
        tests = [TestResult.from_json(test_id, text) for test_id, text in found.items()]
        tests.sort(key=lambda t: t.order)
        return tests

    def get_attempts(self, build_id: str) -> list[Attempt]:
        found = self.r.hgetall(keys.build_attempts(build_id))
        return [Attempt.from_json(found[n]) for n in sorted(found, key=int)]

    @staticmethod
    def _attempt_record(pipe: Txn, build: Build) -> Attempt:
        text = pipe.hget(keys.build_attempts(build.id), str(build.attempt))
        if text:
            return Attempt.from_json(text)
        return Attempt(build.attempt, AttemptState.RUNNING, build.runner, build.started_at)

    def get_shards(self, build_id: str) -> list[Shard]:
        found = self.r.hgetall(keys.build_shards(build_id))
        return [Shard.from_json(found[k]) for k in sorted(found, key=int)]

    def get_legs(self, build_id: str) -> list[Build]:
        """The matrix legs of a build's current attempt, in the matrix's order (none: it has no matrix)."""
        build = self.get_build(build_id)
        return self._builds(leg_ids(build)) if build is not None else []

    @staticmethod
    def _read_legs(pipe: Txn, build: Build) -> list[Build]:
        """The legs of `build`, read inside a guarded transaction."""
        found = [pipe.hgetall(keys.build(leg_id)) for leg_id in leg_ids(build)]
        return [Build.from_hash(data) for data in found if data]

    def is_current(self, build_id: str, attempt: int) -> bool:
        """Whether `attempt` still owns the build (it has not been superseded, finished or cancelled)."""
        status, current = self.r.hmget(keys.build(build_id), "status", "attempt")
        return status == "running" and current == str(attempt)

    def resolve_commit(self, commit: str, repo: str | None = None) -> str:
        """The build id for a full sha or unique prefix (at least 4 hex digits), optionally within one repo."""
        prefix = commit.strip().lower()
        if not SHA_PREFIX.fullmatch(prefix):
            raise BadInput(f"not a commit: '{commit}' (give a full sha or a prefix of at least 4 hex digits)")
        if repo is not None and not keys.is_valid_repo_name(repo):
            raise BadInput(f"not a repository name: '{repo}'")
        members = self.r.zrangebylex(keys.commits(), f"[{prefix}", f"[{prefix}\xff", start=0, num=50)
        matches = sorted({keys.split_commit_member(m) for m in members})
        if repo is not None:
            matches = [(sha, r) for sha, r in matches if r == repo]
        where = f" in repository '{repo}'" if repo else ""
        if not matches:
            raise BadInput(f"unknown commit '{commit}'{where}: no build of it is recorded "
                           f"(or it was pruned by retention)")
        if len(matches) > 1:
            shown = ", ".join(f"{r}@{sha[:12]}" for sha, r in matches[:5])
            hint = "" if repo or len({r for _, r in matches}) == 1 else " (or name the repository with --repo)"
            raise BadInput(f"ambiguous commit '{commit}'{where}: it matches {shown}; give more digits{hint}")
        sha, found_repo = matches[0]
        return keys.build_id(found_repo, sha)

    def known_repos(self) -> dict[str, dict]:
        return {name: json.loads(text) for name, text in self.r.hgetall(keys.repos()).items()}

    def is_known_repo(self, repo: str) -> bool:
        return keys.is_valid_repo_name(repo) and bool(self.r.hexists(keys.repos(), repo))

    def history(self, repo: str | None = None, limit: int = 20) -> list[Build]:
        """The latest builds, newest first, of one repository or of all of them."""
        if repo is not None:
            if not keys.is_valid_repo_name(repo):
                raise BadInput(f"not a repository name: '{repo}'")
            return self._builds(self.r.zrevrange(keys.repo_history(repo), 0, limit - 1))
        repos = sorted(self.known_repos())
        with self.r.pipeline(transaction=False) as pipe:
            pipe.zcard(keys.history())
            for name in repos:
                pipe.zcard(keys.repo_history(name))
            indexed, *per_repo = pipe.execute()
        if indexed >= sum(per_repo):  # every build is in the index of all builds
            return self._builds(self.r.zrevrange(keys.history(), 0, limit - 1))
        return self._merged_history(repos, limit)  # some were recorded before that index existed

    def _merged_history(self, repos: list[str], limit: int) -> list[Build]:
        with self.r.pipeline(transaction=False) as pipe:
            for name in repos:
                pipe.zrevrange(keys.repo_history(name), 0, limit - 1, withscores=True)
            found = pipe.execute()
        scored = sorted(((score, build_id) for ids in found for build_id, score in ids), reverse=True)
        return self._builds([build_id for _, build_id in scored[:limit]])

    def history_page(self, repo: str, page: int, per_page: int) -> tuple[list[Build], int]:
        """One page (from 1) of a repository's builds, newest first, and how many builds it has."""
        start = (page - 1) * per_page
        with self.r.pipeline(transaction=False) as pipe:
            pipe.zrevrange(keys.repo_history(repo), start, start + per_page - 1)
            pipe.zcard(keys.repo_history(repo))
            build_ids, total = pipe.execute()
        return self._builds(list(build_ids)), int(total)

    def latest_builds(self, repos: list[str]) -> dict[str, Build | None]:
        """The newest build of each of `repos` (in two round trips, however many repositories)."""
        with self.r.pipeline(transaction=False) as pipe:
            for repo in repos:
                pipe.zrevrange(keys.repo_history(repo), 0, 0)
            newest = [found[0] if found else None for found in pipe.execute()]
        builds = {b.id: b for b in self._builds([build_id for build_id in newest if build_id])}
        return {repo: builds.get(build_id) if build_id else None for repo, build_id in zip(repos, newest, strict=False)}

    def latest_build(self, repo: str, branch: str | None = None) -> Build | None:
        """The newest build of `repo`, or of one of its branches."""
        if branch is None:
            newest = self.r.zrevrange(keys.repo_history(repo), 0, 0)
            return self.get_build(newest[0]) if newest else None
        head = self.r.hget(keys.repo_heads(repo), branch)
        if head is not None:
            return self.get_build(head)
        if self.r.exists(keys.repo_heads(repo)):
            return None  # the branch has no build
        for build in self._builds(self.r.zrevrange(keys.repo_history(repo), 0, LEGACY_BRANCH_SCAN - 1)):
            if build.branch == branch:
                return build
        return None

    def running_builds(self) -> list[Build]:
        return self._builds(sorted(self.r.smembers(keys.running())))

    def queued_builds(self) -> list[Build]:
        return self._builds(sorted(self.r.smembers(keys.queued())))

    def busy(self) -> bool:
        """Whether a build is running or waiting."""
        return bool(self.r.scard(keys.running()) or self.r.scard(keys.queued()))

    def _builds(self, build_ids: list[str]) -> list[Build]:
        with self.r.pipeline(transaction=False) as pipe:
            for build_id in build_ids:
                pipe.hgetall(keys.build(build_id))
            found = pipe.execute()
        return [Build.from_hash(data) for data in found if data]

    def flaky_tests(self, repos: list[str], limit: int) -> list[FlakyTest]:
        """The tests that were flaky most often, over the history of `repos` (kept through pruning)."""
        found = []
        for repo in repos:
            for test_id, times in self.r.zrevrange(keys.repo_flaky(repo), 0, limit - 1, withscores=True):
                found.append(FlakyTest(repo, test_id, int(times),
                                       self.r.hget(keys.repo_flaky_last(repo), test_id) or ""))
        found.sort(key=lambda f: (-f.times, f.repo, f.test))
        return found[:limit]

    def recent_lost(self, limit: int = 10) -> list[LostAttempt]:
        return [LostAttempt.from_json(text) for text in self.r.lrange(keys.lost(), 0, limit - 1)]

    def timings(self, repo: str, leg: str = "") -> Timings:
        """What each test (and collecting each file) cost the repository's latest build that ran tests,
        or the latest run of its matrix leg `leg`: for balancing shards."""
        if leg:
            return codec.decode_timings(raw(self.r, "HGET", keys.repo_leg_timings(repo), leg))
        blob = raw(self.r, "GET", keys.repo_timings(repo))
        if blob is not None:
            return codec.decode_timings(blob)
        return Timings({t: float(s) for t, s in self.r.hgetall(keys.repo_durations(repo)).items()})
