"""Webhook messages for ended builds, sent by the acting scheduler to a real HTTP server: signed,
retried when the server fails, bounded when it keeps failing, and never lost while queued."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
from dataclasses import replace

import pytest
from support import SHA_A, SHA_B, outcome, wait_until

from voltci import keys
from voltci.models import Build, Status
from voltci.store import Store
from voltci.webhooks import SIGNATURE_HEADER, WebhookSender


class Hook(http.server.BaseHTTPRequestHandler):
    received: list[tuple[dict, str]] = []
    fail_first = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if Hook.fail_first > 0:
            Hook.fail_first -= 1
            self.send_response(500)
            self.end_headers()
            return
        Hook.received.append((json.loads(body), self.headers.get(SIGNATURE_HEADER, ""), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hook_url():
    Hook.received, Hook.fail_first = [], 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()


def ended_build(rq_conn, conn, settings, sha: str) -> Build:
    build = Build(id=keys.build_id("proj", sha), repo="proj", url="/r", commit=sha, branch="main", subject="s")
    Store(rq_conn, settings).builds.submit(build)
    Store(conn).builds.start_attempt(build.id, 1, "r1")
    Store(conn).builds.finish(build.id, 1, "r1", outcome(Status.PASSED))
    return build


def test_an_ended_build_is_posted_signed(conn, rq_conn, settings, hook_url) -> None:
    settings = replace(settings, webhook_url=hook_url, webhook_secret="k3y", web_url="https://ci.example.org/")
    build = ended_build(rq_conn, conn, settings, SHA_A)
    sender = WebhookSender(settings, Store(conn), lambda: True)
    assert sender.send_next(threading.Event())
    ((body, sig, raw),) = Hook.received
    assert (body["repo"], body["commit"], body["status"], body["counts"]["passed"]) == ("proj", SHA_A, "passed", 3)
    assert body["url"] == f"https://ci.example.org/build/proj/{build.commit}"
    assert sig == "sha256=" + hmac.new(b"k3y", raw, hashlib.sha256).hexdigest()
    assert conn.llen(keys.outbox()) == 0 and conn.llen(keys.outbox_sending()) == 0


def test_a_failing_server_is_retried_then_given_up(conn, rq_conn, settings, hook_url, monkeypatch) -> None:
    monkeypatch.setattr("voltci.webhooks.BACKOFF_S", (0.01,))
    settings = replace(settings, webhook_url=hook_url)
    ended_build(rq_conn, conn, settings, SHA_A)
    ended_build(rq_conn, conn, settings, SHA_B)
    sender = WebhookSender(settings, Store(conn), lambda: True)
    Hook.fail_first = 2
    assert sender.send_next(threading.Event())
    assert [b["commit"] for b, _, _ in Hook.received] == [SHA_A]  # third try went through
    Hook.fail_first = 100
    assert sender.send_next(threading.Event())  # five tries, then dropped: bounded
    assert len(Hook.received) == 1 and Hook.fail_first == 95
    assert conn.llen(keys.outbox()) == 0


def test_messages_being_sent_by_a_dead_scheduler_are_sent_again(conn, rq_conn, settings, hook_url) -> None:
    settings = replace(settings, webhook_url=hook_url)
    ended_build(rq_conn, conn, settings, SHA_A)
    conn.lmove(keys.outbox(), keys.outbox_sending(), "RIGHT", "LEFT")  # taken, then its scheduler died
    sender = WebhookSender(settings, Store(conn), lambda: True)
    assert not sender.send_next(threading.Event(), wait_s=0.1)
    sender.recover()
    assert sender.send_next(threading.Event())
    assert [b["commit"] for b, _, _ in Hook.received] == [SHA_A]


def test_the_scheduler_sends_them(conn, rq_conn, settings, hook_url) -> None:
    from voltci.scheduler import Scheduler

    settings = replace(settings, webhook_url=hook_url, heartbeat=0.2, heartbeat_ttl=0.6)
    stop = threading.Event()
    thread = threading.Thread(target=Scheduler(settings).run, args=(stop,), daemon=True)
    thread.start()
    try:
        ended_build(rq_conn, conn, settings, SHA_A)
        wait_until(lambda: Hook.received, "the webhook to be sent", 10, every=0.05)
    finally:
        stop.set()
        thread.join(timeout=10)
        for helper in [t for t in threading.enumerate() if t.name in ("webhook", "statuses")]:
            helper.join(timeout=10)  # else its sender may take the next test's messages
    assert [b["status"] for b, _, _ in Hook.received] == ["passed"]


def test_a_first_failure_is_posted_once_the_moment_it_is_known_with_its_test_and_seconds(
        conn, rq_conn, settings, hook_url) -> None:
    settings = replace(settings, webhook_url=hook_url, web_url="https://ci.example.org/")
    build = Build(id=keys.build_id("proj", SHA_A), repo="proj", url="/r", commit=SHA_A, branch="main", subject="s")
    Store(rq_conn, settings).builds.submit(build)
    store = Store(conn, settings)
    store.builds.start_attempt(build.id, 1, "r1")
    store.builds.set_progress(build.id, 2, 1, "tests/test_x.py::test_y")
    store.builds.set_progress(build.id, 3, 2, "tests/test_x.py::test_z")
    sender = WebhookSender(settings, store, lambda: True)
    assert sender.send_next(threading.Event())  # while the build runs
    ((body, _, _),) = Hook.received
    running = store.records.get_build(build.id)
    assert (body["event"], body["status"], body["first_failure"]) == (
        "build.first_failure", "running", "tests/test_x.py::test_y")
    assert body["first_failure_s"] == running.first_failure_s is not None
    assert body["url"] == f"https://ci.example.org/build/proj/{SHA_A}"
    store.builds.finish(build.id, 1, "r1", outcome(Status.FAILED))
    assert store.builds.rebuild(build.id) is not None  # a rebuild's own first failure is news again
    assert store.builds.start_attempt(build.id, 2, "r1") is not None
    store.builds.set_progress(build.id, 1, 1, "tests/test_x.py::test_w")
    while sender.send_next(threading.Event(), wait_s=0.1):
        pass
    assert [b["event"] for b, _, _ in Hook.received] == ["build.first_failure", "build.ended", "build.first_failure"]
    assert [b["first_failure"] for b, _, _ in Hook.received if b["event"] == "build.first_failure"] == [
        "tests/test_x.py::test_y", "tests/test_x.py::test_w"]  # each as it was when it was known
