"""Forge webhooks in, one route per kind of forge, over real HTTP against `volt web` on loopback and a real
Redis: GitHub's own published example payloads replayed (tests/forges/), Gitea's and GitLab's written
from their documented shapes; each forge's way of signing checked, and every refusal — unsigned, wrongly
signed, another forge's route, another repository, a replayed delivery, a hostile pull request, a body
too large — one line with its status and nothing triggered. A flood of pull requests from forks stays
within its bound."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path

import pytest
from web_process import call, volt_web

from voltci import keys
from voltci.forge import ForgeLink
from voltci.models import Status
from voltci.store import Store
from voltci.web.hooks import MAX_BODY

SECRET = "forge-hook-s3cret"
EXAMPLES = json.loads((Path(__file__).parent / "forges" / "github-webhook-examples.json").read_text())
HELLO_URL = "https://github.com/Codertocat/Hello-World.git"
HEAD = "ec26c3e57ca3a959ca5aad62de7213c562f8c821"
GITEA_URL = "https://gitea.example.org/team/app.git"
GITLAB_URL = "https://gitlab.example.org/group/tool.git"


def example(event: str, action: str | None = None) -> dict:
    found = [e for e in EXAMPLES[event]["examples"] if action is None or e.get("action") == action]
    return copy.deepcopy(found[0])


def hmac_hex(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def github(url: str, repo: str, event: str, payload: dict | bytes, *, secret: str = SECRET,
           delivery: str | None = None, signed: bool = True):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "X-GitHub-Event": event,
               "X-GitHub-Delivery": delivery or str(uuid.uuid4())}
    if signed:
        headers["X-Hub-Signature-256"] = "sha256=" + hmac_hex(body, secret)
    return call(f"{url}/hooks/github/{repo}", "POST", body, headers)


def gitea(url: str, repo: str, payload: dict, *, secret: str = SECRET, delivery: str | None = None):
    body = json.dumps(payload).encode()
    return call(f"{url}/hooks/gitea/{repo}", "POST", body, {
        "Content-Type": "application/json", "X-Gitea-Event": "pull_request",
        "X-Gitea-Delivery": delivery or str(uuid.uuid4()), "X-Gitea-Signature": hmac_hex(body, secret)})


def gitlab(url: str, repo: str, payload: dict, *, token: str = SECRET, event: str = "Merge Request Hook"):
    return call(f"{url}/hooks/gitlab/{repo}", "POST", json.dumps(payload).encode(), {
        "Content-Type": "application/json", "X-Gitlab-Event": event, "X-Gitlab-Token": token,
        "X-Gitlab-Event-UUID": str(uuid.uuid4())})


def gitea_pull(number: int, head: str, *, fork: bool, author: str = "mallory", action: str = "opened") -> dict:
    """A Gitea/Forgejo `pull_request` payload, as its documentation shapes it (trimmed)."""
    base_repo = {"id": 7, "full_name": "team/app", "clone_url": GITEA_URL, "html_url": "https://gitea.example.org/team/app"}
    head_repo = {"id": 99, "full_name": f"{author}/app"} if fork else base_repo
    return {"action": action, "number": number,
            "pull_request": {"id": 1000 + number, "number": number, "title": f"change {number}",
                             "user": {"login": author, "id": 5},
                             "head": {"ref": "feature", "sha": head, "repo_id": head_repo["id"], "repo": head_repo},
                             "base": {"ref": "main", "sha": "c" * 40, "repo_id": 7, "repo": base_repo}},
            "repository": base_repo, "sender": {"login": author}}


def gitlab_mr(iid: int, head: str, *, action: str = "open", source_project: int = 15) -> dict:
    """A GitLab `Merge Request Hook` payload, as its documentation shapes it (trimmed)."""
    project = {"id": 15, "path_with_namespace": "group/tool", "git_http_url": GITLAB_URL,
               "web_url": "https://gitlab.example.org/group/tool"}
    return {"object_kind": "merge_request", "event_type": "merge_request", "user": {"username": "root"},
            "project": project, "repository": {"url": GITLAB_URL, "homepage": project["web_url"]},
            "object_attributes": {"iid": iid, "action": action, "state": "opened", "title": "a change",
                                  "source_project_id": source_project, "target_project_id": 15,
                                  "source_branch": "feature", "target_branch": "main",
                                  "last_commit": {"id": head, "message": "a change"}}}


def refused(answer, status: int, fragment: str) -> None:
    assert answer.status == status, (answer.status, answer.text)
    reply = json.loads(answer.body)
    assert reply["status"] == status and fragment in reply["error"] and "\n" not in reply["error"], reply


@pytest.fixture
def web(settings, conn, tmp_path):
    store = Store(conn, settings)
    store.repos.register("hello", HELLO_URL, ["master"], pull_requests=True, trusted_authors=[],
                         forge=ForgeLink("github", "https://api.github.com", "Codertocat/Hello-World").to_dict())
    store.repos.register("octo", "https://github.com/Octocoders/Hello-World.git", ["master"],
                         forge=ForgeLink("github", "https://api.github.com", "Octocoders/Hello-World").to_dict())
    store.repos.register("app", GITEA_URL, ["main"], pull_requests=True, trusted_authors=["alice"],
                         forge=ForgeLink("gitea", "https://gitea.example.org", "team/app").to_dict())
    store.repos.register("tool", GITLAB_URL, ["main"], pull_requests=True,
                         forge=ForgeLink("gitlab", "https://gitlab.example.org", "group/tool").to_dict())
    with volt_web(settings, tmp_path, VOLT_HOOK_SECRET=SECRET) as url:
        yield url, store


def test_githubs_published_examples_build_close_and_reopen_a_pull_request(web) -> None:
    url, store = web
    pong = github(url, "octo", "ping", example("ping"))
    assert pong.status == 200 and json.loads(pong.body)["pong"] is True, pong.text
    opened = github(url, "hello", "pull_request", example("pull_request", "opened"))
    assert opened.status == 200, opened.text
    reply = json.loads(opened.body)
    build_id = keys.pull_build_id("hello", 2, HEAD)
    assert (reply["result"], reply["build"]) == ("queued", build_id)  # its author is the OWNER
    build = store.records.get_build(build_id)
    assert build.status is Status.QUEUED and build.branch == "master" and build.pull_request.number == 2
    assert build.subject == "Update the README with new information."
    again = json.loads(github(url, "hello", "pull_request", example("pull_request", "synchronize")).body)
    assert (again["result"], again["build"]) == ("known", None)  # the same head: the same build
    closed = json.loads(github(url, "hello", "pull_request", example("pull_request", "closed")).body)
    assert closed["cancelled"] == [build_id] and store.records.get_build(build_id).status is Status.CANCELLED
    labeled = github(url, "hello", "pull_request", example("pull_request", "labeled"))
    assert labeled.status == 200 and json.loads(labeled.body)["result"].startswith("ignored")
    reopened = json.loads(github(url, "hello", "pull_request", example("pull_request", "reopened")).body)
    assert reopened["result"] == "known" and store.records.get_build(build_id).status is Status.QUEUED
    listener = store.r.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(keys.notify())
    master = [e for e in EXAMPLES["push"]["examples"] if e["ref"] == "refs/heads/master"][0]
    pushed = github(url, "hello", "push", master)
    assert pushed.status == 200, pushed.text
    deadline = time.monotonic() + 5
    message = None
    while message is None and time.monotonic() < deadline:
        message = listener.get_message(timeout=0.2)
    assert message is not None and json.loads(message["data"]) == {"repo": "hello", "ref": "refs/heads/master",
                                                                    "via": "webhook"}
    listener.close()


def test_every_refusal_is_one_line_and_triggers_nothing(web) -> None:
    url, store = web
    payload = example("pull_request", "opened")
    body = json.dumps(payload).encode()
    refused(github(url, "hello", "pull_request", body, signed=False), 403, "signature does not match")
    refused(github(url, "hello", "pull_request", body, secret="wrong"), 403, "signature does not match")
    gitea_signed = call(f"{url}/hooks/gitea/hello", "POST", body, {"X-Gitea-Event": "pull_request",
                                                                  "X-Gitea-Signature": hmac_hex(body)})
    refused(gitea_signed, 404, "repository 'hello' is not on gitea")
    refused(gitlab(url, "hello", gitlab_mr(1, HEAD), token=SECRET), 404, "not on gitlab")
    refused(gitlab(url, "tool", gitlab_mr(1, HEAD), token="wrong"), 403, "signature does not match")
    refused(github(url, "nope", "pull_request", body), 404, "unknown repository 'nope'")
    refused(github(url, "app", "pull_request", body), 404, "is not on github")
    other = copy.deepcopy(payload)
    other["repository"] = {"full_name": "evil/Hello-World", "clone_url": "https://github.com/evil/Hello-World.git"}
    refused(github(url, "hello", "pull_request", other), 422, "the payload is about")
    for field, value, why in (("number", 10**12, "number is not one"), ("number", "2; rm -rf /", "number is not one"),
                              ("head", "../../etc", "not a commit sha"), ("base", "-main", "not a branch name"),
                              ("base", "main\nx", "not a branch name")):
        hostile = copy.deepcopy(payload)
        if field == "number":
            hostile["number"] = hostile["pull_request"]["number"] = value
        else:
            hostile["pull_request"][field]["sha" if field == "head" else "ref"] = value
        refused(github(url, "hello", "pull_request", hostile), 422, why)
    refused(github(url, "hello", "pull_request", b"[1, 2]"), 400, "not a JSON object")
    big = b"{" + b" " * (MAX_BODY + 1) + b"}"
    assert github(url, "hello", "pull_request", big).status == 413
    assert store.pulls.all("hello") == [] and store.queue.depth() == 0
    delivery = str(uuid.uuid4())
    assert github(url, "hello", "pull_request", payload, delivery=delivery).status == 200
    refused(github(url, "hello", "pull_request", example("pull_request", "closed"), delivery=delivery), 409,
            f"delivery {delivery} was received before")
    assert store.records.get_build(keys.pull_build_id("hello", 2, HEAD)).status is Status.QUEUED  # not closed


def test_gitea_a_forks_pull_request_waits_until_approved_and_a_flood_of_them_is_bounded(web, monkeypatch) -> None:
    url, store = web
    waiting = json.loads(gitea(url, "app", gitea_pull(1, "1" * 40, fork=True)).body)
    assert (waiting["result"], waiting["build"]) == ("waiting", None)
    trusted = json.loads(gitea(url, "app", gitea_pull(2, "2" * 40, fork=True, author="alice")).body)
    assert trusted["result"] == "queued"
    own = json.loads(gitea(url, "app", gitea_pull(3, "3" * 40, fork=False, author="bob")).body)
    assert own["result"] == "queued"
    state, build = store.pulls.approve("app", 1, "carol")
    assert build is not None and build.commit == "1" * 40
    pushed_again = json.loads(gitea(url, "app", gitea_pull(1, "4" * 40, fork=True, action="synchronized")).body)
    assert pushed_again["result"] == "waiting"  # a new head nobody read waits again
    results = [json.loads(gitea(url, "app", gitea_pull(n, f"{n:040x}", fork=True)).body)["result"]
               for n in range(10, 10 + keys.PULLS_WAITING_MAX + 5)]
    assert results.count("waiting") == keys.PULLS_WAITING_MAX - 1 and results.count("full") == 6
    assert store.r.hlen(keys.repo_pulls("app")) == 3 + keys.PULLS_WAITING_MAX - 1
    assert store.queue.depth() == 3


def test_gitlab_a_merge_request_is_built_and_closing_cancels_its_running_build(web) -> None:
    url, store = web
    opened = json.loads(gitlab(url, "tool", gitlab_mr(4, "5" * 40)).body)
    assert opened["result"] == "queued"
    build_id = opened["build"]
    assert store.builds.start_attempt(build_id, 1, "runner-1") is not None
    from_fork = json.loads(gitlab(url, "tool", gitlab_mr(5, "6" * 40, source_project=99)).body)
    assert from_fork["result"] == "waiting"
    push = gitlab(url, "tool", {"object_kind": "push", "ref": "refs/heads/main", "after": "7" * 40,
                                "project": {"path_with_namespace": "group/tool", "git_http_url": GITLAB_URL}},
                  event="Push Hook")
    assert push.status == 200, push.text
    closed = json.loads(gitlab(url, "tool", gitlab_mr(4, "5" * 40, action="close")).body)
    assert closed["cancelled"] == [build_id]
    ended = store.records.get_build(build_id)
    assert ended.status is Status.CANCELLED and ended.reason == "pull request #4 was closed"
