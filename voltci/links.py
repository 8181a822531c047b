"""Where people open Volt's pages for a build: the links webhook messages and commit statuses carry.

One function per kind of page, so that a page that moves (a pull request's build gets a page of its
own) moves in one place. Built from `public_url` (its older name `web_url`); None without one.
"""

from __future__ import annotations

import urllib.parse

from voltci.config import Settings
from voltci.models import Build


def build_page_url(settings: Settings, build: Build) -> str | None:
    """The page of `build` (a matrix leg's is its build's), or None when no `public_url` is set."""
    root = settings.page_root
    if not root:
        return None
    repo = urllib.parse.quote(build.repo, safe="")
    commit = urllib.parse.quote(build.commit, safe="")
    return f"{root}/build/{repo}/{commit}"
