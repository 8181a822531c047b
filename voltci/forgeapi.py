"""Posting one commit status to a forge, and what its answer means for the sender.

    GitHub         POST {api}/repos/{owner}/{repo}/statuses/{sha}           Authorization: Bearer TOKEN
    Gitea/Forgejo  POST {api}/api/v1/repos/{owner}/{repo}/statuses/{sha}    Authorization: token TOKEN
    GitLab         POST {api}/api/v4/projects/{id, url-encoded}/statuses/{sha}   PRIVATE-TOKEN: TOKEN

Each forge has its own state names (GitLab also says `running`, `canceled`, `skipped`, and names the
context `name`). The request goes to the forge link the observer registered for the build's
repository — never to anything a commit wrote — with a sha that must be hex, a project that must be a
project's path, and a token that must be a header's value (no line breaks): nothing a build writes
reaches the URL or the headers. A redirect is not followed (it would carry the token elsewhere); an
answer is read up to ANSWER_MAX bytes, within TIMEOUT_S.

`post_status` never raises: it returns an `Answer` — sent, retry (later: the forge is down, answers
garbage, or asks to wait, with how long when it says), or refused (a 4xx: the same request would be
refused again). Its `detail` is one line for the log, with the token taken out should an answer
echo it.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message
from typing import Any

from voltci.commitstatus import CommitStatus, State, clean
from voltci.forge import ForgeLink, is_project

TIMEOUT_S = 10.0
ANSWER_MAX = 64 * 1024
WAIT_MAX_S = 3600.0  # a forge asking for longer is asked again after an hour
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_TOKEN = re.compile(r"[\x21-\x7e]{1,4096}")  # visible ASCII: nothing that could end a header

STATE_NAMES: dict[str, dict[State, str]] = {
    "github": {State.PENDING: "pending", State.RUNNING: "pending", State.SUCCESS: "success",
               State.FAILURE: "failure", State.ERROR: "error", State.CANCELLED: "error", State.SKIPPED: "error"},
    "gitea": {State.PENDING: "pending", State.RUNNING: "pending", State.SUCCESS: "success",
              State.FAILURE: "failure", State.ERROR: "error", State.CANCELLED: "warning", State.SKIPPED: "warning"},
    "gitlab": {State.PENDING: "pending", State.RUNNING: "running", State.SUCCESS: "success",
               State.FAILURE: "failed", State.ERROR: "failed", State.CANCELLED: "canceled", State.SKIPPED: "skipped"},
}


class NoRequest(ValueError):
    """The request cannot be made: a sha, project or token that is not one (no answer will fix it)."""


@dataclass(frozen=True)
class Request:
    url: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Answer:
    outcome: str  # "sent" | "retry" | "refused"
    code: int  # the HTTP status; 0 when there was no answer
    detail: str  # one line for the log
    wait_s: float | None = None  # how long the forge asked to wait (Retry-After, a rate limit's reset)


def request(link: ForgeLink, sha: str, status: CommitStatus, token: str | None) -> Request:
    """The POST that sets `status` on commit `sha` of `link`'s project."""
    if not _SHA.fullmatch(sha):
        raise NoRequest(f"not a commit sha: {clean(sha)[:80]!r}")
    if not is_project(link.project) or link.kind not in STATE_NAMES:
        raise NoRequest(f"not a project on a forge: {clean(link.project)[:80]!r}")
    if token is None:
        raise NoRequest(f"no token: the environment variable {link.token_env} is not set")
    if not _TOKEN.fullmatch(token):
        raise NoRequest(f"the token in {link.token_env} is not one a header can carry")
    state = STATE_NAMES[link.kind][status.state]
    headers = {"Content-Type": "application/json", "User-Agent": "volt-ci", "Accept": "application/json"}
    payload: dict[str, Any] = {"state": state, "description": status.description}
    if status.target_url:
        payload["target_url"] = status.target_url
    if link.kind == "gitlab":
        url = f"{link.api}/api/v4/projects/{urllib.parse.quote(link.project, safe='')}/statuses/{sha}"
        headers["PRIVATE-TOKEN"] = token
        payload["name"] = status.context
    else:
        owner, repo = (urllib.parse.quote(part, safe="") for part in link.project.split("/", 1))
        root = f"{link.api}/api/v1" if link.kind == "gitea" else link.api
        url = f"{root}/repos/{owner}/{repo}/statuses/{sha}"
        headers["Authorization"] = f"Bearer {token}" if link.kind == "github" else f"token {token}"
        if link.kind == "github":
            headers["Accept"] = "application/vnd.github+json"
            headers["X-GitHub-Api-Version"] = "2022-11-28"
        payload["context"] = status.context
    return Request(url, headers, json.dumps(payload).encode())


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx is answered as it is: the token never follows it elsewhere


_OPENER = urllib.request.build_opener(_NoRedirects)


def post_status(link: ForgeLink, sha: str, status: CommitStatus, now: float | None = None) -> Answer:
    """POST `status` to the forge and say what came of it (see the module's docstring)."""
    token = link.token()
    where = f"{link.kind} {link.api}"
    try:
        made = request(link, sha, status, token)
    except NoRequest as exc:
        return Answer("refused", 0, f"{where}: {exc}")
    call = urllib.request.Request(made.url, data=made.body, headers=made.headers, method="POST")
    try:
        with _OPENER.open(call, timeout=TIMEOUT_S) as response:
            code, body = response.status, response.read(ANSWER_MAX)
            answer = judge(code, response.headers, body, now)
    except urllib.error.HTTPError as exc:
        try:
            body = exc.read(ANSWER_MAX)
        except OSError:
            body = b""
        answer = judge(exc.code, exc.headers, body, now)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        answer = Answer("retry", 0, f"no answer ({type(exc).__name__}: {getattr(exc, 'reason', exc)})")
    detail = answer.detail.replace(token, "[token]") if token else answer.detail
    return Answer(answer.outcome, answer.code, f"{where} {detail}", answer.wait_s)


def _shown(body: bytes) -> str:
    """The start of an answer's body, on one line, made safe."""
    text = body[:600].decode("utf-8", "replace")
    try:
        data = json.loads(body)
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            text = data["message"]
    except ValueError:
        pass
    return clean(text)[:200] or "(empty)"


def wait_asked(headers: Message | None, now: float | None = None) -> float | None:
    """How long the forge asks to wait: `Retry-After` (seconds or a date), else the reset of an exhausted
    rate limit (`x-ratelimit-reset`, epoch seconds); within [1 s, WAIT_MAX_S]."""
    if headers is None:
        return None
    now = time.time() if now is None else now
    wait: float | None = None
    after = (headers.get("Retry-After") or "").strip()
    if after:
        if after.isdigit():
            wait = float(after)
        else:
            try:
                wait = email.utils.parsedate_to_datetime(after).timestamp() - now
            except (TypeError, ValueError, IndexError):
                wait = None
    reset = (headers.get("X-RateLimit-Reset") or "").strip()
    if wait is None and reset.isdigit() and (headers.get("X-RateLimit-Remaining") or "").strip() == "0":
        wait = float(reset) - now
    return None if wait is None else min(WAIT_MAX_S, max(1.0, wait))


def judge(code: int, headers: Message | None, body: bytes, now: float | None = None) -> Answer:
    """What an answer means: sent, retry (and after how long, when the forge says), or refused."""
    wait = wait_asked(headers, now)
    limited = headers is not None and (headers.get("X-RateLimit-Remaining") or "").strip() == "0"
    if 200 <= code < 300:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if isinstance(data, dict):
            return Answer("sent", code, f"answered {code}")
        return Answer("retry", code, f"answered {code} with garbage: {_shown(body)}")
    message = _shown(body)
    if code == 429 or (code == 403 and (limited or wait is not None or "rate limit" in message.lower())):
        return Answer("retry", code, f"answered {code} (rate limited): {message}", wait)
    if code == 400 and "cannot transition status" in message.lower():
        return Answer("sent", code, "already in that state")  # GitLab: the same state again
    if code >= 500 or code == 408:
        return Answer("retry", code, f"answered {code}: {message}", wait)
    return Answer("refused", code, f"answered {code}: {message}")
