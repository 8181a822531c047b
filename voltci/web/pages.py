"""The pages around the builds: the repositories, the runners, and a repository's status badge."""

from __future__ import annotations

import flask

from voltci.web.checks import branch_arg, repo_or_404
from voltci.web.context import store
from voltci.web.reads import repositories

bp = flask.Blueprint("pages", __name__)

BADGE_COLOURS = {"passed": "#2e7d32", "failed": "#c62828", "error": "#6a1b9a", "timeout": "#ef6c00",
                 "cancelled": "#616161", "skipped": "#9e9e9e", "running": "#1565c0", "queued": "#757575",
                 "unknown": "#9e9e9e"}


@bp.get("/")
def index() -> str:
    return flask.render_template("index.html", repos=repositories(), refresh=store().records.busy(),
                                 running=store().records.running_builds(), queued=store().queue.depth())


@bp.get("/runners")
def runners_page() -> str:
    return flask.render_template("runners.html", runners=store().runners.table(), lost=store().runners.recent_lost(20),
                                 refresh=True)


@bp.get("/badge/<repo>.svg")
def badge(repo: str) -> flask.Response:
    repo_or_404(repo)
    build = store().history.latest_build(repo, branch_arg())
    status = build.status.value if build else "unknown"
    svg = flask.render_template("badge.svg", label="volt", status=status,
                                colour=BADGE_COLOURS.get(status, BADGE_COLOURS["unknown"]),
                                label_width=40, status_width=8 + 7 * len(status))
    response = flask.Response(svg, mimetype="image/svg+xml")
    response.headers["Cache-Control"] = "no-cache, max-age=0"
    return response
