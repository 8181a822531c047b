"""The app's rules for every request: read-only unless the request carries the web token, and errors
as pages (or JSON under /api/ and /hooks/) with their status — a Redis that is down or full is a 503, not a 500.

What is a read is decided by the view, not the method: a GET, HEAD or OPTIONS of a view known to
only read (Volt's pages and API, rq-dashboard's READS). Everything else needs the token — a POST, and a
GET of any other view: rq-dashboard's `GET /rq/requeue/<queue>`, or a view a newer version adds.
A forge's hook proves itself with its signature instead (hooks.py, forgehooks.py)."""

from __future__ import annotations

import hmac
from typing import Any

import flask
import redis
from werkzeug.exceptions import HTTPException, ServiceUnavailable

from voltci.connection import redacted
from voltci.outage import describe, is_full
from voltci.web import dashboard
from voltci.web.context import volt

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Volt's own blueprints whose every view only reads, and single views that do.
READ_BLUEPRINTS = frozenset({"pages", "builds", "testpages", "api"})
READ_VIEWS = frozenset({"static", "prometheus_metrics"}) | dashboard.READS
SIGNED_VIEWS = frozenset({"hooks.push_hook", "forgehooks.github_hook", "forgehooks.gitea_hook",
                          "forgehooks.gitlab_hook"})


def allowed() -> bool:
    """Whether the request carries the configured token (constant-time compare)."""
    token = volt().settings.web_token
    if not token:
        return False
    given = flask.request.form.get("token", "")
    header = flask.request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        given = header[len("Bearer "):]
    return hmac.compare_digest(given.encode(), token.encode())


def is_read() -> bool:
    """Whether the request only reads: a read method, of a view known to only read."""
    endpoint = flask.request.endpoint or ""
    blueprint, dot, _ = endpoint.partition(".")
    known = endpoint in READ_VIEWS or (bool(dot) and blueprint in READ_BLUEPRINTS)
    return flask.request.method in READ_METHODS and known


def read_only() -> None:
    endpoint = flask.request.endpoint
    if endpoint is None or endpoint in SIGNED_VIEWS:
        return  # no view: Flask answers 404 or 405 and runs nothing; a hook checks its signature
    if not is_read() and not allowed():
        flask.abort(403, "read-only: this needs the web token (setting web_token)" if volt().settings.web_token
                    else "read-only: no web_token is configured")


def error_page(exc: HTTPException) -> tuple[Any, int]:
    if flask.request.path.startswith(("/api/", "/hooks/")):  # for programs: one line of JSON
        return flask.jsonify({"error": exc.description, "status": exc.code}), exc.code or 500
    return flask.render_template("error.html", code=exc.code, name=exc.name,
                                 message=exc.description), exc.code or 500


def redis_down(exc: redis.RedisError) -> tuple[Any, int]:
    if is_full(exc):
        return error_page(ServiceUnavailable(describe(exc)))
    return error_page(ServiceUnavailable(f"Redis is unavailable ({redacted(volt().redis_url)}): try again shortly"))


# Volt's own pages run only Volt's own scripts (static/): were something a test printed ever let through
# unescaped, the browser would still not run it. rq-dashboard, under /rq, keeps its own inline scripts.
CONTENT_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                  "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'")


def content_policy(response: flask.Response) -> flask.Response:
    if not flask.request.path.startswith("/rq"):
        response.headers.setdefault("Content-Security-Policy", CONTENT_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


def install(app: flask.Flask) -> None:
    app.before_request(read_only)
    app.after_request(content_policy)
    app.register_error_handler(HTTPException, error_page)
    app.register_error_handler(redis.RedisError, redis_down)
