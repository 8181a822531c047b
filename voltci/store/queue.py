"""Keeping the one rq queue in dispatch order (voltci/dispatch.py), and rq's view of it.

Whenever a build is queued or ends, `reorder()` reads the queue's list and what its order depends on
— each waiting build's tier (re-dispatched, waited for, head of a branch, next midpoint of a culprit
search, backlog), its repository's priority and runner time in the last `fair_window` — and rewrites
the list in that order in one transaction that watches it: a runner taking a job meanwhile makes it
read and decide again. Runners still pop the front of the list, so a plain `rq worker` follows the
same order. The acting scheduler does it again every few seconds, for what changes with time alone.

When builds end, `ended` first settles culprit finding in their pushes (pushes.py), whose next
midpoints go first, then reorders. With `dispatch = "fifo"` the queue stays in the order builds were
queued (the observer's pushes oldest first); culprits are still named once the builds in order reach
them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import redis

from voltci import jobqueue, keys
from voltci.bisect import Hunt
from voltci.config import Settings
from voltci.dispatch import FairShare, Placed, Priority, Tier, Waiting, plan
from voltci.models import Build, Push, QueuedFor, Status
from voltci.store.endings import epoch
from voltci.store.pushes import Pushes
from voltci.store.records import Records
from voltci.store.repos import Repos
from voltci.store.tx import Client, Txn, guarded

log = logging.getLogger("volt.dispatch")
MAX_ORDERED = 20_000  # jobs at the front of the queue kept in order; any beyond them wait as they are
# What ordering reads of a waiting build (a whole record is ten times as much to read, for each of them).
ORDER_FIELDS = ("repo", "commit", "branch", "status", "attempt", "queued_at", "waiting_since", "queued_for", "push")
WANTED_WHY = {QueuedFor.NOTIFY.value: "someone waits for it (volt notify)",
              QueuedFor.WEBHOOK.value: "someone waits for it (a forge's webhook)",
              QueuedFor.REBUILD.value: "someone asked to build it again (Rebuild)",
              QueuedFor.APPROVED.value: "someone approved it (a pull request's head)"}


class Queue:
    """The queue's order. `Queue(client, settings, records, repos, pushes)`: it reads waiting builds
    through `records`, priorities through `repos`, culprit searches through `pushes`."""

    def __init__(self, client: Client, settings: Settings, records: Records, repos: Repos, pushes: Pushes):
        self.r = client
        self.settings = settings
        self.records = records
        self.repos = repos
        self.pushes = pushes

    @property
    def fair(self) -> bool:
        return self.settings.dispatch == "fair"

    # ------------------------------------------------------------ the queue's order

    def reorder(self) -> list[Placed]:
        """Rewrite the queue in dispatch order (nothing under `dispatch = "fifo"`); the order, with why."""
        if not self.fair:
            return []
        key = jobqueue.queue_key(self.settings)

        def body(pipe: Txn) -> list[Placed]:
            ids = pipe.lrange(key, 0, MAX_ORDERED - 1)
            placed = self._placed(ids)
            order = [p.job_id for p in placed]
            if order != ids:
                pipe.multi()
                pipe.ltrim(key, len(ids), -1)  # what lies beyond the ones read stays behind them
                pipe.lpush(key, *reversed(order))
            return placed

        return guarded(self.r, [key], body)

    def plan(self) -> list[Placed]:
        """The queue as it stands, each job with why it stands there (`volt status`)."""
        ids = jobqueue.waiting_in_order(self.r, self.settings, MAX_ORDERED)
        if self.fair:
            return self._placed(ids)
        builds = {b.id: b for b in self.records.builds([p[0] for p in map(keys.parse_job_id, ids) if p])}
        return [Placed(job_id, getattr(builds.get(found[0] if found else ""), "repo", ""), Tier.BACKLOG,
                       "in the order queued (dispatch = fifo)") for job_id, found in
                zip(ids, map(keys.parse_job_id, ids), strict=True)]

    def keep_order(self) -> None:
        """Put the queue in dispatch order; a failure costs a log line (it is done again soon)."""
        self._quietly("put the queue in dispatch order", self.reorder)

    def enqueued(self) -> None:
        """A build was queued: the queue goes back in dispatch order."""
        self.keep_order()

    def ended(self, *build_ids: str) -> None:
        """These builds ended: culprit finding in their pushes, and the queue back in dispatch order."""
        builds = self.records.builds(list(build_ids))
        self._quietly("settle culprit finding", lambda: self.pushes.settle(builds))
        self.keep_order()

    @staticmethod
    def _quietly(what: str, call: Callable[[], Any]) -> None:
        """What follows a change already made: a failure costs a log line (the scheduler does it again)."""
        try:
            call()
        except redis.RedisError as exc:
            log.warning("could not %s: %s", what, exc)

    def _placed(self, ids: list[str]) -> list[Placed]:
        now = time.time()
        parsed = [keys.parse_job_id(job_id) for job_id in ids]
        builds = {b.id: b for b in self.records.fields(sorted({p[0] for p in parsed if p and p[2] < 0}), ORDER_FIELDS)}
        waiting_builds = [b for b in builds.values() if b.status is Status.QUEUED]
        hunts = self.pushes.hunts({b.push for b in waiting_builds if b.push})
        repos = sorted({b.repo for b in waiting_builds})
        with self.r.pipeline(transaction=False) as pipe:
            for repo in repos:
                pipe.hgetall(keys.repo_heads(repo))
            heads = dict(zip(repos, pipe.execute(), strict=True))
        waiting = []
        for job_id, found in zip(ids, parsed, strict=True):
            build = builds.get(found[0]) if found else None
            if found is None:
                waiting.append(Waiting(job_id, "", Tier.FIRST, "not a job of Volt's: a runner refuses it at once"))
            elif found[2] >= 0:
                waiting.append(Waiting(job_id, "", Tier.FIRST, f"shard {found[2]} of a running build"))
            elif build is None or build.status is not Status.QUEUED or build.attempt != found[1]:
                waiting.append(Waiting(job_id, build.repo if build else "", Tier.FIRST,
                                       "its attempt no longer runs: a runner drops it at once"))
            elif build.queued_for == QueuedFor.LOST.value:
                waiting.append(Waiting(job_id, build.repo, Tier.FIRST,
                                       f"re-dispatched (attempt {build.attempt}): its runner was lost"))
            else:
                waiting.append(self._standing(job_id, build, hunts, heads.get(build.repo, {})))
        return plan(waiting, self.shares(now), self.priorities(), self.settings.fair_window)

    @staticmethod
    def _standing(job_id: str, build: Build, hunts: dict[str, tuple[Push, Hunt]], heads: dict[str, str]) -> Waiting:
        since = epoch(build.waiting_since or build.queued_at) or 0.0
        if build.queued_for in WANTED_WHY:
            return Waiting(job_id, build.repo, Tier.WANTED, WANTED_WHY[build.queued_for], (since, 0, build.id))
        if heads.get(build.branch) == build.id:
            return Waiting(job_id, build.repo, Tier.HEAD, f"head of {build.branch}", (since, 0, build.id))
        if build.push in hunts:
            push, found = hunts[build.push]
            position = push.commits.index(build.commit) + 1 if build.commit in push.commits else 0
            pushed = epoch(push.queued_at) or since
            rank = found.order.index(position) if position in found.order else len(push.commits)
            if found.next == position and found.range is not None:
                lo, hi = found.range
                good = push.commits[lo - 1][:10] if lo else (push.base[:10] or "the base")
                return Waiting(job_id, build.repo, Tier.HEAD,
                               f"culprit finding: the midpoint of {hi - lo - 1} unknown commit(s) between {good} "
                               f"(passed) and {push.commits[hi - 1][:10]} (failed)", (pushed, rank, build.id))
            what = "after its culprit was found" if push.culprit else "halving order"
            return Waiting(job_id, build.repo, Tier.BACKLOG,
                           f"backlog of the push up to {push.commits[-1][:10]} ({what})", (pushed, rank, build.id))
        return Waiting(job_id, build.repo, Tier.BACKLOG, "backlog", (since, 0, build.id))

    def shares(self, now: float) -> dict[str, FairShare]:
        """Each repository's runner time in the last `fair_window` seconds (ended attempts and running
        builds), and how long its builds usually take."""
        window = self.settings.fair_window
        since = now - window
        used: dict[str, float] = {}
        lengths: dict[str, list[float]] = {}
        for member in self.r.zrangebyscore(keys.runtime(), since, "+inf"):
            try:
                build_id, _attempt, start, end = member.split(" ")
                start_s, end_s = float(start), float(end)
            except ValueError:
                continue
            repo = build_id.rsplit("-", 1)[0]
            used[repo] = used.get(repo, 0.0) + max(0.0, end_s - max(start_s, since))
            lengths.setdefault(repo, []).append(max(0.0, end_s - start_s))
        for build in self.records.fields(sorted(self.r.smembers(keys.running())), ("repo", "commit", "started_at")):
            started = epoch(build.started_at)
            if started is not None:
                used[build.repo] = used.get(build.repo, 0.0) + max(0.0, now - max(started, since))
        return {repo: FairShare(used.get(repo, 0.0),
                                sum(lengths[repo]) / len(lengths[repo]) if repo in lengths else None)
                for repo in {*used, *lengths}}

    def priorities(self) -> dict[str, Priority]:
        found = {}
        for name, entry in self.repos.known().items():
            word = entry.get("priority", "normal")
            found[name] = Priority(word) if word in Priority._value2member_map_ else Priority.NORMAL
        return found

    # ------------------------------------------------------------ rq's view (jobqueue.py owns rq's client)

    def depth(self) -> int:
        return jobqueue.queue_depth(self.r, self.settings)

    def place(self, build: Build) -> int | None:
        """Where a queued build stands in the queue (1: next), if it is among the first ten thousand."""
        return jobqueue.job_place(self.r, self.settings, keys.job_id(build.id, build.attempt))

    def waiting_job_ids(self, queues: list[str] | None = None) -> set[str]:
        return jobqueue.waiting_job_ids(self.r, self.settings, queues)

    def job_states(self, job_ids: list[str]) -> dict[str, tuple[str, str]]:
        return jobqueue.job_states(self.r, job_ids)
