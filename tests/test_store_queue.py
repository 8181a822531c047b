"""The queue part (store/queue.py) and the pushes part it is handed (store/pushes.py), on fakeredis: an
end settles culprit finding first, then reorders; a settle that fails costs a log line, not the order;
the order rewritten is the plan's, and rewriting it again changes nothing; fair share read from the
runner time recorded; a push's first failing commit named once, and the push forgotten once settled.
Scenes with a runner taking the queue's front are in test_dispatch.py."""

from __future__ import annotations

import json
import logging
import time

import fakeredis
import pytest
import redis
from support import outcome
from test_store_builds import Told

from voltci import jobqueue, keys
from voltci.config import Settings
from voltci.dispatch import FairShare, Tier
from voltci.models import Build, PointerUpdate, Push, Status
from voltci.store import Store
from voltci.store.queue import Queue
from voltci.store.records import Records
from voltci.store.repos import Repos


def sha(n: int) -> str:
    return f"{n:04x}".ljust(40, "c")


def build(repo: str, n: int, branch: str = "main") -> Build:
    return Build(id=keys.build_id(repo, sha(n)), repo=repo, url=f"/src/{repo}", commit=sha(n), branch=branch,
                 subject=f"{repo} {n}")


@pytest.fixture
def store() -> Store:
    return Store(fakeredis.FakeRedis(decode_responses=True), Settings(dispatch="fair"))


def queue_with(pushes: object) -> tuple[Queue, Store]:
    store = Store(fakeredis.FakeRedis(decode_responses=True), Settings(dispatch="fair"))
    return Queue(store.r, store.settings, Records(store.r), Repos(store.r), pushes), store  # type: ignore[arg-type]


def test_an_end_settles_its_pushes_first_then_reorders() -> None:
    told = Told()
    queue, store = queue_with(told)
    store.builds.submit(build("a", 1))
    reordered: list[str] = []
    queue.reorder = lambda: reordered.append("after " + str(len(told.calls)))  # type: ignore[assignment,method-assign]
    queue.ended(build("a", 1).id, "a-gone")
    assert [(name, [b.id for b in args[0]]) for name, args in told.calls] == [("settle", [build("a", 1).id])]
    assert reordered == ["after 1"]


def test_a_settle_that_fails_is_a_log_line_and_the_queue_is_still_reordered(caplog) -> None:
    class Down:
        def settle(self, builds: list[Build]) -> None:
            raise redis.ConnectionError("Redis went away")

    queue, store = queue_with(Down())
    reordered: list[bool] = []
    queue.reorder = lambda: reordered.append(True)  # type: ignore[assignment,method-assign]
    with caplog.at_level(logging.WARNING, logger="volt.dispatch"):
        queue.ended("a-1")
    assert reordered == [True] and "could not settle culprit finding: Redis went away" in caplog.text


def test_the_rq_list_is_rewritten_in_the_plans_order_once(store: Store) -> None:
    for repo in ("a", "b"):
        store.repos.register(repo, f"/src/{repo}", ["main"])
    store.builds.submit_push([build("a", n) for n in range(1, 5)], PointerUpdate("a", "main", sha(4)))
    store.builds.submit(build("b", 9))
    placed = store.queue.reorder()
    key = jobqueue.queue_key(store.settings)
    assert store.r.lrange(key, 0, -1) == [p.job_id for p in placed]
    assert [p.tier for p in placed] == sorted(p.tier for p in placed)  # tiers, strictly
    assert {p.repo for p in placed if p.tier is Tier.HEAD} == {"a", "b"}  # each branch's head before backlog
    assert store.queue.plan() == placed and store.queue.reorder() == placed  # nothing changed: the same order


def test_fifo_leaves_the_list_and_explains_it() -> None:
    store = Store(fakeredis.FakeRedis(decode_responses=True), Settings(dispatch="fifo"))
    for n in (1, 2):
        store.builds.submit(build("a", n))
    assert store.queue.reorder() == []
    assert [(p.job_id, p.why) for p in store.queue.plan()] == [
        (keys.job_id(build("a", n).id, 1), "in the order queued (dispatch = fifo)") for n in (1, 2)]
    assert store.queue.depth() == 2 and store.queue.waiting_job_ids() == {keys.job_id(build("a", n).id, 1)
                                                                         for n in (1, 2)}


def test_fair_share_is_the_runner_time_of_the_window_and_the_usual_length(store: Store) -> None:
    now = time.time()
    window = store.settings.fair_window
    store.r.zadd(keys.runtime(), {f"a-{sha(1)} 1 {now - 100:.3f} {now - 40:.3f}": now - 40,
                                  f"a-{sha(2)} 1 {now - 30:.3f} {now - 10:.3f}": now - 10,
                                  f"b-{sha(3)} 1 {now - window - 50:.3f} {now - window + 10:.3f}": now - window + 10})
    running = build("c", 4)
    store.builds.submit(running)
    store.builds.start_attempt(running.id, 1, "r1")
    shares = store.queue.shares(now + 5)
    assert shares["a"] == FairShare(pytest.approx(80.0, abs=0.01), pytest.approx(40.0, abs=0.01))
    assert shares["b"].used_s == pytest.approx(5.0, abs=0.01)  # only what falls inside the window counts
    assert shares["c"].used_s == pytest.approx(5.0, abs=1.0) and shares["c"].typical_s is None  # running: no length yet


def test_a_pushs_first_failing_commit_is_named_once_and_the_push_forgotten_when_settled(store: Store) -> None:
    commits = [build("a", n) for n in range(1, 5)]
    push = Push(commits[-1].id, "a", "main", "", [b.commit for b in commits])
    store.builds.submit_push(commits, PointerUpdate("a", "main", sha(4)), push)
    for n, status in ((1, Status.PASSED), (2, Status.FAILED), (3, Status.FAILED), (4, Status.FAILED)):
        store.builds.start_attempt(commits[n - 1].id, 1, "r1")
        store.builds.finish(commits[n - 1].id, 1, "r1", outcome(status))
    firsts = [store.records.get_build(b.id).first_failing for b in commits]
    assert firsts[0] is None and {f.commit for f in firsts[1:]} == {sha(2)}  # type: ignore[union-attr]
    assert firsts[1].parent == sha(1)  # type: ignore[union-attr]
    messages = [json.loads(m) for m in store.r.lrange(keys.outbox(), 0, -1)]
    assert [m for m in messages if m.get("event") == "culprit.found"] == [{"build": commits[1].id,
                                                                           "event": "culprit.found"}]
    assert store.pushes.get(push.id) is None and not store.r.sismember(keys.pushes(), push.id)
    assert store.pushes.settle(commits) == []  # settled: nothing new
