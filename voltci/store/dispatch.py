"""Keeping the one rq queue in dispatch order (dispatch.py), and culprit finding in pushes (bisect.py).

Whenever a build is queued or ends, `dispatch()` reads the queue's list and what its order depends on
— each waiting build's tier (re-dispatched, waited for, head of a branch, next midpoint of a culprit
search, backlog), its repository's priority and runner time in the last `fair_window` — and rewrites
the list in that order in one transaction that watches it: a runner taking a job meanwhile makes it
read and decide again. Runners still pop the front of the list, so a plain `rq worker` follows the
same order. The acting scheduler does it again every few seconds, for what changes with time alone.

When a build ends, `settle` looks at its push (and at any push it is the base of): once the first
failing commit and its good parent are known, every failing build of the push from it on records it
(`first_failing`, shown by reports, pages and webhook messages), and the webhook is told. A push
whose builds and base have all ended is forgotten.

With `dispatch = "fifo"` the queue stays in the order builds were queued (the observer's pushes
oldest first); culprits are still named once the builds in order reach them.
"""

from __future__ import annotations

import json
import logging
import time

import redis

from voltci import jobqueue, keys
from voltci.bisect import Hunt, Known, hunt, known
from voltci.dispatch import Placed, Priority, Share, Tier, Waiting, plan
from voltci.models import Build, FirstFailing, Push, QueuedFor, Status
from voltci.store.transitions import OUTBOX_KEPT, Transitions, epoch
from voltci.store.tx import Txn, guarded

log = logging.getLogger("volt.dispatch")
MAX_ORDERED = 20_000  # jobs at the front of the queue kept in order; any beyond them wait as they are
# What ordering reads of a waiting build (a whole record is ten times as much to read, for each of them).
ORDER_FIELDS = ("repo", "commit", "branch", "status", "attempt", "queued_at", "waiting_since", "queued_for", "push")
WANTED_WHY = {QueuedFor.NOTIFY.value: "someone waits for it (volt notify)",
              QueuedFor.WEBHOOK.value: "someone waits for it (the push webhook)",
              QueuedFor.REBUILD.value: "someone asked to build it again (Rebuild)"}


class Dispatch(Transitions):
    @property
    def fair(self) -> bool:
        return self.settings.dispatch == "fair"

    # ------------------------------------------------------------ the queue's order

    def dispatch(self) -> list[Placed]:
        """Rewrite the queue in dispatch order (nothing under `dispatch = "fifo"`); the order, with why."""
        if not self.fair:
            return []
        key = jobqueue.queue_key(self.settings)

        def body(pipe: Txn) -> list[Placed]:
            ids = pipe.lrange(key, 0, MAX_ORDERED - 1)
            placed = self._plan(ids)
            order = [p.job_id for p in placed]
            if order != ids:
                pipe.multi()
                pipe.ltrim(key, len(ids), -1)  # what lies beyond the ones read stays behind them
                pipe.lpush(key, *reversed(order))
            return placed

        return guarded(self.r, [key], body)

    def dispatch_plan(self) -> list[Placed]:
        """The queue as it stands, each job with why it stands there (`volt status`)."""
        ids = jobqueue.waiting_in_order(self.r, self.settings, MAX_ORDERED)
        if self.fair:
            return self._plan(ids)
        builds = {b.id: b for b in self._builds([p[0] for p in map(keys.parse_job_id, ids) if p])}
        return [Placed(job_id, getattr(builds.get(found[0] if found else ""), "repo", ""), Tier.BACKLOG,
                       "in the order queued (dispatch = fifo)") for job_id, found in
                zip(ids, map(keys.parse_job_id, ids), strict=True)]

    def keep_order(self) -> None:
        """Put the queue in dispatch order; a failure costs a log line (it is done again soon)."""
        self._quietly("put the queue in dispatch order", self.dispatch)

    def after_enqueue(self) -> None:
        self.keep_order()

    def after_end(self, builds: list[Build]) -> None:
        self._quietly("settle culprit finding", lambda: self.settle(builds))
        self.keep_order()

    @staticmethod
    def _quietly(what: str, call) -> None:  # type: ignore[no-untyped-def]
        """What follows a change already made: a failure costs a log line (the scheduler does it again)."""
        try:
            call()
        except redis.RedisError as exc:
            log.warning("could not %s: %s", what, exc)

    def _plan(self, ids: list[str]) -> list[Placed]:
        now = time.time()
        parsed = [keys.parse_job_id(job_id) for job_id in ids]
        builds = {b.id: b for b in self._partial(sorted({p[0] for p in parsed if p and p[2] < 0}), ORDER_FIELDS)}
        waiting_builds = [b for b in builds.values() if b.status is Status.QUEUED]
        hunts = self._hunts({b.push for b in waiting_builds if b.push})
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

    def shares(self, now: float) -> dict[str, Share]:
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
        for build in self._partial(sorted(self.r.smembers(keys.running())), ("repo", "commit", "started_at")):
            started = epoch(build.started_at)
            if started is not None:
                used[build.repo] = used.get(build.repo, 0.0) + max(0.0, now - max(started, since))
        return {repo: Share(used.get(repo, 0.0), sum(lengths[repo]) / len(lengths[repo]) if repo in lengths else None)
                for repo in {*used, *lengths}}

    def _partial(self, build_ids: list[str], fields: tuple[str, ...]) -> list[Build]:
        """Builds with only `fields` read (the rest at their defaults); those that are gone are left out."""
        with self.r.pipeline(transaction=False) as pipe:
            for build_id in build_ids:
                pipe.hmget(keys.build(build_id), fields)
            found = pipe.execute()
        return [Build.from_hash({"id": build_id, **{k: v for k, v in zip(fields, values, strict=True) if v}})
                for build_id, values in zip(build_ids, found, strict=True) if values[0] is not None]

    def priorities(self) -> dict[str, Priority]:
        found = {}
        for name, entry in self.known_repos().items():
            word = entry.get("priority", "normal")
            found[name] = Priority(word) if word in Priority._value2member_map_ else Priority.NORMAL
        return found

    # ------------------------------------------------------------ culprit finding

    def get_push(self, push_id: str) -> Push | None:
        data = self.r.hgetall(keys.push(push_id))
        return Push.from_hash(data) if data else None

    def _hunts(self, push_ids: set[str]) -> dict[str, tuple[Push, Hunt]]:
        """Each push's record and where its culprit search stands."""
        found = {}
        for push_id in sorted(push_ids):
            push = self.get_push(push_id)
            if push is not None:
                base, states = self._states(push)
                found[push_id] = (push, hunt(base, states))
        return found

    def _states(self, push: Push) -> tuple[Known, list[Known]]:
        shas = [push.base, *push.commits] if push.base else push.commits
        with self.r.pipeline(transaction=False) as pipe:
            for sha in shas:
                pipe.hget(keys.build(keys.build_id(push.repo, sha)), "status")
            found = [known(Status(s) if s in Status._value2member_map_ else None) for s in pipe.execute()]
        return (found[0], found[1:]) if push.base else (Known.VOID, found)

    def settle(self, builds: list[Build]) -> list[FirstFailing]:
        """After `builds` ended: culprit finding in their pushes and in the pushes they are the base of.
        The first failing commits newly found."""
        push_ids = {b.push for b in builds if b.push}
        active = sorted(self.r.smembers(keys.pushes()))
        ended = {(b.repo, b.commit) for b in builds}
        if active and ended:
            with self.r.pipeline(transaction=False) as pipe:
                for push_id in active:
                    pipe.hmget(keys.push(push_id), "repo", "base")
                for push_id, (repo, base) in zip(active, pipe.execute(), strict=True):
                    if (repo, base) in ended:
                        push_ids.add(push_id)
        found = []
        for push_id in sorted(push_ids):
            first = self._settle_push(push_id)
            if first is not None:
                found.append(first)
        return found

    def _settle_push(self, push_id: str) -> FirstFailing | None:
        push = self.get_push(push_id)
        if push is None:
            self.r.srem(keys.pushes(), push_id)
            return None
        base, states = self._states(push)
        found = hunt(base, states)
        first = None
        to_mark: list[str] = []
        if found.culprit is not None:
            culprit = push.commits[found.culprit - 1]
            parent = push.commits[found.culprit - 2] if found.culprit > 1 else push.base
            record = self.get_build(keys.build_id(push.repo, culprit))
            if record is not None:
                first = FirstFailing(culprit, record.subject, record.author, parent)
            bad = [keys.build_id(push.repo, sha)
                   for n, (sha, state) in enumerate(zip(push.commits, states, strict=True), 1)
                   if state is Known.BAD and n >= found.culprit]
            marked = self._builds(bad)
            to_mark = [b.id for b in marked if b.first_failing is None or b.first_failing.commit != culprit]
        if first is None and not found.settled:
            return None
        news: list[FirstFailing] = []

        def body(pipe: Txn) -> None:
            known_culprit = pipe.hget(keys.push(push_id), "culprit")
            if known_culprit is None:
                return  # settled by another process meanwhile
            pipe.multi()
            if first is not None:
                for build_id in to_mark:
                    pipe.hset(keys.build(build_id), "first_failing", first.to_json())
                if known_culprit != first.commit:
                    pipe.hset(keys.push(push_id), "culprit", first.commit)
                    pipe.lpush(keys.outbox(), json.dumps({"build": keys.build_id(push.repo, first.commit),
                                                          "event": "culprit.found"}))
                    pipe.ltrim(keys.outbox(), 0, OUTBOX_KEPT - 1)
                    news.append(first)
            if found.settled:
                pipe.delete(keys.push(push_id))
                pipe.srem(keys.pushes(), push_id)

        guarded(self.r, [keys.push(push_id), *(keys.build(b) for b in to_mark)], body)
        for first in news:
            log.info("%s %s: %s (its parent %s passed); the rest of the push is built as backlog", push.repo,
                     push.branch, first.line(), first.parent[:10] or "-")
        return news[0] if news else None
