"""What changes something: cancel and rebuild (they need the web token, see guard.py). A forge's push
webhook, signed instead, is hooks.py's."""

from __future__ import annotations

import flask
from werkzeug.wrappers import Response

from voltci.web.checks import build_or_404
from voltci.web.context import store

bp = flask.Blueprint("actions", __name__)


@bp.post("/build/<repo>/<sha>/cancel")
def cancel(repo: str, sha: str) -> Response:
    build = build_or_404(repo, sha)
    if store().builds.cancel(build.id, "cancelled from the web page") is None:
        flask.abort(409, f"the build has already ended ({build.status.value})")
    return flask.redirect(flask.url_for("builds.build_page", repo=repo, sha=build.commit), 303)


@bp.post("/build/<repo>/<sha>/rebuild")
def rebuild(repo: str, sha: str) -> Response:
    build = build_or_404(repo, sha)
    if store().builds.rebuild(build.id) is None:
        flask.abort(409, f"the build has not ended yet ({build.status.value})")
    return flask.redirect(flask.url_for("builds.build_page", repo=repo, sha=build.commit), 303)
