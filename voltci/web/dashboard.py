"""rq-dashboard mounted under /rq of Volt's app, held to Volt's rules.

rq-dashboard is written for a trusted network: some of its GET routes change things (`GET
/rq/requeue/<queue>` requeues every failed job), its pages put job data — a build's description is
its commit subject — into the page as HTML, and one of its scripts puts the queue name from the URL
into JavaScript unescaped. Volt, which serves it to anyone who reaches `volt web`, adds three rules:

- READS names the views known to only read; every other view of it — its actions, GET or POST, and any
  view a newer version adds — needs the web token (guard.py asks this module);
- every part of a /rq path is checked before rq-dashboard sees it (a queue name is a queue name, a
  page a number), so nothing from the URL reaches its scripts but what it is meant to be (a 404 else);
- its pages get a Content-Security-Policy that runs only its own scripts: its files, and its inline
  script blocks, which get a fresh nonce in every response. Job data it inserts as HTML (a commit
  subject `<img src=x onerror=…>`, a `javascript:` link, a `<script>`) is shown, never run. Its
  templates compile with `new Function`, hence 'unsafe-eval'; that runs no text of a job, which only
  fills the templates.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any

import flask
import rq_dashboard
import rq_dashboard.web
from rq_dashboard.web import setup_rq_connection

from voltci import jobqueue

BLUEPRINT = "rq_dashboard"
READS = frozenset(f"{BLUEPRINT}.{view}" for view in (
    "static", "favicon", "queues_overview", "workers_overview", "jobs_overview", "job_view",
    "list_queues", "list_jobs", "job_info", "list_workers"))

REGISTRIES = frozenset({"queued", "started", "finished", "failed", "deferred", "scheduled", "canceled"})
_NAME = re.compile(r"[A-Za-z0-9._:-]{1,200}")
_QUEUE = re.compile(r"[A-Za-z0-9._-]{1,100}")


def _number(most: int) -> Callable[[Any], bool]:
    return lambda value: str(value).isdigit() and 1 <= int(value) <= most


# What each part of a /rq path may be; a part not named here (a newer version's) must be a plain name.
ARGUMENTS: dict[str, Callable[[Any], bool]] = {
    "instance_number": lambda value: value == 0,  # Volt gives rq-dashboard one Redis
    "queue_name": lambda value: bool(_QUEUE.fullmatch(str(value))),
    "registry_name": lambda value: value in REGISTRIES,
    "order": lambda value: value in ("asc", "dsc"),
    "per_page": _number(1000),
    "page": _number(1_000_000),
    "job_id": lambda value: bool(_NAME.fullmatch(str(value))),
}

POLICY = ("default-src 'self'; script-src 'self' 'nonce-{nonce}' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
          "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
          "frame-ancestors 'self'")
_INLINE_SCRIPT = re.compile(r"<script\b(?![^>]*\bsrc=)", re.IGNORECASE)


def mount_rq_dashboard(app: flask.Flask, url: str) -> None:
    """rq-dashboard under /rq, reading jobs as Volt writes them (JSON), its delete buttons off, its paths
    checked and its pages under a content policy (the token rule is guard.py's, with READS).

    rq-dashboard keeps its serializer in a module global (its CLI's `--json` sets the same)."""
    rq_dashboard.web.config.serializer = jobqueue.JOB_SERIALIZER
    app.config.update(RQ_DASHBOARD_REDIS_URL=url, RQ_DASHBOARD_DISABLE_DELETE=True)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix="/rq")
    setup_rq_connection(app)
    app.before_request(check_path)
    app.after_request(content_policy)


def is_dashboard(endpoint: str | None) -> bool:
    return (endpoint or "").startswith(BLUEPRINT + ".")


def check_path() -> None:
    """Every part of a /rq path is what its name says (see ARGUMENTS), or the request is a 404."""
    endpoint = flask.request.endpoint
    if not is_dashboard(endpoint) or endpoint == f"{BLUEPRINT}.static":
        return  # static files are looked up by rq-dashboard's own safe join
    for name, value in (flask.request.view_args or {}).items():
        check = ARGUMENTS.get(name, ARGUMENTS["job_id"])
        if not check(value):
            flask.abort(404, f"not a valid {name.replace('_', ' ')} for rq-dashboard")


def content_policy(response: flask.Response) -> flask.Response:
    """rq-dashboard's responses run only its own scripts: a nonce on each inline block of its pages."""
    if not flask.request.path.startswith("/rq"):
        return response
    nonce = secrets.token_urlsafe(18)
    if response.mimetype == "text/html" and not response.direct_passthrough:
        response.set_data(_INLINE_SCRIPT.sub(f'<script nonce="{nonce}"', response.get_data(as_text=True)))
    response.headers["Content-Security-Policy"] = POLICY.format(nonce=nonce)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
