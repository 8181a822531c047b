"""`volt web`: server-rendered pages over the same Redis, a badge per repository, JSON under /api/,
and rq-dashboard under /rq — all read-only unless a `web_token` is configured.

Every path part and query value is checked (repository names, commit prefixes, page numbers,
branch names) before it goes near Redis; what does not pass is a 400 or 404 page. Templates are
Jinja's with autoescaping on, so test names, messages and logs are shown, never run.
"""

from __future__ import annotations

import hmac
import json
import re
from typing import Any

import flask
import redis
import rq_dashboard
import rq_dashboard.web
from jinja2 import DictLoader
from rq_dashboard.web import setup_rq_connection
from werkzeug.exceptions import HTTPException, ServiceUnavailable

from voltci import metrics, queue, report
from voltci.config import Settings
from voltci.connection import connect, redacted
from voltci.errors import BadInput
from voltci.models import Build, Outcome, Status, TestResult
from voltci.notify import SIGNATURE_HEADER, signature
from voltci.outage import describe, is_full
from voltci.store import Store
from voltci.web_templates import TEMPLATES

PER_PAGE = 25
MAX_PAGE = 100_000
MAX_PASSING_ROWS = 2000
PAGE_LOG_CHARS = 64 * 1024  # the page shows the end of the output; /api/builds/…/log has all of it  # a page lists every failing test, and this many of the others
REFRESH_S = 3
BRANCH = re.compile(r"[A-Za-z0-9._/-]{1,200}")
SHA_PREFIX = re.compile(r"[0-9a-f]{4,40}")
BADGE_COLOURS = {"passed": "#2e7d32", "failed": "#c62828", "error": "#6a1b9a", "timeout": "#ef6c00",
                 "cancelled": "#616161", "skipped": "#9e9e9e", "running": "#1565c0", "queued": "#757575", "unknown": "#9e9e9e"}


def create_app(settings: Settings) -> flask.Flask:
    app = flask.Flask("voltci.web")
    app.jinja_loader = DictLoader(TEMPLATES)  # names end in .html: autoescaping is on
    url = settings.effective_redis_url
    store = Store(connect(url, ping=False), settings)
    mount_rq_dashboard(app, url)

    def allowed() -> bool:
        """Whether the request carries the configured token (constant-time compare)."""
        if not settings.web_token:
            return False
        given = flask.request.form.get("token", "")
        header = flask.request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            given = header[len("Bearer "):]
        return hmac.compare_digest(given.encode(), settings.web_token.encode())

    @app.before_request
    def read_only() -> None:
        if flask.request.path.startswith("/hooks/"):
            return  # a forge's push webhook proves itself with its signature instead
        if flask.request.method not in ("GET", "HEAD", "OPTIONS") and not allowed():
            flask.abort(403, "read-only: this needs the web token (setting web_token)" if settings.web_token
                        else "read-only: no web_token is configured")

    @app.errorhandler(HTTPException)
    def error_page(exc: HTTPException) -> tuple[Any, int]:
        if flask.request.path.startswith("/api/"):
            return flask.jsonify({"error": exc.description, "status": exc.code}), exc.code or 500
        return flask.render_template("error.html", code=exc.code, name=exc.name,
                                     message=exc.description), exc.code or 500

    @app.errorhandler(redis.RedisError)
    def redis_down(exc: redis.RedisError) -> tuple[Any, int]:
        if is_full(exc):
            return error_page(ServiceUnavailable(describe(exc)))
        return error_page(ServiceUnavailable(f"Redis is unavailable ({redacted(url)}): try again shortly"))

    def repo_or_404(repo: str) -> str:
        if not store.is_known_repo(repo):
            flask.abort(404, f"no repository named '{repo}'")
        return repo

    def page_arg() -> int:
        text = flask.request.args.get("page", "1")
        if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
            flask.abort(400, f"page must be a number from 1 to {MAX_PAGE}, not '{text}'")
        return int(text)

    def build_or_404(repo: str, sha: str) -> Build:
        repo_or_404(repo)
        if not SHA_PREFIX.fullmatch(sha):
            flask.abort(404, f"'{sha}' is not a commit (4 to 40 lowercase hex digits)")
        try:
            build = store.get_build(store.resolve_commit(sha, repo))
        except BadInput as exc:
            flask.abort(404, str(exc))
        if build is None:
            flask.abort(404, f"no build of {sha} in '{repo}'")
        return build

    def history_page(repo: str) -> dict[str, Any]:
        page = page_arg()
        builds, total = store.history_page(repo, page, PER_PAGE)
        pages = max(1, -(-total // PER_PAGE))
        if page > pages:
            flask.abort(404, f"'{repo}' has {pages} page(s) of builds, not {page}")
        return {"repo": repo, "page": page, "pages": pages, "total": total, "builds": builds}

    def repositories() -> list[dict[str, Any]]:
        known = store.known_repos()
        latest = store.latest_builds(sorted(known))
        return [{"name": name, "url": known[name].get("url", ""), "latest": latest[name]} for name in sorted(known)]

    # ------------------------------------------------------------ pages

    @app.get("/")
    def index() -> str:
        return flask.render_template("index.html", repos=repositories(), refresh=store.busy(),
                                     running=store.running_builds(), queued=store.queue_depth())

    @app.get("/repo/<repo>")
    def repo_page(repo: str) -> str:
        data = history_page(repo_or_404(repo))
        busy = any(not b.status.is_final for b in data["builds"])
        return flask.render_template("repo.html", refresh=busy, **data)

    @app.get("/build/<repo>/<sha>")
    def build_page(repo: str, sha: str) -> str:
        build = build_or_404(repo, sha)
        tests = store.get_tests(build.id)
        bad = [t for t in tests if t.outcome in (Outcome.FAILED, Outcome.ERROR)]
        rest = [t for t in tests if t.outcome not in (Outcome.FAILED, Outcome.ERROR)]
        output = store.read_log(build.id)
        return flask.render_template(
            "build.html", build=build, output=output[-PAGE_LOG_CHARS:], output_cut=len(output) > PAGE_LOG_CHARS, bad=bad, rest=rest[:MAX_PASSING_ROWS], hidden=max(0, len(rest) - MAX_PASSING_ROWS),
            attempts=store.get_attempts(build.id), refresh=not build.status.is_final,
            can_act=bool(settings.web_token), runners={r["name"]: r for r in store.runner_table()})

    @app.get("/runners")
    def runners_page() -> str:
        return flask.render_template("runners.html", runners=store.runner_table(),
                                     lost=store.recent_lost(20), refresh=True)

    @app.post("/build/<repo>/<sha>/cancel")
    def cancel(repo: str, sha: str) -> flask.Response:
        build = build_or_404(repo, sha)
        if store.cancel(build.id, "cancelled from the web page") is None:
            flask.abort(409, f"the build has already ended ({build.status.value})")
        return flask.redirect(flask.url_for("build_page", repo=repo, sha=build.commit), 303)

    @app.post("/build/<repo>/<sha>/rebuild")
    def rebuild(repo: str, sha: str) -> flask.Response:
        build = build_or_404(repo, sha)
        if store.rebuild(build.id) is None:
            flask.abort(409, f"the build has not ended yet ({build.status.value})")
        return flask.redirect(flask.url_for("build_page", repo=repo, sha=build.commit), 303)

    # ------------------------------------------------------------ push webhook

    @app.post("/hooks/<repo>")
    def push_hook(repo: str) -> flask.Response:
        """A forge's push webhook: signed with `hook_secret` (GitHub's X-Hub-Signature-256, or
        X-Volt-Signature), it has the observer look at the repository now."""
        if not settings.hook_secret:
            flask.abort(404, "push webhooks are off: no hook_secret is configured")
        body = flask.request.get_data(cache=False)
        given = flask.request.headers.get("X-Hub-Signature-256") or flask.request.headers.get(SIGNATURE_HEADER, "")
        if not hmac.compare_digest(given.encode(), signature(body, settings.hook_secret).encode()):
            flask.abort(403, "the signature does not match (hook_secret)")
        try:
            heard = store.notify(repo, _pushed_ref(body), via="webhook")
        except BadInput as exc:
            flask.abort(404, str(exc))
        return flask.jsonify({"repo": repo, "observers": heard})

    # ------------------------------------------------------------ badge

    @app.get("/badge/<repo>.svg")
    def badge(repo: str) -> flask.Response:
        repo_or_404(repo)
        branch = flask.request.args.get("branch")
        if branch is not None and not BRANCH.fullmatch(branch):
            flask.abort(400, "not a branch name")
        build = store.latest_build(repo, branch)
        status = build.status.value if build else "unknown"
        svg = flask.render_template("badge.svg.html", label="volt", status=status,
                                    colour=BADGE_COLOURS.get(status, BADGE_COLOURS["unknown"]),
                                    label_width=40, status_width=8 + 7 * len(status))
        response = flask.Response(svg, mimetype="image/svg+xml")
        response.headers["Cache-Control"] = "no-cache, max-age=0"
        return response

    # ------------------------------------------------------------ JSON

    @app.get("/api/repos")
    def api_repos() -> flask.Response:
        return flask.jsonify([{"name": r["name"], "url": r["url"],
                               "latest": report.summary_dict(r["latest"]) if r["latest"] else None}
                              for r in repositories()])

    @app.get("/api/repos/<repo>/builds")
    def api_history(repo: str) -> flask.Response:
        data = history_page(repo_or_404(repo))
        return flask.jsonify({**data, "builds": [report.summary_dict(b) for b in data["builds"]]})

    @app.get("/api/builds/<repo>/<sha>")
    def api_build(repo: str, sha: str) -> flask.Response:
        build = build_or_404(repo, sha)
        return flask.jsonify(report.as_dict(build, store.get_tests(build.id), store.get_attempts(build.id),
                                            store.get_shards(build.id)))

    @app.get("/api/builds/<repo>/<sha>/log")
    def api_log(repo: str, sha: str) -> flask.Response:
        build = build_or_404(repo, sha)
        return flask.Response(store.read_log(build.id), mimetype="text/plain")

    @app.get("/api/runners")
    def api_runners() -> flask.Response:
        return flask.jsonify({"runners": store.runner_table(), "lost": store.recent_lost(20),
                              "queued": store.queue_depth()})

    app.jinja_env.globals.update(REFRESH_S=REFRESH_S, outcome_rank=_outcome_rank, Status=Status)
    metrics.register(app, store)
    return app


def mount_rq_dashboard(app: flask.Flask, url: str) -> None:
    """rq-dashboard under /rq, reading jobs as Volt writes them (JSON), its delete buttons off.

    rq-dashboard keeps its serializer in a module global (its CLI's `--json` sets the same)."""
    rq_dashboard.web.config.serializer = queue.JOB_SERIALIZER
    app.config.update(RQ_DASHBOARD_REDIS_URL=url, RQ_DASHBOARD_DISABLE_DELETE=True)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix="/rq")
    setup_rq_connection(app)


def _pushed_ref(body: bytes) -> str | None:
    try:
        ref = json.loads(body).get("ref")
    except (ValueError, AttributeError):
        return None
    return ref if isinstance(ref, str) and BRANCH.fullmatch(ref) else None


def _outcome_rank(test: TestResult) -> int:
    return 0 if test.outcome in (Outcome.FAILED, Outcome.ERROR) else 1
