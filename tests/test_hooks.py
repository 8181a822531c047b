"""A forge's push hook is taken once, for the repository it is about: attacked over HTTP against a real
`volt web` on loopback and a real Redis — replays (the same delivery, the same body under a new delivery
id or none, another forge's signature header), a signed hook of one repository sent to another's path,
floods of unsigned and replayed hooks (Redis must not grow) — and each refusal one line with its status.
The checks of what a payload names, and the bounded memory of hooks seen, are tested on their own too."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid

import pytest
from web_process import call, volt_web

from voltci import keys
from voltci.store import Store
from voltci.web.hooks import about_other_repository, url_key

SECRET = "hook-s3cret-for-tests"
PROJ_URL = "https://git.example.org/Team/proj.git"
OTHER_URL = "git@git.example.org:team/other.git"


def github_push(full_name: str = "Team/proj", after: str = "1" * 40, host: str = "git.example.org") -> dict:
    """A push event as GitHub (and Gitea, Forgejo) shape it, trimmed to what Volt reads."""
    return {"ref": "refs/heads/main", "before": "0" * 40, "after": after,
            "repository": {"full_name": full_name, "clone_url": f"https://{host}/{full_name}.git",
                           "ssh_url": f"git@{host}:{full_name}.git", "html_url": f"https://{host}/{full_name}",
                           "url": f"https://{host}/{full_name}"}}


def gitlab_push(path: str = "team/proj", after: str = "2" * 40) -> dict:
    return {"object_kind": "push", "ref": "refs/heads/main", "after": after,
            "project": {"path_with_namespace": path, "git_http_url": f"https://git.example.org/{path}.git",
                        "git_ssh_url": f"git@git.example.org:{path}.git", "web_url": f"https://git.example.org/{path}"},
            "repository": {"url": f"git@git.example.org:{path}.git", "homepage": f"https://git.example.org/{path}"}}


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# ---------------------------------------------------------------- what a payload names

@pytest.mark.parametrize(("url", "key"), [
    ("https://git.example.org/Team/proj.git", "git.example.org/team/proj"),
    ("https://user:pw@git.example.org:8443/team/proj/", "git.example.org/team/proj"),
    ("ssh://git@git.example.org:2222/team/proj.git", "git.example.org/team/proj"),
    ("git@git.example.org:team/proj.git", "git.example.org/team/proj"),
    ("git.example.org:team/proj", "git.example.org/team/proj"),
    ("/srv/git/team/proj.git", "/srv/git/team/proj"),
    ("file:///srv/git/team/proj.git", "/srv/git/team/proj"),
])
def test_a_repository_url_has_one_key_whatever_its_form(url: str, key: str) -> None:
    assert url_key(url) == key


def test_a_payload_must_name_the_watched_repository() -> None:
    assert about_other_repository(github_push(), PROJ_URL, "proj") is None
    assert about_other_repository(gitlab_push(), PROJ_URL, "proj") is None
    assert about_other_repository(github_push(), "/srv/mirrors/team/proj.git", "proj") is None  # by full name
    for other in (github_push("team/other"), github_push("evil/proj"), github_push("proj"),
                  github_push(host="evil.example.org") | {"repository": {"clone_url": "https://evil.example.org/team/proj"}},
                  gitlab_push("team/proj-fork"), gitlab_push("group/team/projx")):
        refusal = about_other_repository(other, PROJ_URL, "proj")
        assert refusal is not None and "not 'proj'" in refusal and "\n" not in refusal, other
    for nameless in ({}, {"ref": "refs/heads/main"}, {"repository": "team/proj"}, {"repository": {"id": 1}},
                     {"repository": {"full_name": ""}}, {"project": [PROJ_URL]}):
        assert "names no repository" in (about_other_repository(nameless, PROJ_URL, "proj") or ""), nameless


def test_hooks_seen_are_kept_bounded_and_for_a_while(conn) -> None:
    store = Store(conn)
    assert store.hooks.remember(["body:a", "delivery:1"], now=1000.0, keep_s=60, most=50) is None
    assert store.hooks.remember(["body:a"], now=1001.0, keep_s=60, most=50) == "body:a"
    assert store.hooks.remember(["body:b", "delivery:1"], now=1002.0, keep_s=60, most=50) == "delivery:1"
    assert conn.zcard(keys.hooks_seen()) == 2  # a replay writes nothing
    assert store.hooks.remember(["body:a"], now=1061.0, keep_s=60, most=50) is None  # forgotten after keep_s
    for n in range(500):
        assert store.hooks.remember([f"body:{n}", f"delivery:{n}"], now=2000.0 + n, keep_s=10_000, most=50) is None
    assert conn.zcard(keys.hooks_seen()) == 50
    assert 0 < conn.ttl(keys.hooks_seen()) <= 10_001
    assert store.hooks.remember(["body:499"], now=2600.0, keep_s=10_000, most=50) == "body:499"


def test_two_replays_at_once_are_taken_once(conn) -> None:
    store = Store(conn)
    taken: list[str | None] = []
    threads = [threading.Thread(target=lambda: taken.append(store.hooks.remember(["body:same"], now=5.0)))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(taken, key=str) == [None] + ["body:same"] * 7


# ---------------------------------------------------------------- against `volt web`

@pytest.fixture
def web(settings, conn, tmp_path):
    """`volt web` with a hook secret, two watched repositories, and a listener of what reaches the observers."""
    store = Store(conn)
    store.repos.register("proj", PROJ_URL, ["main"])
    store.repos.register("other", OTHER_URL, ["main"])
    listener = conn.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(keys.notify())
    with volt_web(settings, tmp_path, VOLT_HOOK_SECRET=SECRET) as url:
        yield url, listener
    listener.close()


def post(url: str, repo: str, payload: dict | bytes, headers: dict[str, str] | None = None,
         signed_by: str = "X-Hub-Signature-256", secret: str = SECRET):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signature = sign(body, secret)
    if signed_by in ("X-Gitea-Signature", "X-Forgejo-Signature"):
        signature = signature.removeprefix("sha256=")
    return call(f"{url}/hooks/{repo}", "POST", body, {"Content-Type": "application/json", signed_by: signature,
                                                      **(headers or {})})


def refused(answer, status: int, fragment: str) -> None:
    assert answer.status == status, (answer.status, answer.text)
    reply = json.loads(answer.body)
    assert reply["status"] == status and fragment in reply["error"] and "\n" not in reply["error"], reply


def notified(listener, quiet_s: float = 0.5) -> list[dict]:
    """What reached the observers since the last call: messages until none came for `quiet_s`."""
    found = []
    deadline = time.monotonic() + quiet_s
    while time.monotonic() < deadline:
        message = listener.get_message(timeout=0.1)  # None for the subscription's own confirmation too
        if message is not None:
            found.append(json.loads(message["data"]))
            deadline = time.monotonic() + quiet_s
    return found


def test_a_push_hook_is_taken_once(web) -> None:
    url, listener = web
    push = github_push()
    first = post(url, "proj", push, {"X-GitHub-Delivery": str(uuid.uuid4())})
    assert first.status == 200, first.text
    assert notified(listener) == [{"repo": "proj", "ref": "refs/heads/main", "via": "webhook"}]

    delivery = str(uuid.uuid4())
    body = json.dumps(github_push(after="3" * 40)).encode()
    assert post(url, "proj", body, {"X-GitHub-Delivery": delivery}).status == 200
    refused(post(url, "proj", body, {"X-GitHub-Delivery": delivery}), 409, f"delivery {delivery} was received")
    refused(post(url, "proj", body, {"X-GitHub-Delivery": str(uuid.uuid4())}), 409, "body was received")
    refused(post(url, "proj", body), 409, "a replay")
    refused(post(url, "proj", body, {"X-Gitea-Delivery": "1"}, signed_by="X-Gitea-Signature"), 409, "a replay")
    refused(post(url, "proj", body, signed_by="X-Volt-Signature"), 409, "a replay")
    assert post(url, "proj", body + b" ").status == 200  # another body, signed by the forge: another hook
    # a new body under a delivery id already seen is a redelivery of that one
    refused(post(url, "proj", github_push(after="4" * 40), {"X-GitHub-Delivery": delivery}), 409, "delivery")
    assert [n["repo"] for n in notified(listener)] == ["proj", "proj"]


def test_a_hook_without_a_delivery_id_is_taken_once_by_its_body(web) -> None:
    url, listener = web
    push = github_push(after="5" * 40)
    assert post(url, "proj", push, signed_by="X-Volt-Signature").status == 200
    refused(post(url, "proj", push, signed_by="X-Volt-Signature"), 409, "body was received")
    assert len(notified(listener)) == 1


def test_other_forges_are_taken_once_too(web) -> None:
    url, listener = web
    gitea = github_push(after="6" * 40)
    assert post(url, "proj", gitea, {"X-Gitea-Delivery": "42"}, signed_by="X-Gitea-Signature").status == 200
    forgejo = post(url, "proj", github_push(after="7" * 40), {"X-Forgejo-Delivery": "43"},
                   signed_by="X-Forgejo-Signature")
    assert forgejo.status == 200, forgejo.text
    gitlab = gitlab_push()
    event = str(uuid.uuid4())
    assert post(url, "proj", gitlab, {"X-Gitlab-Event-UUID": event}, signed_by="X-Volt-Signature").status == 200
    refused(post(url, "proj", gitlab_push(after="8" * 40), {"X-Gitlab-Event-UUID": event},
                 signed_by="X-Volt-Signature"), 409, f"delivery {event}")
    assert len(notified(listener)) == 3


def test_a_hook_about_another_repository_is_refused(web) -> None:
    url, listener = web
    for_other = github_push("team/other", after="9" * 40)
    refused(post(url, "proj", for_other), 422, "the payload is about 'team/other', not 'proj'")
    assert post(url, "other", for_other).status == 200  # on its own path it is taken …
    refused(post(url, "proj", for_other), 422, "not 'proj'")  # … and never on another's
    refused(post(url, "other", github_push(after="a" * 40)), 422, "the payload is about 'Team/proj', not 'other'")
    refused(post(url, "proj", github_push("evil/proj", after="b" * 40)), 422, "not 'proj'")
    refused(post(url, "proj", {"ref": "refs/heads/main"}), 422, "names no repository")
    assert [n["repo"] for n in notified(listener)] == ["other"]


def test_bad_hooks_are_one_line_each(web, conn) -> None:
    url, listener = web
    refused(post(url, "proj", github_push(), secret="wrong"), 403, "signature does not match")
    refused(call(f"{url}/hooks/proj", "POST", b"{}", {}), 403, "signature does not match")
    refused(post(url, "nosuch", github_push()), 404, "unknown repository 'nosuch'")
    refused(post(url, "proj", b"not json"), 400, "not a JSON object")
    refused(post(url, "proj", b"[1, 2]"), 400, "not a JSON object")
    refused(post(url, "proj", b"[" * 100_000 + b"]" * 100_000), 400, "not a JSON object")
    for bad in ("x" * 101, "a b", "a\tb", "../../x"):
        refused(post(url, "proj", github_push(after="c" * 40), {"X-GitHub-Delivery": bad}), 400,
                "X-GitHub-Delivery is not a delivery id")
    big = b'{"pad": "' + b"x" * (26 * 1024 * 1024) + b'"}'
    assert post(url, "proj", big).status == 413
    assert notified(listener) == [] and not conn.exists(keys.hooks_seen())


def test_floods_do_not_grow_redis(web, conn) -> None:
    url, listener = web
    assert post(url, "proj", github_push(after="d" * 40), {"X-GitHub-Delivery": "first"}).status == 200
    kept = conn.zcard(keys.hooks_seen())
    memory = conn.memory_usage(keys.hooks_seen())
    replay = json.dumps(github_push(after="d" * 40)).encode()
    for n in range(300):
        assert post(url, "proj", replay, {"X-GitHub-Delivery": f"fresh-{n}"}).status == 409
        unsigned = json.dumps(github_push(after=f"{n:040x}")).encode()
        assert post(url, "proj", unsigned, {"X-GitHub-Delivery": f"unsigned-{n}"}, secret="guess").status == 403
    assert conn.zcard(keys.hooks_seen()) == kept == 2
    assert conn.memory_usage(keys.hooks_seen()) == memory
    assert len(notified(listener)) == 1
