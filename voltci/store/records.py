"""A build's own records, read by its id: the build, its attempts, shards and legs, its per-test
results, commit lookup by prefix, the work sets; and the same records read inside a guarded
transaction (the module's functions, given the transaction's pipeline).

Every read a person makes costs the same whatever the number of builds kept: builds are found
through indexes (the commit index by sha prefix, the queued and running sets), never by scanning.
The other parts read builds through this one.
"""

from __future__ import annotations

from voltci import keys
from voltci.errors import BadInput
from voltci.git import SHA_PREFIX
from voltci.models import Attempt, AttemptState, Build, Shard, TestResult
from voltci.store import codec
from voltci.store.tx import Client, Txn, raw

# What a listing or a chart shows of a build: everything but its output and its jobs.
LIGHT_FIELDS = ("id", "repo", "commit", "branch", "subject", "author", "status", "attempt", "queued_at",
                "started_at", "finished_at", "duration_s", "counts", "reason", "pull_request")


def leg_ids(build: Build) -> list[str]:
    """The ids of the matrix legs of `build`'s current attempt."""
    return [keys.leg_id(build.id, build.attempt, n) for n in range(build.legs)]


def read_build(pipe: Txn, build_id: str) -> Build | None:
    """The record, read inside a guarded transaction."""
    data = pipe.hgetall(keys.build(build_id))
    return Build.from_hash(data) if data else None


def read_legs(pipe: Txn, build: Build) -> list[Build]:
    """The legs of `build`, read inside a guarded transaction."""
    found = [pipe.hgetall(keys.build(leg_id)) for leg_id in leg_ids(build)]
    return [Build.from_hash(data) for data in found if data]


def read_attempt(pipe: Txn, build: Build) -> Attempt:
    """The record of `build`'s current attempt, read inside a guarded transaction."""
    text = pipe.hget(keys.build_attempts(build.id), str(build.attempt))
    if text:
        return Attempt.from_json(text)
    return Attempt(build.attempt, AttemptState.RUNNING, build.runner, build.started_at)


class Records:
    """Reads of builds by id. `Records(client)`."""

    def __init__(self, client: Client):
        self.r = client

    def get_build(self, build_id: str) -> Build | None:
        data = self.r.hgetall(keys.build(build_id))
        return Build.from_hash(data) if data else None

    def builds(self, build_ids: list[str]) -> list[Build]:
        """These builds, whole, in one round trip (those that exist, in the order given)."""
        with self.r.pipeline(transaction=False) as pipe:
            for build_id in build_ids:
                pipe.hgetall(keys.build(build_id))
            found = pipe.execute()
        return [Build.from_hash(data) for data in found if data]

    def light(self, build_ids: list[str]) -> list[Build]:
        """These builds without their output and jobs (LIGHT_FIELDS), in one round trip."""
        with self.r.pipeline(transaction=False) as pipe:
            for build_id in build_ids:
                pipe.hmget(keys.build(build_id), LIGHT_FIELDS)
            rows = pipe.execute()
        return [Build.from_hash({k: v for k, v in zip(LIGHT_FIELDS, values, strict=True) if v is not None})
                for values in rows if values[0] is not None]

    def fields(self, build_ids: list[str], fields: tuple[str, ...]) -> list[Build]:
        """Builds with only `fields` read (the rest at their defaults); those that are gone are left out."""
        with self.r.pipeline(transaction=False) as pipe:
            for build_id in build_ids:
                pipe.hmget(keys.build(build_id), fields)
            found = pipe.execute()
        return [Build.from_hash({"id": build_id, **{k: v for k, v in zip(fields, values, strict=True) if v}})
                for build_id, values in zip(build_ids, found, strict=True) if values[0] is not None]

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

    def get_shards(self, build_id: str) -> list[Shard]:
        found = self.r.hgetall(keys.build_shards(build_id))
        return [Shard.from_json(found[k]) for k in sorted(found, key=int)]

    def get_legs(self, build_id: str) -> list[Build]:
        """The matrix legs of a build's current attempt, in the matrix's order (none: it has no matrix)."""
        build = self.get_build(build_id)
        return self.builds(leg_ids(build)) if build is not None else []

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
        builds: dict[tuple[str, str], list[str]] = {}  # (sha, repo) -> the index's places: its own, pull requests'
        for sha, where in map(keys.split_commit_member, members):
            builds.setdefault((sha, keys.commit_repo(where)), []).append(where)
        matches = sorted(builds)
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
        # The commit's own build when it has one; else the newest pull request's build of it as a head.
        places = sorted(builds[matches[0]], key=lambda w: (w != found_repo, -int(w.partition(":pr")[2] or 0)))
        return keys.commit_build(sha, places[0])

    def running_builds(self) -> list[Build]:
        return self.builds(sorted(self.r.smembers(keys.running())))

    def queued_builds(self) -> list[Build]:
        return self.builds(sorted(self.r.smembers(keys.queued())))

    def busy(self) -> bool:
        """Whether a build is running or waiting."""
        return bool(self.r.scard(keys.running()) or self.r.scard(keys.queued()))
