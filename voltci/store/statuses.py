"""Commit statuses to send: which builds have news for their forge, and what each forge was last told.

A build's commit statuses are made from its record when they are sent (commitstatus.py), so what
waits is not a message per status but the build's id, once, in a sorted set scored by when to look
at it (`keys.statuses_due`). Every change a forge should hear of — queued, started, a first failing
test, legs split, ended — adds the id in the transaction that makes the change (`mark`, one ZADD in
the caller's pipeline): however often a build changes, it waits once, and what is sent is its newest
state, so a late `pending` can never follow its final status. A progress update adds it only if it
does not wait already (NX), a change of state brings it forward (LT).

The acting scheduler's sender (statuses.py) takes due ids into `sending` (so a sender that dies
mid-send loses none: the next one moves them back), and when done removes them, or puts them back
for later (a forge that is down, a progress update held back). What each forge took is kept per
build (`keys.build_statuses`: context -> state, description, when, how many), removed with the build.

Bounded: one member per build that has news (builds are bounded by retention), one field per context
(a build and at most commitstatus.LEG_CONTEXTS_MAX legs). Past WAITING_MAX waiting, `trim` drops the
ids of builds that have not ended — they lose a `pending` at most, and mark themselves again when
they end — and never an ended build's.
"""

from __future__ import annotations

import json
import time
from typing import Any

from voltci import keys
from voltci.store import metrics
from voltci.store.tx import Client, Txn

WAITING_MAX = 20_000
TOLD_TTL_S = 90 * 24 * 3600  # what a forge was told outlives no build (retention removes it with its build)


def mark(pipe: Txn, unit_id: str, urgent: bool = True, now: float | None = None) -> None:
    """In the caller's transaction: the build of `unit_id` (a matrix leg's build, for a leg) has news
    for its commit statuses. `urgent`: a new state, to be sent at once; else a progress update, which
    keeps its place if the build waits already."""
    build_id = keys.parent_of(unit_id) or unit_id
    score = time.time() if now is None else now
    if urgent:
        pipe.zadd(keys.statuses_due(), {build_id: score}, lt=True)
    else:
        pipe.zadd(keys.statuses_due(), {build_id: score}, nx=True)


class Statuses:
    """The sender's side of the builds waiting to tell their forge. `Statuses(client)`."""

    def __init__(self, client: Client):
        self.r = client

    def announce(self, build_id: str) -> None:
        """`build_id` has news for its forge, outside any transaction of the caller's."""
        with self.r.pipeline() as pipe:
            mark(pipe, build_id)
            pipe.execute()

    def announce_pull(self, repo: str, number: int) -> None:
        """Pull request `number` of `repo` waits for approval: its forge is to be told on its head (the
        sender reads the pull request's state when it sends, so one approved meanwhile is told nothing)."""
        self.r.zadd(keys.statuses_due(), {keys.pull_status_member(repo, number): time.time()}, lt=True)

    def take(self, now: float, limit: int = 50) -> list[str]:
        """The ids of builds due by `now` (at most `limit`, longest waiting first), moved to `sending`."""
        ids = self.r.zrangebyscore(keys.statuses_due(), "-inf", now, start=0, num=limit)
        if ids:
            with self.r.pipeline() as pipe:  # one transaction: an id is in one of the two sets
                pipe.zadd(keys.statuses_sending(), dict.fromkeys(ids, now))
                pipe.zrem(keys.statuses_due(), *ids)
                pipe.execute()
        return list(ids)

    def next_due(self) -> float | None:
        """When the next build is due (epoch s), or None when none waits."""
        first = self.r.zrange(keys.statuses_due(), 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    def done(self, build_id: str) -> None:
        """The forge was told everything `build_id` had to say when it was taken."""
        self.r.zrem(keys.statuses_sending(), build_id)

    def later(self, build_id: str, at: float) -> None:
        """Look at `build_id` again at `at` — or sooner, if news came meanwhile."""
        with self.r.pipeline() as pipe:
            pipe.zadd(keys.statuses_due(), {build_id: at}, lt=True)
            pipe.zrem(keys.statuses_sending(), build_id)
            pipe.execute()

    def recover(self, now: float | None = None, limit: int = 100_000) -> int:
        """Builds a sender was looking at when it stopped wait again, due now; how many."""
        now = time.time() if now is None else now
        moved = 0
        while moved < limit:
            ids = self.r.zrange(keys.statuses_sending(), 0, 999)
            if not ids:
                break
            for build_id in ids:
                self.later(build_id, now)
            moved += len(ids)
        return moved

    def waiting(self) -> int:
        """Builds whose forge has news coming: waiting, and being sent."""
        with self.r.pipeline(transaction=False) as pipe:
            pipe.zcard(keys.statuses_due())
            pipe.zcard(keys.statuses_sending())
            due, sending = pipe.execute()
        return int(due) + int(sending)

    def oldest(self, limit: int) -> list[str]:
        """The ids that wait longest (for `trim`)."""
        return list(self.r.zrange(keys.statuses_due(), 0, limit - 1))

    def drop(self, build_ids: list[str]) -> None:
        """Forget these waiting ids (builds that are gone, or have not ended, when too many wait)."""
        if build_ids:
            self.r.zrem(keys.statuses_due(), *build_ids)

    def told(self, build_id: str) -> dict[str, dict[str, Any]]:
        """Context -> what its forge was last told of `build_id` (state, description, key, at, n)."""
        found = {}
        for context, text in self.r.hgetall(keys.build_statuses(build_id)).items():
            try:
                value = json.loads(text)
            except ValueError:
                continue
            if isinstance(value, dict):
                found[context] = value
        return found

    def record_told(self, build_id: str, context: str, told: dict[str, Any]) -> None:
        """Remember what the forge took (or refused for good) for `context` of `build_id`."""
        key = keys.build_statuses(build_id)
        with self.r.pipeline() as pipe:
            pipe.hset(key, context, json.dumps(told))
            pipe.expire(key, TOLD_TTL_S)
            pipe.execute()

    def count(self, forge: str, result: str, times: int = 1) -> None:
        """Count statuses for /metrics by forge kind and result (sent, retried, refused)."""
        with self.r.pipeline() as pipe:
            metrics.count_status(pipe, forge, result, times)
            pipe.execute()
