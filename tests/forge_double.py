"""A forge double: a real HTTP server on loopback that answers the commit-status endpoints of GitHub,
Gitea/Forgejo and GitLab as they do, and records every request.

    double = ForgeDouble(token="t0ken").start()
    double.api                    # http://127.0.0.1:PORT — a forge_api for any of the three kinds
    double.answer(502)            # the next answers: 502 (until told otherwise), 429 with Retry-After,
    double.answer(429, retry_after=1)  # 401, 404, or garbage (a 200 whose body is no JSON)
    double.answer("garbage")
    double.statuses("github")     # the statuses it took, in order
    double.invalid                # GitHub bodies that GitHub's OpenAPI description refuses (must stay [])

Every GitHub status body is checked against the request schema of `POST
/repos/{owner}/{repo}/statuses/{sha}` in GitHub's published OpenAPI description (tests/forges/,
see its README), with jsonschema; Gitea's and GitLab's against the fields and states their API
documentation names. A request without the expected token header is answered 401, as the forges do;
one for a project the double does not hold (`projects`) 404. GitLab refuses a transition to the state
a status is already in, and success or failure of a status that is not running (400 "Cannot
transition status"), as GitLab does.
"""

from __future__ import annotations

import copy
import http.server
import json
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

OPENAPI = Path(__file__).parent / "forges" / "github-statuses.openapi.json"
GITEA_STATES = {"pending", "success", "error", "failure", "warning"}
GITLAB_STATES = {"pending", "running", "success", "failed", "canceled", "skipped"}
BODY_MAX = 1024 * 1024
_GITHUB = re.compile(r"/repos/(?P<project>[^/]+/[^/]+)/statuses/(?P<sha>[^/]+)")
_GITEA = re.compile(r"/api/v1/repos/(?P<project>[^/]+/[^/]+)/statuses/(?P<sha>[^/]+)")
_GITLAB = re.compile(r"/api/v4/projects/(?P<project>[^/]+)/statuses/(?P<sha>[^/]+)")


def _nullable_to_json_schema(schema: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` as JSON Schema says it (a type list with "null")."""
    if isinstance(schema, dict):
        schema = {key: _nullable_to_json_schema(value) for key, value in schema.items()}
        if schema.pop("nullable", False) and isinstance(schema.get("type"), str):
            schema["type"] = [schema["type"], "null"]
        return schema
    if isinstance(schema, list):
        return [_nullable_to_json_schema(item) for item in schema]
    return schema


def github_status_schema() -> dict[str, Any]:
    """The request body schema of GitHub's "create a commit status", from its OpenAPI description."""
    spec = json.loads(OPENAPI.read_text(encoding="utf-8"))
    operation = spec["paths"]["/repos/{owner}/{repo}/statuses/{sha}"]["post"]
    schema = copy.deepcopy(operation["requestBody"]["content"]["application/json"]["schema"])
    return _nullable_to_json_schema(schema)


@dataclass
class Seen:
    """One request the double received."""

    kind: str  # github | gitea | gitlab | "" (no status endpoint)
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    code: int = 0  # what the double answered
    project: str = ""
    sha: str = ""
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def context(self) -> str:
        return str(self.status.get("name" if self.kind == "gitlab" else "context", ""))


class ForgeDouble:
    """See the module's docstring."""

    def __init__(self, token: str = "t0ken", projects: tuple[str, ...] = ("octo/proj", "42")):
        self.token = token
        self.projects = set(projects)
        self.seen: list[Seen] = []
        self.invalid: list[str] = []
        self.schema = github_status_schema()
        self._plan: list[tuple[Any, float | None]] = []  # answers to give next, in order (the last repeats)
        self._gitlab_state: dict[tuple[str, str, str], str] = {}
        self.location = ""  # where a 3xx answer points
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None

    # ------------------------------------------------------------ control

    def start(self) -> ForgeDouble:
        double = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                double._handle(self)

            def do_GET(self) -> None:
                double._handle(self)

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def api(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_port}"

    def answer(self, what: Any = None, retry_after: float | None = None, times: int | None = None) -> None:
        """Answer `what` (an HTTP status, "garbage", or None: as the forge would) from now on — or for the
        next `times` requests only, then as before."""
        with self._lock:
            if times is None:
                self._plan = [(what, retry_after)]
            else:
                rest = self._plan[-1:] if self._plan else [(None, None)]
                self._plan = [(what, retry_after)] * times + rest

    def statuses(self, kind: str | None = None, context: str | None = None) -> list[Seen]:
        """The statuses the double took (answered 201), in order."""
        with self._lock:
            return [s for s in self.seen if s.kind and 200 <= s.code < 300 and (kind is None or s.kind == kind)
                    and (context is None or s.context == context)]

    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self.seen)

    # ------------------------------------------------------------ answering

    def _next(self) -> tuple[Any, float | None]:
        with self._lock:
            if not self._plan:
                return None, None
            if len(self._plan) > 1:
                return self._plan.pop(0)
            return self._plan[0]

    def _handle(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        length = min(int(handler.headers.get("Content-Length") or 0), BODY_MAX)
        body = handler.rfile.read(length) if length else b""
        path = urllib.parse.urlsplit(handler.path).path
        seen = Seen("", handler.command, path, dict(handler.headers.items()), body, time.time())
        for kind, pattern in (("gitea", _GITEA), ("gitlab", _GITLAB), ("github", _GITHUB)):
            found = pattern.fullmatch(path)
            if found:
                seen.kind, seen.sha = kind, found["sha"]
                seen.project = urllib.parse.unquote(found["project"])
                break
        code, payload, headers = self._decide(seen)
        seen.code = code
        with self._lock:
            self.seen.append(seen)
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        handler.send_response(code)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Type", "application/json" if not isinstance(payload, bytes) else "text/html")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _decide(self, seen: Seen) -> tuple[int, Any, dict[str, str]]:
        what, retry_after = self._next()
        if what == "garbage":
            return 200, b"<html>\x00\xff not json", {}
        if isinstance(what, int):
            headers = {}
            if retry_after is not None:
                headers["Retry-After"] = str(int(retry_after))
            if 300 <= what < 400 and self.location:
                headers["Location"] = self.location
            if what == 403:  # GitHub's answer to an exhausted rate limit
                headers.update({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(time.time()) + 1)})
            return what, {"message": f"the double answers {what}"}, headers
        if seen.method != "POST" or not seen.kind:
            return 404, {"message": "Not Found"}, {}
        if not self._authorized(seen):
            return 401, {"message": "Bad credentials"}, {}
        if seen.project not in self.projects:
            return 404, {"message": "Not Found"}, {}
        try:
            status = json.loads(seen.body)
        except ValueError:
            return 400, {"message": "Problems parsing JSON"}, {}
        seen.status = status if isinstance(status, dict) else {}
        problem = self._check(seen.kind, status)
        if problem:
            self.invalid.append(f"{seen.kind}: {problem}: {seen.body[:300]!r}")
            return 422, {"message": f"Validation Failed: {problem}"}, {}
        if seen.kind == "gitlab":
            slot = (seen.project, seen.sha, str(status.get("name", "default")))
            before = self._gitlab_state.get(slot)
            if before == status["state"] or (status["state"] in ("success", "failed") and before != "running"):
                return 400, {"message": f"Cannot transition status via :{status['state']} from :{before} (Reason(s): "
                                        f"Status cannot transition)"}, {}
            self._gitlab_state[slot] = status["state"]
        return 201, {"id": len(self.seen) + 1, "state": status.get("state"), "context": seen.context}, {}

    def _authorized(self, seen: Seen) -> bool:
        headers = {name.lower(): value for name, value in seen.headers.items()}
        if seen.kind == "gitlab":
            return headers.get("private-token") == self.token
        wanted = {f"token {self.token}"} | ({f"Bearer {self.token}"} if seen.kind == "github" else set())
        return headers.get("authorization") in wanted

    def _check(self, kind: str, status: Any) -> str:
        """What is wrong with a status body for `kind` ("" when nothing)."""
        if kind == "github":
            try:
                jsonschema.validate(status, self.schema)
            except jsonschema.ValidationError as exc:
                return exc.message
            description = status.get("description") or ""
            return "description longer than 140 characters" if len(description) > 140 else ""
        if not isinstance(status, dict):
            return "not an object"
        states = GITLAB_STATES if kind == "gitlab" else GITEA_STATES
        if status.get("state") not in states:
            return f"state {status.get('state')!r}"
        for name in ("description", "target_url", "name" if kind == "gitlab" else "context"):
            if name in status and not isinstance(status[name], str):
                return f"{name} is not a string"
        return ""
