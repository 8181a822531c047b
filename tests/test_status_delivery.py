"""Commit statuses delivered to a forge double (a real HTTP server on loopback) by the scheduler's sender,
from builds whose state changes through the store on a real redis-server: in order, coalesced,
schema-valid, retried through an outage, refused answers logged once, the token kept out of Redis."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from forge_double import ForgeDouble
from support import SHA_A, SHA_B, outcome, wait_until

from voltci import keys
from voltci.forge import ForgeLink
from voltci.models import Build, Counts, RunOutcome, Status
from voltci.statuses import StatusSender
from voltci.store import Store

TOKEN = "ghp_s3cr3t-T0KEN-never-stored"


@pytest.fixture
def double() -> Iterator[ForgeDouble]:
    forge = ForgeDouble(token=TOKEN).start()
    yield forge
    forge.stop()


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("VOLT_FORGE_TOKEN", TOKEN)
    return TOKEN


def forge_repo(store: Store, double: ForgeDouble, kind: str = "github", project: str = "octo/proj",
               name: str = "proj") -> None:
    store.repos.register(name, f"/repos/{name}", ["main"], forge=ForgeLink(kind, double.api, project).to_dict())


def submit(store: Store, sha: str, repo: str = "proj") -> Build:
    build = Build(id=keys.build_id(repo, sha), repo=repo, url=f"/repos/{repo}", commit=sha, branch="main")
    assert store.builds.submit(build)
    return build


def drain(sender: StatusSender, until: float = 5.0) -> None:
    """Step the sender until nothing is due (or `until` seconds passed)."""
    deadline = time.monotonic() + until
    while time.monotonic() < deadline:
        sender.step()
        due = sender.store.statuses.next_due()
        if sender.store.statuses.waiting() == 0 or (due is not None and due > time.time() + until):
            return
        time.sleep(0.02)


def failing_outcome() -> RunOutcome:
    result = outcome(Status.FAILED)
    return replace(result, counts=Counts(total=3, passed=2, failed=1))


def test_a_build_tells_the_forge_queued_running_its_first_failure_and_its_end_in_order(
        conn, rq_conn, settings, double, token) -> None:
    settings = replace(settings, public_url="https://ci.example.org")
    store = Store(conn, settings)
    forge_repo(store, double)
    sender = StatusSender(settings, store, lambda: True)
    build = submit(Store(rq_conn, settings), SHA_A)
    drain(sender)
    store.builds.start_attempt(build.id, 1, "r1")
    drain(sender)
    store.builds.set_progress(build.id, 5)
    store.builds.set_progress(build.id, 6, 1, "tests/test_x.py::test_y")
    drain(sender)
    for done in range(7, 40):  # progress coalesced and rate-limited: none of these is news
        store.builds.set_progress(build.id, done, 1)
    drain(sender, until=0.3)
    store.builds.finish(build.id, 1, "r1", failing_outcome())
    drain(sender)
    seen = double.statuses("github")
    assert [(s.status["state"], s.status["description"].split(":")[0]) for s in seen] == [
        ("pending", "queued"), ("pending", "running"), ("pending", "1 failed so far"), ("failure", "failed")]
    assert seen[2].status["description"] == "1 failed so far: tests/test_x.py::test_y"
    assert {s.context for s in seen} == {"volt"} and {s.sha for s in seen} == {SHA_A}
    assert seen[-1].status["target_url"] == f"https://ci.example.org/build/proj/{SHA_A}"
    assert double.invalid == []
    assert store.statuses.waiting() == 0
    # a late progress write after the end says nothing new: no pending over the final status
    store.builds.set_progress(build.id, 41, 1)
    drain(sender)
    assert len(double.statuses()) == 4
    counters = store.metrics.counters().forge_statuses
    assert counters[("github", "sent")] == 4


@pytest.mark.parametrize(("kind", "project", "states"), [
    ("gitea", "octo/proj", ["pending", "pending", "success"]),
    ("gitlab", "42", ["pending", "running", "success"]),
])
def test_gitea_and_gitlab_get_their_own_paths_and_state_names(conn, rq_conn, settings, double, token, kind, project,
                                                              states) -> None:
    store = Store(conn, settings)
    forge_repo(store, double, kind, project)
    sender = StatusSender(settings, store, lambda: True)
    build = submit(Store(rq_conn, settings), SHA_A)
    drain(sender)
    store.builds.start_attempt(build.id, 1, "r1")
    drain(sender)
    store.builds.finish(build.id, 1, "r1", outcome(Status.PASSED))
    drain(sender)
    seen = double.statuses(kind)
    assert [s.status["state"] for s in seen] == states and double.invalid == []
    assert [s.context for s in seen] == ["volt"] * 3


def test_an_outage_of_502s_then_429s_loses_no_final_status_and_sends_no_late_pending(
        conn, rq_conn, settings, double, token) -> None:
    store = Store(conn, settings)
    forge_repo(store, double)
    sender = StatusSender(settings, store, lambda: True, backoff_max_s=0.05)
    double.answer(502)
    builds = [submit(Store(rq_conn, settings), sha) for sha in (SHA_A, SHA_B)]
    drain(sender, until=0.3)
    for build in builds:
        store.builds.start_attempt(build.id, 1, "r1")
        store.builds.set_progress(build.id, 2, 1, "t::first")
        store.builds.finish(build.id, 1, "r1", failing_outcome())
    drain(sender, until=0.3)
    double.answer(429, retry_after=1)
    drain(sender, until=0.3)
    assert double.statuses() == [] and store.statuses.waiting() == 2
    double.answer(None)
    wait_until(lambda: (sender.step(), len(double.statuses()) == 2)[1], "the final statuses after the outage")
    assert sorted((s.sha, s.status["state"]) for s in double.statuses()) == [(SHA_A, "failure"), (SHA_B, "failure")]
    asked = [s for s in double.requests() if s.code == 429]
    assert asked and all(b.at - a.at >= 0.9 for a, b in zip(asked, asked[1:], strict=False))  # Retry-After kept
    counters = store.metrics.counters().forge_statuses
    assert counters[("github", "retried")] >= 2 and counters[("github", "sent")] == 2


@pytest.mark.parametrize(("answer", "problem"), [(401, "401"), (404, "404")])
def test_a_refusal_is_one_log_line_a_metric_and_is_not_sent_again(conn, rq_conn, settings, double, token, answer,
                                                                   problem, caplog) -> None:
    store = Store(conn, settings)
    if answer == 404:
        forge_repo(store, double, project="octo/missing")
    else:
        forge_repo(store, double)
        double.token = "another"
    sender = StatusSender(settings, store, lambda: True)
    build = submit(Store(rq_conn, settings), SHA_A)
    with caplog.at_level(logging.WARNING, logger="volt.statuses"):
        drain(sender)
        store.builds.start_attempt(build.id, 1, "r1")
        drain(sender)
        assert store.builds.finish(build.id, 1, "r1", outcome(Status.PASSED))
        drain(sender)
    assert len(double.requests()) == 3 and double.statuses() == []  # each status tried once, not forever
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and f"github {double.api} answered {problem}" in lines[0]
    assert store.metrics.counters().forge_statuses[("github", "refused")] == 3
    assert store.records.get_build(build.id).status is Status.PASSED and store.statuses.waiting() == 0


def test_garbage_and_a_redirect_carry_no_token_elsewhere(conn, rq_conn, settings, double, token, caplog) -> None:
    elsewhere = ForgeDouble(token=TOKEN).start()
    try:
        store = Store(conn, settings)
        forge_repo(store, double)
        sender = StatusSender(settings, store, lambda: True, backoff_max_s=0.05)
        double.answer("garbage", times=1)
        submit(Store(rq_conn, settings), SHA_A)
        with caplog.at_level(logging.WARNING, logger="volt.statuses"):
            wait_until(lambda: (sender.step(), double.statuses())[1], "the status after a garbage answer")
        assert any("garbage" in r.getMessage() for r in caplog.records)
        redirect = f"{elsewhere.api}/repos/octo/proj/statuses/{SHA_B}"
        double.answer(302, times=1)
        double.location = redirect
        submit(Store(rq_conn, settings), SHA_B)
        drain(sender)
        assert elsewhere.requests() == []
    finally:
        elsewhere.stop()


def test_no_forge_no_statuses_and_the_token_reaches_neither_redis_nor_the_log(conn, rq_conn, settings, double, token,
                                                                             caplog) -> None:
    store = Store(conn, settings)
    forge_repo(store, double)
    store.repos.register("plain", "/repos/plain", ["main"])
    sender = StatusSender(settings, store, lambda: True)
    with caplog.at_level(logging.DEBUG):
        for repo in ("proj", "plain"):
            build = submit(Store(rq_conn, settings), SHA_A, repo)
            store.builds.start_attempt(build.id, 1, "r1")
            store.builds.finish(build.id, 1, "r1", outcome(Status.PASSED))
        drain(sender)
    assert {s.path.split("/")[3] for s in double.statuses()} == {"proj"}  # /repos/octo/proj/...
    assert store.statuses.waiting() == 0
    dump = b"".join(rq_conn.dump(key) or b"" for key in rq_conn.scan_iter(count=1000))
    assert TOKEN.encode() not in dump and TOKEN.encode()[:12] not in dump
    assert TOKEN not in caplog.text


def test_the_sender_runs_only_while_its_scheduler_leads_and_takes_over_what_was_being_sent(
        conn, rq_conn, settings, double, token) -> None:
    store = Store(conn, settings)
    forge_repo(store, double)
    submit(Store(rq_conn, settings), SHA_A)
    assert store.statuses.take(time.time() + 1) == [keys.build_id("proj", SHA_A)]  # a sender that died mid-send
    leading = threading.Event()
    stop = threading.Event()
    sender = StatusSender(settings, store, leading.is_set)
    thread = threading.Thread(target=sender.run, args=(stop,), daemon=True)
    thread.start()
    try:
        time.sleep(0.3)
        assert double.requests() == []
        leading.set()
        wait_until(lambda: double.statuses(), "the status the stopped sender was sending")
    finally:
        stop.set()
        thread.join(5)


def test_gitlab_gets_a_running_status_before_an_end_it_never_saw_start(conn, rq_conn, settings, double,
                                                                       token) -> None:
    store = Store(conn, settings)
    forge_repo(store, double, "gitlab", "42")
    sender = StatusSender(settings, store, lambda: True)
    build = submit(Store(rq_conn, settings), SHA_A)
    store.builds.start_attempt(build.id, 1, "r1")
    store.builds.finish(build.id, 1, "r1", failing_outcome())
    drain(sender)
    assert [s.status["state"] for s in double.statuses("gitlab")] == ["running", "failed"]
    assert [s.code for s in double.requests()] == [201, 201]


def test_a_hostile_test_name_reaches_the_forge_safe_and_redis_bounded(conn, rq_conn, settings, double, token) -> None:
    store = Store(conn, settings)
    forge_repo(store, double)
    sender = StatusSender(settings, store, lambda: True)
    build = submit(Store(rq_conn, settings), SHA_A)
    store.builds.start_attempt(build.id, 1, "r1")
    name = "tests/t.py::test_\x1b[2J\r\nX-Injected: yes\u202e" + "\U0001F600é" * 50_000 + "::end"
    store.builds.set_progress(build.id, 1, 1, name)
    drain(sender)
    assert len(conn.hget(keys.build(build.id), "first_failure")) <= 1024
    (seen,) = [s for s in double.statuses() if "failed so far" in s.status["description"]]
    text = seen.status["description"]
    assert len(text) <= 140 and not any(ch in text for ch in "\x1b\r\n\u202e") and double.invalid == []
    assert "X-Injected" not in seen.headers and seen.path == f"/repos/octo/proj/statuses/{SHA_A}"


def test_a_pull_request_waiting_for_approval_says_so_on_its_head_then_its_build_takes_over(
        conn, rq_conn, settings, double, token) -> None:
    from voltci.pullrequests import waiting_for_approval
    from voltci.pulls import PullState

    store = Store(conn, settings)
    forge_repo(store, double)
    sender = StatusSender(settings, store, lambda: True)
    what, state, _ = Store(rq_conn, settings).pulls.seen("proj", PullState(7, SHA_A, "main", "mallory", fork=True,
                                                                            known=True))
    assert what == "waiting"
    waiting_for_approval(store, "proj", state)
    waiting_for_approval(store, "proj", state)  # told twice: waits once
    drain(sender)
    (seen,) = double.statuses()
    assert (seen.sha, seen.context, seen.status["state"], seen.status["description"]) == \
        (SHA_A, "volt/pr", "pending", "waiting for approval: volt approve proj 7")
    _, build = Store(rq_conn, settings).pulls.approve("proj", 7, "alice")
    waiting_for_approval(store, "proj", state)  # a late word of waiting, once approved, is not sent
    drain(sender)
    assert build is not None
    assert [(s.context, s.status["description"].split(":")[0]) for s in double.statuses()][1:] == \
        [("volt/pr", "queued")]


def test_past_its_bound_what_waits_loses_pendings_never_a_final(conn, rq_conn, settings, double, monkeypatch) -> None:
    monkeypatch.setattr("voltci.statuses.WAITING_MAX", 2)
    store = Store(conn, settings)
    ended = submit(Store(rq_conn, settings), SHA_A)
    store.builds.start_attempt(ended.id, 1, "r1")
    store.builds.finish(ended.id, 1, "r1", outcome(Status.PASSED))
    waiting = submit(Store(rq_conn, settings), SHA_B)
    store.statuses.announce_pull("proj", 3)
    assert store.statuses.waiting() == 3
    assert StatusSender(settings, store, lambda: False).trim() == 2
    assert conn.zrange(keys.statuses_due(), 0, -1) == [ended.id] and waiting.id != ended.id
