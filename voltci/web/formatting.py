"""How pages show times, durations and links to tests (Jinja filters and globals).

A time is a `<time>` element: "3 min ago" as text, the exact time (UTC) on hover, and its ISO form in
`datetime`, from which static/volt.js shows the exact time in the viewer's own time zone. Everything
here goes through Markup's escaping: a test id in a link is quoted, never trusted.
"""

from __future__ import annotations

import shlex
from typing import Any

import flask
import jinja2
from markupsafe import Markup

from voltci import humantime
from voltci.clock import seconds_between
from voltci.models import Build


def when(iso: str) -> Markup:
    """A `<time>`: relative text, the exact time on hover."""
    if not humantime.parse(iso):
        return Markup("—")
    return Markup('<time datetime="{}" title="{}">{}</time>').format(iso, humantime.exact(iso), humantime.ago(iso))


def test_duration(seconds: float | None) -> str:
    """A test's duration, to the millisecond, which is all Volt keeps of it (the trail stores whole
    ones): `<1ms` when it rounds to none — the test ran, faster than that — else as `duration` says.
    Every page shows a test's time through this, whether it read the test's result or the trail,
    so one test never reads `0ms` in one table and `<1ms` in the next."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "—"
    ms = round(seconds * 1000)
    return "<1ms" if ms < 1 else humantime.duration(ms / 1000)


def queue_wait_s(build: Build) -> float | None:
    """Seconds from queued to started (None: it never started)."""
    if not build.started_at or not build.queued_at:
        return None
    return max(0.0, seconds_between(build.queued_at, build.started_at))


def test_url(repo: str, test_id: str, branch: str | None = None) -> str:
    """The test's history page (the id quoted into the path)."""
    values: dict[str, Any] = {"repo": repo, "test_id": test_id}
    if branch:
        values["branch"] = branch
    return flask.url_for("testpages.test_page", **values)


def last_line(message: str) -> str:
    """The line of a traceback that says what went wrong (its last non-empty one)."""
    lines = [line for line in message.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def install(env: jinja2.Environment) -> None:
    env.filters.update(when=when, duration=humantime.duration, test_duration=test_duration, last_line=last_line,
                       shell_quote=shlex.quote)
    env.globals.update(test_url=test_url, queue_wait_s=queue_wait_s)
