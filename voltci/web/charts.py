"""What the charts draw, as plain data the page embeds as JSON (static/charts.js draws it with
Chartist). The same figures are in the page's tables, so a page without JavaScript loses the
pictures, not the data."""

from __future__ import annotations

from typing import Any

import flask

from voltci.models import Build
from voltci.testhistory import Point
from voltci.web.formatting import queue_wait_s


def build_url(build: Build) -> str:
    return flask.url_for("builds.build_page", repo=build.repo, sha=build.commit)


def trend(builds: list[Build]) -> list[dict[str, Any]]:
    """One bar per build, oldest first: its duration (coloured by status), the queue wait before it,
    its tests."""
    return [{"url": build_url(b), "commit": b.short, "status": b.status.value, "branch": b.branch,
             "subject": b.subject[:120], "queued_at": b.queued_at,
             "duration_s": round(b.duration_s, 3) if b.status.is_final else None,
             "wait_s": round(queue_wait_s(b) or 0.0, 3), "tests": b.counts.total,
             "failed": b.counts.failed + b.counts.errors} for b in reversed(builds)]


def test_durations(points: list[Point]) -> list[dict[str, Any]]:
    """One point per build, oldest first: the test's seconds there (None: it did not run)."""
    return [{"url": build_url(p.build), "commit": p.build.short, "queued_at": p.build.queued_at,
             "outcome": p.outcome.value if p.outcome else None,
             "duration_s": p.cell.ms / 1000 if p.outcome else None} for p in points]
