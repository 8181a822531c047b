"""Dispatch against a real Redis: the rq queue kept in order (tiers, priorities, fair share), culprit
finding inside a push and what it records, interrupting, `volt status` — and, with real `volt worker`
processes and a real observer, the issue's scenario in small."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import redis
from cluster import Cluster
from dispatch_scene import Scene
from support import run_volt, wait_until

from voltci import keys, report
from voltci.dispatch import Priority
from voltci.models import QueuedFor, Status
from voltci.observer import RepoWatch
from voltci.store import Store


@pytest.fixture
def scene(conn, settings) -> Scene:
    return Scene(conn, settings)


def test_the_head_goes_first_then_midpoints_and_the_culprit_is_named(scene: Scene) -> None:
    scene.repo("C")
    (base,) = scene.push("C", 1)
    scene.run_one({})  # the base passed
    builds = scene.push("C", 15, start=1)  # commits "C 2" … "C 16": the 12th of the push, "C 13", breaks
    assert scene.order()[0] == "C 16"
    broken = {"C": 13}
    steps = []
    while True:
        steps.append(scene.run_one(broken).subject)
        if scene.store.records.get_build(builds[-1].id).first_failing is not None:
            break
        assert len(steps) < 15
    assert steps == ["C 16", "C 8", "C 12", "C 14", "C 13"]  # head, then halving the unknown range
    head = scene.store.records.get_build(builds[-1].id)
    first = head.first_failing
    assert (first.commit, first.parent, first.subject) == (builds[11].commit, builds[10].commit, "C 13")
    assert f"first failing commit: {builds[11].commit[:10]} C 13 by Ann <ann@volt.invalid>" in report.as_text(
        head, [], [])
    assert report.as_dict(head, [], [])["first_failing_commit"]["commit"] == builds[11].commit
    outbox = [json.loads(m) for m in scene.conn.lrange(keys.outbox(), 0, -1)]
    assert {"build": builds[11].id, "event": "culprit.found"} in outbox
    while scene.run_one(broken) is not None:  # the rest of the push: built all the same
        pass
    ended = {b.subject: b for b in scene.store.history.builds("C", 50)}
    assert all(b.status.is_final for b in ended.values()) and len(ended) == 16
    assert all(ended[f"C {n}"].first_failing.commit == builds[11].commit for n in range(13, 17))
    assert all(ended[f"C {n}"].first_failing is None for n in range(2, 13))
    assert not scene.conn.exists(keys.push(builds[-1].id)) and not scene.conn.smembers(keys.pushes())


def test_a_newcomers_first_build_waits_for_at_most_one_build_of_a_backlog(scene: Scene) -> None:
    for name in "ABC":
        scene.repo(name)
        scene.push(name, 1)
        scene.run_one({})
    scene.push("C", 15, start=1)
    scene.run_one({"C": 13})  # C's head runs while the others push
    scene.push("A", 12, start=1)
    scene.push("B", 1, start=1)
    a_started = 0
    while (build := scene.run_one({"C": 13})).repo != "B":
        a_started += build.repo == "A"
    assert a_started <= 1


def test_waited_for_builds_and_rebuilds_go_before_heads_and_backlog(scene: Scene) -> None:
    scene.repo("A")
    scene.repo("B")
    scene.push("A", 1)
    scene.run_one({})
    scene.push("A", 4, start=1)
    (wanted,) = scene.push("B", 1, wanted=QueuedFor.NOTIFY)
    assert scene.order()[0] == "B 1"
    assert "someone waits for it (volt notify)" in scene.store.queue.plan()[0].why
    old = scene.store.history.builds("A", 50)[-1]
    assert scene.store.builds.rebuild(old.id) is not None
    assert scene.order()[:2] == ["B 1", "A 1"] or scene.order()[:2] == ["A 1", "B 1"]
    assert {p.why.split(";")[0] for p in scene.store.queue.plan()[:2]} == {
        "someone waits for it (volt notify)", "someone asked to build it again (Rebuild)"}
    head = scene.store.history.latest_build("A", "main")
    assert scene.store.builds.want(head.id, QueuedFor.NOTIFY)  # a notification for a commit already queued
    assert set(scene.order()[:3]) == {"B 1", "A 1", head.subject}
    assert not scene.store.builds.want(head.id, QueuedFor.NOTIFY)  # once


def test_re_dispatched_attempts_stay_first(scene: Scene) -> None:
    scene.repo("A")
    scene.push("A", 1)
    build = scene.take()
    scene.push("A", 3, start=1)
    assert scene.store.builds.redispatch(build.id, 1, "runner lost") == "requeued"
    scene.push("A", 2, start=4)
    plan = scene.store.queue.plan()
    assert scene.order()[0] == "A 1" and plan[0].why.startswith("re-dispatched (attempt 2)")


def test_a_high_priority_repository_goes_first_within_a_tier(scene: Scene) -> None:
    scene.repo("low", Priority.LOW)
    scene.repo("high", Priority.HIGH)
    scene.repo("normal")
    for name in ("low", "normal", "high"):
        scene.push(name, 1)
    assert scene.order() == ["high 1", "normal 1", "low 1"]


def test_fifo_dispatch_leaves_the_queue_as_queued(conn, settings) -> None:
    scene = Scene(conn, replace(settings, dispatch="fifo"))
    scene.repo("A")
    scene.repo("B")
    scene.push("A", 3)
    scene.push("B", 1)
    assert scene.order() == ["A 1", "A 2", "A 3", "B 1"]  # as queued: each push oldest first
    assert {p.why for p in scene.store.queue.plan()} == {"in the order queued (dispatch = fifo)"}


def test_interrupt_cancels_the_older_running_builds_of_the_branch_and_says_why(scene: Scene) -> None:
    scene.repo("A")
    scene.push("A", 1)
    running = scene.take()
    (other,) = scene.push("A", 1, start=5, branch="other")
    other_running = scene.take()
    (newest,) = scene.push("A", 1, start=1)
    stopped = scene.store.builds.interrupt(newest)
    assert [b.id for b in stopped] == [running.id]
    ended = scene.store.records.get_build(running.id)
    assert ended.status is Status.CANCELLED
    assert ended.reason == f"interrupted: superseded by {newest.short}, a newer commit of main (--interrupt)"
    assert scene.store.records.get_build(other_running.id).status is Status.RUNNING


def test_volt_status_shows_each_queued_builds_position_and_why(scene: Scene, settings) -> None:
    scene.repo("A")
    scene.repo("B")
    scene.push("A", 1)
    scene.run_one({}, seconds=0.05)  # A has had runner time; B none
    scene.push("A", 4, start=1)
    scene.push("B", 1)
    proc = run_volt("status", "--redis-url", settings.effective_redis_url)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip()[:2].rstrip(".").isdigit()]
    assert len(lines) == 5
    assert "1. B" in lines[0] and "head of main" in lines[0]
    assert "2. A" in lines[1] and "head of main" in lines[1]
    assert "backlog of the push" in lines[2]
    data = json.loads(run_volt("status", "--json", "--redis-url", settings.effective_redis_url).stdout)
    assert [q["position"] for q in data["queue_order"]] == [1, 2, 3, 4, 5]
    assert data["queue_order"][0]["repo"] == "B" and data["queue_order"][0]["tier"] == "head"


def test_observer_options_bad_input_is_one_line(settings, make_repo) -> None:
    repo = make_repo()
    repo.commit({"a": "1"}, "a")
    url = ["--redis-url", settings.effective_redis_url, "--repo", str(repo.path)]
    bad = run_volt("observe", *url, "--priority", "urgent", "--once")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "unknown priority 'urgent'" in bad.stderr
    lone = run_volt("observe", *url, "--interrupt", "--once")
    assert lone.returncode == 2 and lone.stderr.count("\n") == 1 and "--interrupt needs --supersede" in lone.stderr
    good = run_volt("observe", *url, "--priority", "high", "--supersede", "main", "--interrupt", "--once")
    assert good.returncode == 0, good.stderr
    registered = redis.Redis.from_url(settings.effective_redis_url).hget(keys.repos(), "proj")
    assert json.loads(registered)["priority"] == "high"


# ---------------------------------------------------------------- real processes

BROKEN_FROM = 4  # in C's push of 5 commits, the 4th breaks the test


def commit_numbered(repo, n: int, broken: bool) -> str:
    test = ("import unittest\n\nclass T(unittest.TestCase):\n    def test_n(self):\n"
            f"        self.assertTrue({not broken})\n")
    return repo.commit({"test_n.py": test, "n.txt": str(n)}, f"commit {n}")


def test_with_real_runners_a_newcomer_goes_first_and_the_culprit_is_found_early(tmp_path, make_repo) -> None:
    cluster = Cluster(tmp_path, heartbeat=1.0, heartbeat_ttl=3.0)
    try:
        repos = {name: make_repo(name) for name in "ABC"}
        for repo in repos.values():
            commit_numbered(repo, 0, False)
        store = Store(cluster.conn, cluster.settings)
        watches = {}
        for name, repo in repos.items():
            watches[name] = RepoWatch(Store(cluster.rq_conn, cluster.settings), str(repo.path), name=name)
            watches[name].validate()
            watches[name].poll()
        cluster.worker("runner-1")
        wait_until(lambda: len(store.history.builds(None, 10)) == 3 and all(b.status.is_final for b in
                                                                            store.history.builds(None, 10)),
                   "the bases", 120)
        c = [commit_numbered(repos["C"], n, n >= BROKEN_FROM) for n in range(1, 6)]
        watches["C"].poll()
        a = [commit_numbered(repos["A"], n, False) for n in range(1, 5)]
        watches["A"].poll()
        repos["B"].commit({"b.txt": "1"}, "B's one commit")
        (b,) = watches["B"].poll()
        done = wait_until(lambda: (found := store.records.get_build(b.id)).status.is_final and found, "B's build", 180)
        a_between = [x for x in store.history.builds("A", 20)
                     if x.started_at and b.queued_at < x.started_at < done.started_at]
        assert len(a_between) <= 1
        head = keys.build_id("C", c[-1])
        wait_until(lambda: store.records.get_build(head).first_failing is not None, "C's culprit", 180)
        first = store.records.get_build(head).first_failing
        assert (first.commit, first.parent) == (c[BROKEN_FROM - 1], c[BROKEN_FROM - 2])
        c_builds = sorted((x for x in store.history.builds("C", 20) if x.started_at), key=lambda x: x.started_at)
        known_at = max(store.records.get_build(keys.build_id("C", s)).finished_at for s in (c[2], c[3]))
        assert len([x for x in c_builds if x.started_at <= known_at]) - 1 <= 3 + 2  # the base built before
        proc = run_volt("report", c[-1], "--repo", "C", env={"VOLT_REDIS_URL": cluster.settings.effective_redis_url})
        assert f"first failing commit: {c[3][:10]} commit 4 by Test Author" in proc.stdout
        wait_until(lambda: all(store.records.get_build(keys.build_id(n, s)).status.is_final
                               for n, shas in (("A", a), ("C", c)) for s in shas), "every commit built", 180)
    finally:
        cluster.stop()


def test_the_culprit_shows_on_the_page_and_in_the_webhook_message(scene: Scene, settings) -> None:
    from voltci.web import create_app
    from voltci.webhooks import message

    scene.repo("C")
    scene.push("C", 1)
    scene.run_one({})
    builds = scene.push("C", 4, start=1)  # C 2 … C 5; C 4 breaks
    while scene.run_one({"C": 4}) is not None:
        pass
    head = scene.store.records.get_build(builds[-1].id)
    page = create_app(settings).test_client().get(f"/build/C/{head.commit}").get_data(as_text=True)
    assert f"first failing commit: {builds[2].commit[:10]} C 4 by Ann &lt;ann@volt.invalid&gt;" in page
    sent = message(head, settings)
    assert sent["first_failing_commit"] == {"commit": builds[2].commit, "subject": "C 4",
                                            "author": "Ann <ann@volt.invalid>", "parent": builds[1].commit}
    assert message(scene.store.records.get_build(builds[0].id), settings)["first_failing_commit"] is None


def test_a_plain_rq_worker_builds_in_the_same_order(settings, make_repo, rq_conn, conn) -> None:
    """The order lives in the queue itself: `rq worker` without Volt's worker class follows it."""
    from support import run_rq_worker_burst

    repo = make_repo()
    commit_numbered(repo, 0, False)
    watch = RepoWatch(Store(rq_conn, settings), str(repo.path))
    watch.validate()
    watch.poll()
    assert run_rq_worker_burst(settings).returncode == 0
    shas = [commit_numbered(repo, n, n >= 3) for n in range(1, 6)]
    watch.poll()
    assert run_rq_worker_burst(settings).returncode == 0
    store = Store(conn)
    started = [b.commit for b in sorted(store.history.builds("proj", 10), key=lambda b: b.started_at)][1:]
    # the head fails, the midpoint 2 passes, 3 fails: the culprit; then the rest, halving order
    assert started == [shas[4], shas[1], shas[2], shas[0], shas[3]]
    assert store.records.get_build(keys.build_id("proj", shas[4])).first_failing.commit == shas[2]


SLOW = ("import time, unittest\n\nclass T(unittest.TestCase):\n    def test_slow(self):\n"
        "        time.sleep(60)\n")


def test_interrupt_stops_an_older_running_build_on_its_runner(tmp_path, make_repo) -> None:
    cluster = Cluster(tmp_path, heartbeat=1.0, heartbeat_ttl=3.0)
    try:
        repo = make_repo()
        repo.commit({"test_n.py": SLOW}, "slow")
        watch = RepoWatch(Store(cluster.rq_conn, cluster.settings), str(repo.path), supersede=["main"],
                          interrupt=True)
        watch.validate()
        (old,) = watch.poll()
        cluster.worker("runner-1")
        wait_until(lambda: cluster.build(old.id).status is Status.RUNNING, "the slow build to run")
        newer = commit_numbered(repo, 1, False)
        watch.poll()
        stopped = cluster.wait_final(old.id, timeout=30)
        assert stopped.status is Status.CANCELLED
        assert stopped.reason == f"interrupted: superseded by {newer[:10]}, a newer commit of main (--interrupt)"
        assert cluster.wait_final(keys.build_id("proj", newer), timeout=60).status is Status.PASSED
    finally:
        cluster.stop()
