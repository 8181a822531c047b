"""A forge's push webhook, `POST /hooks/<repo>`: the observer looks at the repository now.

A hook is taken once, for the repository it is about, and only signed with `hook_secret`. In order,
each refusal a status and one line (JSON):

- 404 no `hook_secret` is set; 413 a body over MAX_BODY (GitHub's own cap on a payload);
- 403 the signature does not match: `X-Hub-Signature-256` (GitHub, Gitea, Forgejo) or `X-Volt-Signature`,
  `sha256=<HMAC-SHA256 of the body>`; or `X-Gitea-Signature` / `X-Forgejo-Signature`, the bare hex;
- 404 no repository of that name is watched;
- 400 the body is not a JSON object, or a delivery id is malformed;
- 422 the payload names no repository, or another one than the path's: its repository's URLs
  (`clone_url`, `ssh_url`, `html_url`, GitLab's `git_http_url`, …) or full name (`owner/name`,
  GitLab's `path_with_namespace`) must be the URL Volt watches (the same host and path, whatever the
  scheme, user or `.git`), or that URL must end in the full name (a local mirror of it);
- 409 a replay: the same body, or the same delivery id (`X-GitHub-Delivery`, `X-Gitea-Delivery`,
  `X-Forgejo-Delivery`, `X-Gitlab-Event-UUID`), was taken before.

Why the body counts, not only the delivery id: the signature covers the body alone, so whoever
replays a captured hook can put any delivery id on it; the body's digest is what they cannot change.
A hook without a delivery id is therefore taken once too, by its body; the delivery id, when given,
also catches a forge's own redelivery. A push's body is unique (it names the commits before and
after, and the time of the push), so a real push is never mistaken for a replay. Marks are kept a
week (store/hooks.py); a replay older than that only makes the observer look at the repository,
which its polling does anyway.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from typing import Any
from urllib.parse import urlsplit

import flask

from voltci.errors import BadInput
from voltci.web.checks import BRANCH
from voltci.web.context import store, volt
from voltci.webhooks import SIGNATURE_HEADER, signature

bp = flask.Blueprint("hooks", __name__)

MAX_BODY = 25 * 1024 * 1024
SIGNED = ("X-Hub-Signature-256", SIGNATURE_HEADER)        # sha256=<hex>
SIGNED_HEX = ("X-Gitea-Signature", "X-Forgejo-Signature")  # <hex>
DELIVERY_HEADERS = ("X-GitHub-Delivery", "X-Gitea-Delivery", "X-Forgejo-Delivery", "X-Gitlab-Event-UUID")
DELIVERY_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")
URL_FIELDS = ("clone_url", "ssh_url", "git_url", "html_url", "url", "svn_url", "git_http_url", "git_ssh_url",
              "http_url", "web_url", "homepage")
NAME_FIELDS = ("full_name", "path_with_namespace")


@bp.post("/hooks/<repo>")
def push_hook(repo: str) -> flask.Response:
    secret = volt().settings.hook_secret
    if not secret:
        flask.abort(404, "push webhooks are off: no hook_secret is configured")
    flask.request.max_content_length = MAX_BODY
    body = flask.request.get_data(cache=False)
    if not signed(body, secret):
        flask.abort(403, "the signature does not match (hook_secret)")
    watched = store().repos.known().get(repo) if store().repos.is_known(repo) else None
    if watched is None:
        flask.abort(404, f"unknown repository '{repo}': no observer watches it")
    payload = _payload(body)
    refusal = about_other_repository(payload, str(watched.get("url", "")), repo)
    if refusal:
        flask.abort(422, refusal)
    replayed = store().hooks.remember(marks(body), time.time())
    if replayed is not None:
        kind, _, value = replayed.partition(":")
        flask.abort(409, f"a replay: delivery {value} was received before" if kind == "delivery"
                    else "a replay: this hook's body was received before")
    try:
        heard = store().repos.notify(repo, _pushed_ref(payload), via="webhook")
    except BadInput as exc:
        flask.abort(404, str(exc))
    return flask.jsonify({"repo": repo, "observers": heard})


def signed(body: bytes, secret: str) -> bool:
    """Whether one of the signature headers holds the body's HMAC with `secret` (constant-time)."""
    expected = signature(body, secret)
    headers = flask.request.headers
    given = [(headers[name], expected) for name in SIGNED if name in headers]
    given += [(headers[name], expected.removeprefix("sha256=")) for name in SIGNED_HEX if name in headers]
    return any(hmac.compare_digest(value.encode(), want.encode()) for value, want in given)


def marks(body: bytes) -> list[str]:
    """What a hook is remembered by: its delivery id when the forge gives one, and its body's digest."""
    found = []
    for name in DELIVERY_HEADERS:
        delivery = flask.request.headers.get(name)
        if delivery is None:
            continue
        if not DELIVERY_ID.fullmatch(delivery):
            flask.abort(400, f"{name} is not a delivery id")
        found.append(f"delivery:{delivery}")
    return [*found, f"body:{hashlib.sha256(body).hexdigest()[:32]}"]


def _payload(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        payload = None
    if not isinstance(payload, dict):
        flask.abort(400, "the body is not a JSON object")
    return payload


def named_repository(payload: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The URLs and full names (`owner/name`) the payload gives for its repository (GitHub, Gitea and
    Forgejo: `repository`; GitLab: `project` and `repository`)."""
    urls: list[str] = []
    names: list[str] = []
    for part in ("repository", "project"):
        section = payload.get(part)
        if not isinstance(section, dict):
            continue
        urls += [v for f in URL_FIELDS if isinstance(v := section.get(f), str) and 0 < len(v) <= 2000]
        names += [v for f in NAME_FIELDS if isinstance(v := section.get(f), str) and 0 < len(v) <= 500]
    return urls, names


def url_key(url: str) -> str:
    """`host/path` of a repository's URL, lowercase, the same for its https, ssh and scp-like forms
    (`https://github.com/Org/Proj.git`, `git@github.com:org/proj`, `ssh://git@github.com:22/org/proj/`
    are all `github.com/org/proj`); a local path or file URL is `/its/path`."""
    text = url.strip()
    scp = re.fullmatch(r"(?:[^@/:]+@)?([^@/:]+):(?!//)(.+)", text)
    if "://" in text:
        parts = urlsplit(text)
        host, path = (parts.hostname or ""), parts.path
    elif scp is not None:
        host, path = scp.group(1), scp.group(2)
    else:
        host, path = "", text
    path = path.strip("/").removesuffix(".git").strip("/")
    return f"{host}/{path}".lower()


def about_other_repository(payload: dict[str, Any], watched_url: str, repo: str) -> str | None:
    """Why the payload is not about the repository Volt watches at `watched_url`, or None when it is."""
    urls, names = named_repository(payload)
    if not urls and not names:
        return "the payload names no repository (a push hook's `repository`), so it cannot be checked"
    mine = url_key(watched_url)
    if any(url_key(url) == mine for url in urls):
        return None
    if any(mine.endswith("/" + name.strip("/").lower()) for name in names if "/" in name.strip("/")):
        return None  # `owner/name` at the end of the URL's path: a mirror of it (a bare name proves nothing)
    named = (names or urls)[0][:200]
    return f"the payload is about {named!r}, not '{repo}' ({watched_url[:200]})"


def _pushed_ref(payload: dict[str, Any]) -> str | None:
    ref = payload.get("ref")
    return ref if isinstance(ref, str) and BRANCH.fullmatch(ref) else None
