"""What changes something: cancel, rebuild and a pull request's approval (they need the web token, see
guard.py). A forge's webhooks, signed instead, are hooks.py's and forgehooks.py's."""

from __future__ import annotations

import flask
from werkzeug.wrappers import Response

from voltci import pullrequests
from voltci.errors import BadInput
from voltci.pulls import MAX_NUMBER
from voltci.web.checks import build_or_404, repo_or_404
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


@bp.post("/repo/<repo>/pulls/<int:number>/approve")
def approve(repo: str, number: int) -> Response:
    repo_or_404(repo)
    if not 0 < number <= MAX_NUMBER:
        flask.abort(404, f"no pull request #{number}")
    try:
        pullrequests.approve(store(), repo, number, "the web page")
    except BadInput as exc:
        flask.abort(409 if "closed" in str(exc) else 404, str(exc))
    return flask.redirect(flask.url_for("builds.pulls_page", repo=repo) + f"#pull-{number}", 303)
