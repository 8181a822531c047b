"""`volt up`'s live view: the status line's content, and lines printed above it on a terminal."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from support import SHA_A, Events, QuietPool, add, outcome

from voltci.live import CLEAR_LINE, REASON_SHOWN, LiveView, build_line, expected_tests, status_line
from voltci.models import Build, Status
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
    Store(fake).builds.start_attempt(build.id, 1, "r")
    Store(fake).builds.finish(build.id, 1, "r", outcome())
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


def ended(status: Status, reason: str, subject: str = "Broken .volt.toml") -> Build:
    return Build(id=f"proj-{SHA_A}", repo="proj", url="/r", commit=SHA_A, branch="main", subject=subject,
                 status=status, reason=reason, duration_s=0.2)


def test_a_build_that_ended_with_a_reason_gives_it_on_its_line() -> None:
    why = ".volt.toml is not valid TOML: Expected ']' at the end of a table declaration (at line 1, column 7)"
    line = build_line(ended(Status.ERROR, why))
    assert line.startswith("error ") and line.endswith(f"Broken .volt.toml — {why}")
    assert build_line(ended(Status.TIMEOUT, "the build took longer than 600 s")).endswith("— the build took longer "
                                                                                          "than 600 s")
    assert "—" not in build_line(ended(Status.FAILED, ""))  # nothing to add: the tests say what failed
    assert build_line(ended(Status.ERROR, "")).endswith(f"— no reason recorded: volt log {SHA_A[:10]} has its output")
    assert "—" not in build_line(ended(Status.RUNNING, "left over from an earlier attempt"))


def test_a_reason_or_subject_cannot_print_a_line_of_its_own() -> None:
    forged = f"passed    proj {SHA_A[:10]} main            0.1s 5/5 passed       all good"
    for reason, subject in [(f"boom\n{forged}", "s"), (f"boom\r\x1b[2K{forged}", "s"), ("boom", f"s\n{forged}"),
                            (f"boom\u2028{forged}", "s"), (f"boom\x1b]0;title\x07\x1b[1A{forged}", "s")]:
        line = build_line(ended(Status.ERROR, reason, subject))
        assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u2028" not in line, repr(line)
        assert line.startswith("error ")


def test_a_long_reason_is_cut_on_the_line() -> None:
    line = build_line(ended(Status.ERROR, "x" * 10_000))
    assert line.endswith("…") and line.count("x") == REASON_SHOWN - 1


def test_the_status_line_counts_the_failing_tests_so_far() -> None:
    failing = running("proj", "a" * 40, 12.4, 40)
    failing.failing, failing.first_failure = 2, "t::x"
    assert status_line(0, [failing], {"proj": 120}, NOW, 200).endswith("proj aaaaaaaaaa 12s 40/120 tests, 2 failing")


def test_a_running_builds_first_failure_gets_one_line_once_cleaned(fake) -> None:
    from voltci import up

    store = Store(fake)
    build = add(fake, "proj", SHA_A)
    store.builds.start_attempt(build.id, 1, "r1")
    store.builds.set_progress(build.id, 4, 1, "tests/test_x.py::test_\x1b]0;pwned\x07y\n[fake line]")
    news = [("first_failure", {"build": build.id}), ("first_failure", {"build": build.id})]

    out = io.StringIO()
    view = LiveView(store, out, interactive=False)
    assert up._next_finished(store, Events(news), QuietPool(), view) is None  # type: ignore[arg-type]
    assert up._next_finished(store, Events(news), QuietPool(), view) is None  # type: ignore[arg-type]
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"✗ proj main {SHA_A[:10]}: first failure after ")
    assert lines[0].endswith(" s: tests/test_x.py::test_y [fake line]")
    assert "\x1b" not in lines[0] and "\x07" not in lines[0]
    store.builds.finish(build.id, 1, "r1", outcome(Status.FAILED))
    view.first_failure(store.records.get_build(build.id))  # ended: its end line says it
    assert len(out.getvalue().splitlines()) == 1
