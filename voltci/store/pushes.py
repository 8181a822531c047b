"""Culprit finding in pushes (bisect.py): where each push's search stands, and, once a build ends, what
it settles.

When a build ends, `settle` looks at its push (and at any push it is the base of): once the first
failing commit and its good parent are known, every failing build of the push from it on records it
(`first_failing`, shown by reports, pages and webhook messages), and the webhook is told. A push
whose builds and base have all ended is forgotten. The queue's order reads `hunts` to put each
search's next midpoint first.
"""

from __future__ import annotations

import logging

from voltci import keys
from voltci.bisect import Hunt, Known, hunt, known
from voltci.models import Build, FirstFailing, Push, Status
from voltci.store import outbox
from voltci.store.records import Records
from voltci.store.tx import Client, Txn, guarded

log = logging.getLogger("volt.dispatch")


class Pushes:
    """Pushes and their culprit search. `Pushes(client, records)`."""

    def __init__(self, client: Client, records: Records):
        self.r = client
        self.records = records

    def get(self, push_id: str) -> Push | None:
        data = self.r.hgetall(keys.push(push_id))
        return Push.from_hash(data) if data else None

    def hunts(self, push_ids: set[str]) -> dict[str, tuple[Push, Hunt]]:
        """Each push's record and where its culprit search stands."""
        found = {}
        for push_id in sorted(push_ids):
            push = self.get(push_id)
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
        push = self.get(push_id)
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
            record = self.records.get_build(keys.build_id(push.repo, culprit))
            if record is not None:
                first = FirstFailing(culprit, record.subject, record.author, parent)
            bad = [keys.build_id(push.repo, sha)
                   for n, (sha, state) in enumerate(zip(push.commits, states, strict=True), 1)
                   if state is Known.BAD and n >= found.culprit]
            marked = self.records.builds(bad)
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
                    outbox.put(pipe, {"build": keys.build_id(push.repo, first.commit), "event": "culprit.found"})
                    news.append(first)
            if found.settled:
                pipe.delete(keys.push(push_id))
                pipe.srem(keys.pushes(), push_id)

        guarded(self.r, [keys.push(push_id), *(keys.build(b) for b in to_mark)], body)
        for first in news:
            log.info("%s %s: %s (its parent %s passed); the rest of the push is built as backlog", push.repo,
                     push.branch, first.line(), first.parent[:10] or "-")
        return news[0] if news else None
