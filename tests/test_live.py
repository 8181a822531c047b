"""`volt up`'s live view: the status line's content, and lines printed above it on a terminal."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from support import SHA_A, add, outcome

from voltci.live import CLEAR_LINE, LiveView, expected_tests, status_line
from voltci.models import Build
from voltci.store import Store

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)


def running(repo: str, sha: str, seconds: float, progress: int) -> Build:
    return Build(id=f"{repo}-{sha}", repo=repo, url="/r", commit=sha, branch="main",
                 started_at=(NOW - timedelta(seconds=seconds)).isoformat(), progress=progress)


def test_status_line_shows_queue_elapsed_time_and_progress() -> None:
    line = status_line(3, [running("proj", "a" * 40, 12.4, 40), running("other", "b" * 40, 1, 2)],
                       {"proj": 120}, NOW, 200)
    assert line == "queue: 3 queued · running: proj aaaaaaaaaa 12s 40/120 tests · other bbbbbbbbbb 1s 2/? tests"
    assert status_line(0, [], {}, NOW, 200) == "queue: 0 queued · running: 0"
    assert len(status_line(0, [running("proj", "a" * 40, 1, 1)] * 9, {}, NOW, 60)) <= 60


def test_expected_tests_come_from_the_last_finished_build(fake) -> None:
    build = add(fake, "proj", SHA_A)
    assert expected_tests(Store(fake), "proj") == 0
    Store(fake).start_attempt(build.id, 1, "r")
    Store(fake).finish_build(build.id, 1, "r", outcome())
    assert expected_tests(Store(fake), "proj") == 3


def test_lines_go_above_the_redrawn_status_line(fake) -> None:
    out = io.StringIO()
    view = LiveView(Store(fake), out=out, interactive=True)
    view.status = "queue: 1 queued"
    view.line("passed proj 1234")
    view.close()
    assert out.getvalue() == f"{CLEAR_LINE}passed proj 1234\nqueue: 1 queued{CLEAR_LINE}"
    plain = io.StringIO()
    quiet = LiveView(Store(fake), out=plain, interactive=False)
    quiet.refresh()
    quiet.line("passed proj 1234")
    assert plain.getvalue() == "passed proj 1234\n"
