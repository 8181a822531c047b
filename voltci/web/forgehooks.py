"""A forge's webhooks, one route per kind of forge, each checked its forge's own way:

    POST /hooks/github/<repo>   X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body>   push, pull_request, ping
    POST /hooks/gitea/<repo>    X-Gitea-Signature (or X-Forgejo-Signature): the bare hex  push, pull_request
    POST /hooks/gitlab/<repo>   X-Gitlab-Token: the secret itself (constant-time compare)  Push Hook, Merge Request Hook

with `hook_secret` as the secret. A push has the observer look at the repository now (as `POST
/hooks/<repo>` does); a pull request's event records and builds its head, leaves it waiting for
approval, or closes it and cancels its builds (pullrequests.py). In order, each refusal a status and
one line of JSON, and nothing triggered:

- 404 no `hook_secret` is set; 413 a body over MAX_BODY;
- 403 no signature, or one that does not match;
- 404 no repository of that name is watched, or it is not on that kind of forge (its `forge`);
- 400 the body is not a JSON object, or a delivery id is malformed;
- 422 the payload is about another repository (hooks.py), or its pull request does not read (a number,
  head or branch that is no such thing);
- 409 a replay: the same delivery id or body was taken before (store/hooks.py: kept a week, bounded).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from typing import Any

import flask

from voltci import pullrequests
from voltci.errors import BadInput
from voltci.web.context import store, volt
from voltci.web.hooks import MAX_BODY, _payload, _pushed_ref, about_other_repository, marks, named_repository
from voltci.webhooks import signature

bp = flask.Blueprint("forgehooks", __name__)

EVENT_HEADERS = {"github": ("X-GitHub-Event",), "gitea": ("X-Gitea-Event", "X-Forgejo-Event"),
                 "gitlab": ("X-Gitlab-Event",)}
PUSH_EVENTS = {"push", "Push Hook"}
PULL_EVENTS = {"pull_request", "Merge Request Hook"}


def _github_signed(body: bytes, secret: str) -> bool:
    given = flask.request.headers.get("X-Hub-Signature-256", "")
    return bool(given) and hmac.compare_digest(given.encode(), signature(body, secret).encode())


def _gitea_signed(body: bytes, secret: str) -> bool:
    want = signature(body, secret).removeprefix("sha256=").encode()
    given = [flask.request.headers.get(name, "") for name in ("X-Gitea-Signature", "X-Forgejo-Signature")]
    return any(value and hmac.compare_digest(value.encode(), want) for value in given)


def _gitlab_signed(body: bytes, secret: str) -> bool:
    del body  # GitLab signs nothing: it sends the secret itself
    given = flask.request.headers.get("X-Gitlab-Token", "")
    return bool(given) and hmac.compare_digest(given.encode(), secret.encode())


SIGNED: dict[str, Callable[[bytes, str], bool]] = {"github": _github_signed, "gitea": _gitea_signed,
                                                   "gitlab": _gitlab_signed}


@bp.post("/hooks/github/<repo>")
def github_hook(repo: str) -> flask.Response:
    return _hook("github", repo)


@bp.post("/hooks/gitea/<repo>")
def gitea_hook(repo: str) -> flask.Response:
    return _hook("gitea", repo)


@bp.post("/hooks/gitlab/<repo>")
def gitlab_hook(repo: str) -> flask.Response:
    return _hook("gitlab", repo)


def _hook(kind: str, repo: str) -> flask.Response:
    secret = volt().settings.hook_secret
    if not secret:
        flask.abort(404, "forge webhooks are off: no hook_secret is configured")
    flask.request.max_content_length = MAX_BODY
    body = flask.request.get_data(cache=False)
    if not SIGNED[kind](body, secret):
        flask.abort(403, f"the {kind} webhook's signature does not match (hook_secret)")
    watched = store().repos.known().get(repo) if store().repos.is_known(repo) else None
    if watched is None:
        flask.abort(404, f"unknown repository '{repo}': no observer watches it")
    forge: dict[str, Any] = watched.get("forge") or {} if isinstance(watched.get("forge"), dict) else {}
    if forge.get("kind") != kind:
        flask.abort(404, f"repository '{repo}' is not on {kind} (its forge is {forge.get('kind') or 'not set'})")
    payload = _payload(body)
    refusal = _other_repository(payload, watched, repo, str(forge.get("project", "")))
    if refusal:
        flask.abort(422, refusal)
    event = _event(kind)
    pull = None
    if event in PULL_EVENTS:
        try:
            pull = pullrequests.gitlab_event(payload) if kind == "gitlab" else pullrequests.github_event(payload)
        except BadInput as exc:
            flask.abort(422, str(exc))
    replayed = store().hooks.remember(marks(body), time.time())
    if replayed is not None:
        what, _, value = replayed.partition(":")
        flask.abort(409, f"a replay: delivery {value} was received before" if what == "delivery"
                    else "a replay: this hook's body was received before")
    if event == "ping":
        return flask.jsonify({"repo": repo, "event": "ping", "pong": True})
    if event in PUSH_EVENTS:
        heard = store().repos.notify(repo, _pushed_ref(payload), via="webhook")
        return flask.jsonify({"repo": repo, "event": "push", "observers": heard})
    if pull is not None:
        what, build, cancelled = pullrequests.act(store(), repo, pull)
        return flask.jsonify({"repo": repo, "event": "pull_request", "number": pull.number, "action": pull.action,
                              "result": what, "build": build.id if build else None,
                              "cancelled": [b.id for b in cancelled]})
    return flask.make_response(flask.jsonify({"repo": repo, "event": event[:100], "result": "ignored"}), 202)


def _event(kind: str) -> str:
    for name in EVENT_HEADERS[kind]:
        value = flask.request.headers.get(name)
        if value:
            return value[:100]
    return ""


def _other_repository(payload: dict[str, Any], watched: dict[str, Any], repo: str, project: str) -> str | None:
    """Why the payload is not about the watched repository (hooks.py), where its forge project's name (as
    `forge_project` gives it, or GitLab's numeric id) does not vouch for it either."""
    refusal = about_other_repository(payload, str(watched.get("url", "")), repo)
    if refusal is None or not project:
        return refusal
    _, names = named_repository(payload)
    ids = [str(section.get("id")) for part in ("project", "repository")
           if isinstance(section := payload.get(part), dict) and isinstance(section.get("id"), int)]
    if project.lower() in {name.lower() for name in names} or project in ids:
        return None
    return refusal
