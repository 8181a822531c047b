"""What the pages and the JSON API both read, shaped once: a page of a repository's history, the
repositories with their newest builds."""

from __future__ import annotations

from typing import Any

import flask

from voltci.web.checks import page_arg
from voltci.web.context import store

PER_PAGE = 25


def history_page(repo: str) -> dict[str, Any]:
    page = page_arg()
    builds, total = store().history.page(repo, page, PER_PAGE)
    pages = max(1, -(-total // PER_PAGE))
    if page > pages:
        flask.abort(404, f"'{repo}' has {pages} page(s) of builds, not {page}")
    return {"repo": repo, "page": page, "pages": pages, "total": total, "builds": builds}


def repositories() -> list[dict[str, Any]]:
    known = store().repos.known()
    latest = store().history.latest_builds(sorted(known))
    return [{"name": name, "url": known[name].get("url", ""), "latest": latest[name]} for name in sorted(known)]
