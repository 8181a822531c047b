"""A repository's page (its builds) and a build's page."""

from __future__ import annotations

import flask

from voltci.models import Outcome
from voltci.web.checks import build_or_404, repo_or_404
from voltci.web.context import store, volt
from voltci.web.reads import history_page

bp = flask.Blueprint("builds", __name__)

MAX_PASSING_ROWS = 2000  # a page lists every failing test, and this many of the others
PAGE_LOG_CHARS = 64 * 1024  # the page shows the end of the output; /api/builds/…/log has all of it


@bp.get("/repo/<repo>")
def repo_page(repo: str) -> str:
    data = history_page(repo_or_404(repo))
    busy = any(not b.status.is_final for b in data["builds"])
    return flask.render_template("repo.html", refresh=busy, **data)


@bp.get("/build/<repo>/<sha>")
def build_page(repo: str, sha: str) -> str:
    build = build_or_404(repo, sha)
    tests = store().get_tests(build.id)
    bad = [t for t in tests if t.outcome in (Outcome.FAILED, Outcome.ERROR)]
    rest = [t for t in tests if t.outcome not in (Outcome.FAILED, Outcome.ERROR)]
    output = store().read_log(build.id)
    return flask.render_template(
        "build.html", build=build, output=output[-PAGE_LOG_CHARS:], output_cut=len(output) > PAGE_LOG_CHARS,
        bad=bad, rest=rest[:MAX_PASSING_ROWS], hidden=max(0, len(rest) - MAX_PASSING_ROWS),
        attempts=store().get_attempts(build.id), refresh=not build.status.is_final,
        can_act=bool(volt().settings.web_token), runners={r["name"]: r for r in store().runner_table()})
