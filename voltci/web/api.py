"""The same as the pages, as JSON under /api/ (`/api/builds/NAME/SHA` is the `volt report --json` contract)."""

from __future__ import annotations

import flask

from voltci import report
from voltci.web.checks import build_or_404, repo_or_404
from voltci.web.context import store
from voltci.web.reads import history_page, repositories

bp = flask.Blueprint("api", __name__, url_prefix="/api")


@bp.get("/repos")
def api_repos() -> flask.Response:
    return flask.jsonify([{"name": r["name"], "url": r["url"],
                           "latest": report.summary_dict(r["latest"]) if r["latest"] else None}
                          for r in repositories()])


@bp.get("/repos/<repo>/builds")
def api_history(repo: str) -> flask.Response:
    data = history_page(repo_or_404(repo))
    return flask.jsonify({**data, "builds": [report.summary_dict(b) for b in data["builds"]]})


@bp.get("/builds/<repo>/<sha>")
def api_build(repo: str, sha: str) -> flask.Response:
    build = build_or_404(repo, sha)
    return flask.jsonify(report.as_dict(build, store().get_tests(build.id), store().get_attempts(build.id),
                                        store().get_shards(build.id)))


@bp.get("/builds/<repo>/<sha>/log")
def api_log(repo: str, sha: str) -> flask.Response:
    build = build_or_404(repo, sha)
    return flask.Response(store().read_log(build.id), mimetype="text/plain")


@bp.get("/runners")
def api_runners() -> flask.Response:
    return flask.jsonify({"runners": store().runner_table(), "lost": store().recent_lost(20),
                          "queued": store().queue_depth()})
