"""The same as the pages, as JSON under /api/ (`/api/builds/NAME/SHA` is the `volt report --json` contract)."""

from __future__ import annotations

import flask

from voltci import report, testhistory
from voltci.web import charts
from voltci.web.builds import TREND_BUILDS, query_arg
from voltci.web.checks import branch_arg, build_or_404, repo_or_404
from voltci.web.context import store
from voltci.web.formatting import test_url
from voltci.web.reads import history_page, repositories
from voltci.web.testpages import history_or_404
from voltci.web.testsearch import build_table, search

bp = flask.Blueprint("api", __name__, url_prefix="/api")

MAX_LIMIT = 200


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
    records = store().records
    return flask.jsonify(report.as_dict(build, records.get_tests(build.id), records.get_attempts(build.id),
                                        records.get_shards(build.id), records.get_legs(build.id)))


@bp.get("/builds/<repo>/<sha>/log")
def api_log(repo: str, sha: str) -> flask.Response:
    """The build's output, or with `leg=NAME` the output of one matrix leg of it."""
    build = build_or_404(repo, sha)
    name = flask.request.args.get("leg")
    if name is None:
        return flask.Response(store().logs.read(build.id), mimetype="text/plain")
    leg = next((leg for leg in store().records.get_legs(build.id) if leg.leg == name), None)
    if leg is None:
        flask.abort(404, f"the build of {build.short} has no matrix leg {name[:100]!r}")
    return flask.Response(store().logs.read(leg.id), mimetype="text/plain")


@bp.get("/runners")
def api_runners() -> flask.Response:
    return flask.jsonify({"runners": [row.to_dict() for row in store().runners.table()],
                          "lost": [lost.to_dict() for lost in store().runners.recent_lost(20)],
                          "queued": store().queue.depth()})


@bp.get("/builds/<repo>/<sha>/tests")
def api_build_tests(repo: str, sha: str) -> flask.Response:
    """A search over the build's test ids (`q`: words that must all be in the id, any case): the first
    `limit` (1 to 200, default 50) matches — never the whole list."""
    build = build_or_404(repo, sha)
    query = query_arg()
    limit_text = flask.request.args.get("limit", "50")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_LIMIT:
        flask.abort(400, f"limit must be a number from 1 to {MAX_LIMIT}")
    table = build_table(store(), build)
    found, matched = search(table, query, int(limit_text))
    return flask.jsonify({"repo": repo, "commit": build.commit, "query": query, "total": len(table),
                          "matched": matched, "more": matched > len(found),
                          "tests": [{"id": f.test_id, "outcome": f.cell.outcome.value if f.cell.outcome else None,
                                     "duration_s": f.cell.ms / 1000, "history_url": test_url(repo, f.test_id)}
                                    for f in found]})


@bp.get("/repos/<repo>/tests/<path:test_id>", merge_slashes=False)
def api_test_history(repo: str, test_id: str) -> flask.Response:
    """A test's history (`volt test-history --json`)."""
    return flask.jsonify(testhistory.as_dict(history_or_404(repo, test_id)))


@bp.get("/repos/<repo>/trend")
def api_trend(repo: str) -> flask.Response:
    """What the repository page's chart draws: its newest builds (of `branch`), oldest first."""
    repo_or_404(repo)
    branch = branch_arg()
    return flask.jsonify({"repo": repo, "branch": branch,
                          "builds": charts.trend(store().history.recent_builds(repo, branch, TREND_BUILDS))})
