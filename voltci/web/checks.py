"""What a request names, checked before anything is looked up: repository names, commit prefixes, page
numbers, branch names. What does not pass is a 400 or a 404 (never a 500, and Redis is not touched)."""

from __future__ import annotations

import re

import flask

from voltci.errors import BadInput
from voltci.git import SHA_PREFIX
from voltci.models import Build
from voltci.web.context import store

MAX_PAGE = 100_000
BRANCH = re.compile(r"[A-Za-z0-9._/-]{1,200}")


def repo_or_404(repo: str) -> str:
    if not store().repos.is_known(repo):
        flask.abort(404, f"no repository named '{repo}'")
    return repo


def page_arg() -> int:
    text = flask.request.args.get("page", "1")
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        flask.abort(400, f"page must be a number from 1 to {MAX_PAGE}, not '{text}'")
    return int(text)


def branch_arg() -> str | None:
    """The `branch` query value, if any (a malformed one is a 400)."""
    branch = flask.request.args.get("branch") or None
    if branch is not None and not BRANCH.fullmatch(branch):
        flask.abort(400, "not a branch name")
    return branch


def build_or_404(repo: str, sha: str) -> Build:
    repo_or_404(repo)
    if not SHA_PREFIX.fullmatch(sha):
        flask.abort(404, f"'{sha}' is not a commit (4 to 40 lowercase hex digits)")
    try:
        build = store().records.get_build(store().records.resolve_commit(sha, repo))
    except BadInput as exc:
        flask.abort(404, str(exc))
    if build is None:
        flask.abort(404, f"no build of {sha} in '{repo}'")
    return build
