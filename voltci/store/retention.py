"""Retention: ended builds beyond `keep_builds` per repository, or older than `keep_days`, are deleted —
every key of theirs, their history and commit-index entries, and their rq jobs — so Redis stops
growing with time. Queued and running builds, and the newest build of each branch, are never pruned.
A repository's aggregates (test timings, flaky counts) are not per build and stay; its test trail
(trail.py) loses the columns of the builds pruned.

The acting scheduler prunes a bounded batch per pass (its pass costs the same however long the
history is); `volt prune` does it all at once. Pruning only deletes, so it works — and frees
memory — even when Redis is full.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from voltci import jobqueue, keys
from voltci.clock import parse
from voltci.models import Build
from voltci.store.records import Records
from voltci.store.repos import Repos
from voltci.store.tx import Client, Txn, guarded

BATCH = 200
DAY_S = 86400.0


@dataclass(frozen=True)
class Policy:
    """How much history to keep; 0 is no limit."""

    keep_builds: int = 0
    keep_days: float = 0

    @property
    def limited(self) -> bool:
        return self.keep_builds > 0 or self.keep_days > 0


def build_keys(build: Build, legs: list[Build] | None = None) -> list[str]:
    """Every key a build (or matrix leg) may have, and those of its `legs`, of every attempt."""
    found = [keys.build(build.id), keys.build_results(build.id), keys.build_tests(build.id),
             keys.build_attempts(build.id), keys.build_shards(build.id), keys.build_shard_plan(build.id),
             keys.build_log(build.id), keys.build_statuses(build.id)]
    found += [keys.build_shard_tests(build.id, n) for n in range(build.shards)]
    for leg in legs or []:
        found += build_keys(leg)
    return found


def build_jobs(build: Build, legs: list[Build] | None = None) -> list[str]:
    """Every rq job a build had: those it recorded, and one per attempt (builds from before it recorded them),
    and its legs' of every attempt."""
    found = {*build.jobs, *(keys.job_id(build.id, n) for n in range(1, build.attempt + 1))}
    for leg in legs or []:
        found.update(build_jobs(leg))
    return sorted(found)


def all_leg_ids(build: Build) -> list[str]:
    """The matrix legs of every attempt of `build`, as its jobs name them (it records each leg's first)."""
    units = (keys.parse_job_id(job) for job in build.jobs)
    return sorted({unit[0] for unit in units if unit and keys.parent_of(unit[0]) == build.id})


class Retention:
    """Pruning by a Policy. `Retention(client, records, repos)`."""

    def __init__(self, client: Client, records: Records, repos: Repos):
        self.r = client
        self.records = records
        self.repos = repos

    def candidates(self, repo: str, policy: Policy, limit: int | None = None,
                   now: float | None = None) -> list[Build]:
        """The builds of `repo` that `policy` removes, oldest first (at most `limit`)."""
        if not policy.limited:
            return []
        now = time.time() if now is None else now
        history = keys.repo_history(repo)
        with self.r.pipeline(transaction=False) as pipe:
            pipe.hvals(keys.repo_heads(repo))
            pipe.zcard(history)
            heads, total = pipe.execute()
        protected = set(heads)
        want = (total if limit is None else limit) + len(protected)
        over = total - policy.keep_builds if policy.keep_builds else 0
        by_count = self.r.zrange(history, 0, min(over, want) - 1) if over > 0 else []
        cutoff = now - policy.keep_days * DAY_S
        by_age = self.r.zrangebyscore(history, "-inf", f"({cutoff}", start=0, num=want) if policy.keep_days else []
        ids = list(dict.fromkeys([*by_count, *by_age]))  # oldest first, once each
        counted = set(by_count)
        found = []
        for build in self.records.builds(ids):
            if build.id in protected or not build.status.is_final:
                continue
            if build.id not in counted and _after(build.finished_at or build.queued_at, cutoff):
                continue  # older by its first queueing, but ended recently (rebuilt): not yet
            found.append(build)
        return found if limit is None else found[:limit]

    def prune_repo(self, repo: str, policy: Policy, dry_run: bool = False, limit: int | None = None,
                   now: float | None = None) -> list[Build]:
        """Prune `repo` (at most `limit` builds); the builds removed (or, dry, that would be)."""
        candidates = self.candidates(repo, policy, limit, now)
        if dry_run:
            return candidates
        removed: list[Build] = []
        for start in range(0, len(candidates), BATCH):
            removed += self.delete(candidates[start:start + BATCH])
        return removed

    def prune(self, policy: Policy, repo: str | None = None, dry_run: bool = False) -> dict[str, list[Build]]:
        """Prune one repository or all of them now: repository -> the builds removed (or that would be)."""
        repos = [repo] if repo is not None else sorted(self.repos.known())
        return {name: self.prune_repo(name, policy, dry_run) for name in repos}

    def delete(self, builds: list[Build]) -> list[Build]:
        """Delete these builds — every key, their index entries and rq jobs — in one guarded transaction,
        each only if it has still ended by then; the builds deleted."""
        if not builds:
            return []

        def body(pipe: Txn) -> list[Build]:
            current = [b for b in self.records.builds([b.id for b in builds]) if b.status.is_final]
            legs = {b.id: self.records.builds(all_leg_ids(b)) for b in current}
            pipe.multi()
            for build in current:
                self._delete_build(pipe, build, legs[build.id])
            jobqueue.delete_jobs(self.r, [job for build in current for job in build_jobs(build, legs[build.id])], pipe)
            return current

        return guarded(self.r, [keys.build(b.id) for b in builds], body)

    @staticmethod
    def _delete_build(pipe: Txn, build: Build, legs: list[Build]) -> None:
        pipe.delete(*build_keys(build, legs))
        pipe.zrem(keys.repo_history(build.repo), build.id)
        pipe.hdel(keys.repo_trail(build.repo), build.id)
        pipe.zrem(keys.repo_trail_order(build.repo), build.id)
        pipe.zrem(keys.history(), build.id)
        pipe.zrem(keys.commits(), keys.commit_member(build.commit, build.repo, build.pull_number))
        pipe.srem(keys.queued(), build.id)
        pipe.srem(keys.running(), build.id)
        pipe.zrem(keys.statuses_due(), build.id)  # a build pruned before a forge took its statuses: none to send
        pipe.zrem(keys.statuses_sending(), build.id)


def _after(iso: str, cutoff: float) -> bool:
    moment = parse(iso)
    return moment is not None and moment.timestamp() >= cutoff
