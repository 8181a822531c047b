"""Instant triggers: `volt notify` (a git post-receive hook) and a forge's signed push webhook make the
observer look at a repository now instead of at its next poll."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import time
from dataclasses import replace

import redis
from support import ROOT, child_env, run_volt, wait_until

from voltci import keys
from voltci.web import create_app


def test_notify_has_a_slow_polling_observer_build_at_once(redis_url, make_repo, tmp_path) -> None:
    repo = make_repo()
    repo.commit({"a.txt": "0"}, "zero")
    with open(tmp_path / "observer.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, str(ROOT / "bin" / "volt-observe"), "--repo", str(repo.path),
                                 "--poll", "300", "--redis-url", redis_url],
                                env=child_env(VOLT_WORKSPACE_DIR=str(tmp_path / "ws")), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    conn = redis.Redis.from_url(redis_url)
    try:
        wait_until(lambda: conn.zcard(keys.repo_history("proj")), "the observer's first build", process=proc)
        time.sleep(0.5)  # the observer now waits for its next poll, five minutes away
        sha = repo.commit({"a.txt": "1"}, "pushed")
        notified = run_volt("notify", "--repo", "proj", "refs/heads/main", "--redis-url", redis_url)
        assert notified.returncode == 0 and "notified 1 observer(s) of proj" in notified.stdout, notified.stderr
        wait_until(lambda: conn.exists(keys.build(keys.build_id("proj", sha))),
                   "the notification to make the observer look", 10, every=0.05)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_notify_of_an_unknown_repository_is_a_clear_error(redis_url) -> None:
    proc = run_volt("notify", "--repo", "nosuch", "--redis-url", redis_url)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("volt: unknown repository 'nosuch': no observer watches it "
                                   "(see `volt status`)")


def test_push_webhook_needs_the_right_signature(settings, conn) -> None:
    conn.hset(keys.repos(), "proj", json.dumps({"url": "/r"}))
    listener = conn.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(keys.notify())
    body = json.dumps({"ref": "refs/heads/main", "repository": {"clone_url": "/r"}}).encode()
    good = "sha256=" + hmac.new(b"hook-s3cret", body, hashlib.sha256).hexdigest()

    off = create_app(settings).test_client()
    assert off.post("/hooks/proj", data=body, headers={"X-Hub-Signature-256": good}).status_code == 404
    web = create_app(replace(settings, hook_secret="hook-s3cret")).test_client()
    for bad in ("", "sha256=00", good.replace("a", "b", 1)):
        assert web.post("/hooks/proj", data=body, headers={"X-Hub-Signature-256": bad}).status_code == 403
    assert web.post("/hooks/nosuch", data=body, headers={"X-Hub-Signature-256": good}).status_code == 404
    assert listener.get_message(timeout=0.5) is None  # nothing was triggered
    ok = web.post("/hooks/proj", data=body, headers={"X-Hub-Signature-256": good})
    assert ok.status_code == 200
    message = listener.get_message(timeout=2)
    assert json.loads(message["data"]) == {"repo": "proj", "ref": "refs/heads/main", "via": "webhook"}
