"""The live view of `volt up`: finished builds scroll by as lines, and on a terminal one status line
below them shows the queue and each running build's elapsed time and progress (tests done out of
the number its repository's last build ran, and how many failed so far). The moment a running build's
first failing test is known it gets a line of its own, once (`✗ … first failure after 3.2 s: …`). A
build that ended with a reason (every `error`, a timeout, a cancel) gives it on its line: `error …
Broken .volt.toml` alone leaves one guessing."""

from __future__ import annotations

import shutil
import sys
import threading
from datetime import UTC, datetime
from typing import TextIO

import redis

from voltci import report
from voltci.clock import age_s
from voltci.models import Build, Status
from voltci.store import Store
from voltci.terminal import clean

CLEAR_LINE = "\r\x1b[2K"
HISTORY_SCAN = 20
REASON_SHOWN = 300  # characters of a reason the stream shows; `volt report` shows all of it


def build_line(build: Build) -> str:
    """A build as one line of the stream: `report.one_line`, then ` — reason` when it ended with one.
    Cleaned for the terminal, and one line whatever the commit wrote into its subject or its reason
    (a line break there could print a line that looks like another build's)."""
    line = report.one_line(build)
    if build.status.is_final and build.reason:
        reason = " ".join(build.reason.split())
        line += " — " + (reason if len(reason) <= REASON_SHOWN else reason[:REASON_SHOWN - 1] + "…")
    elif build.status is Status.ERROR:  # no path of Volt's ends one so; should one, say where to look
        line += f" — no reason recorded: volt log {build.short} has its output"
    return " ".join(clean(line).splitlines())


def failure_line(build: Build) -> str:
    """A running build's first failure as one line of the stream, the moment it is known:
    `✗ proj main 1a2b3c4d5e: first failure after 3.2 s: tests/test_x.py::test_y` (cleaned, one line)."""
    test = " ".join(build.first_failure.split())
    test = test if len(test) <= REASON_SHOWN else test[:REASON_SHOWN - 1] + "…"
    seconds = build.first_failure_s
    after = f" after {seconds:.1f} s" if seconds is not None else ""
    branch = f"#{build.pull_request.number}→{build.branch}" if build.pull_request else build.branch
    return " ".join(clean(f"✗ {build.repo} {branch} {build.short}: first failure{after}: {test}").splitlines())


def expected_tests(store: Store, repo: str) -> int:
    """How many tests the latest finished build of `repo` ran (0 when none did)."""
    for build in store.history.builds(repo, HISTORY_SCAN):
        if build.status.is_final and build.counts.total:
            return build.counts.total
    return 0


def elapsed_s(build: Build, now: datetime) -> float:
    age = age_s(build.started_at, now)
    return max(0.0, age) if age != float("inf") else 0.0


def status_line(queued: int, running: list[Build], expected: dict[str, int], now: datetime, width: int) -> str:
    """`queue: 2 queued · running: proj 1a2b3c4d5e 12s 40/120 tests, 1 failing · …`, cut to `width`."""
    parts = [f"queue: {queued} queued", f"running: {len(running)}" if not running else "running:"]
    for build in running:
        total = expected.get(build.repo, 0)
        done = f"{build.progress}/{total}" if total else f"{build.progress}/?"
        failing = max(build.failing, 1) if build.first_failure else build.failing
        parts.append(f"{build.repo} {build.short} {elapsed_s(build, now):.0f}s {done} tests"
                     + (f", {failing} failing" if failing else ""))
    line = " · ".join(parts[:2]) + (" " + " · ".join(parts[2:]) if running else "")
    return line if len(line) < width else line[:max(0, width - 2)] + "…"


class LiveView:
    """Prints lines above a status line that is redrawn in place (only when `out` is a terminal)."""

    def __init__(self, store: Store, out: TextIO | None = None, interactive: bool | None = None):
        self.store = store
        self.out = out or sys.stdout
        self.interactive = self.out.isatty() if interactive is None else interactive
        self.status = ""
        self.expected: dict[str, int] = {}
        self.told: set[str] = set()  # running builds whose first failure was printed
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        with self._lock:
            self.out.write((CLEAR_LINE if self.status else "") + text + "\n" + self.status)
            self.out.flush()

    def refresh(self) -> None:
        if not self.interactive:
            return
        try:
            running = self.store.records.running_builds()
            queued = self.store.queue.depth()
            for repo in {b.repo for b in running} - set(self.expected):
                self.expected[repo] = expected_tests(self.store, repo)
        except redis.RedisError:
            return  # the status line waits for Redis like everything else
        width = shutil.get_terminal_size((100, 20)).columns
        status = status_line(queued, running, self.expected, datetime.now(UTC), width)
        with self._lock:
            self.status = status
            self.out.write(CLEAR_LINE + status)
            self.out.flush()

    def first_failure(self, build: Build) -> None:
        """Print a running build's first failure, once (its end line says the rest)."""
        if build.status.is_final or not build.first_failure or build.id in self.told:
            return
        self.told.add(build.id)
        self.line(failure_line(build))

    def finished(self, build: Build) -> None:
        self.expected.pop(build.repo, None)  # the next build of it expects this one's count
        self.told.discard(build.id)  # a rebuild's own first failure is news again

    def close(self) -> None:
        with self._lock:
            if self.status:
                self.out.write(CLEAR_LINE)
                self.out.flush()
            self.status = ""
