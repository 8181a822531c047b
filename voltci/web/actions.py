"""What changes something: cancel and rebuild (they need the web token, see guard.py), and a forge's
push webhook (signed with `hook_secret`)."""

from __future__ import annotations

import hmac
import json

import flask
from werkzeug.wrappers import Response

from voltci.errors import BadInput
from voltci.web.checks import BRANCH, build_or_404
from voltci.web.context import store, volt
from voltci.webhooks import SIGNATURE_HEADER, signature

bp = flask.Blueprint("actions", __name__)


@bp.post("/build/<repo>/<sha>/cancel")
def cancel(repo: str, sha: str) -> Response:
    build = build_or_404(repo, sha)
    if store().cancel(build.id, "cancelled from the web page") is None:
        flask.abort(409, f"the build has already ended ({build.status.value})")
    return flask.redirect(flask.url_for("builds.build_page", repo=repo, sha=build.commit), 303)


@bp.post("/build/<repo>/<sha>/rebuild")
def rebuild(repo: str, sha: str) -> Response:
    build = build_or_404(repo, sha)
    if store().rebuild(build.id) is None:
        flask.abort(409, f"the build has not ended yet ({build.status.value})")
    return flask.redirect(flask.url_for("builds.build_page", repo=repo, sha=build.commit), 303)


@bp.post("/hooks/<repo>")
def push_hook(repo: str) -> flask.Response:
    """A forge's push webhook: signed with `hook_secret` (GitHub's X-Hub-Signature-256, or
    X-Volt-Signature), it has the observer look at the repository now."""
    secret = volt().settings.hook_secret
    if not secret:
        flask.abort(404, "push webhooks are off: no hook_secret is configured")
    body = flask.request.get_data(cache=False)
    given = flask.request.headers.get("X-Hub-Signature-256") or flask.request.headers.get(SIGNATURE_HEADER, "")
    if not hmac.compare_digest(given.encode(), signature(body, secret).encode()):
        flask.abort(403, "the signature does not match (hook_secret)")
    try:
        heard = store().notify(repo, _pushed_ref(body), via="webhook")
    except BadInput as exc:
        flask.abort(404, str(exc))
    return flask.jsonify({"repo": repo, "observers": heard})


def _pushed_ref(body: bytes) -> str | None:
    try:
        ref = json.loads(body).get("ref")
    except (ValueError, AttributeError):
        return None
    return ref if isinstance(ref, str) and BRANCH.fullmatch(ref) else None
