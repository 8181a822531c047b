"""One test's history in a repository, for people: its outcome and duration in each build the store's
trail keeps (the newest 100), when it last failed and with what message, how often it was flaky — as
a dict (`volt test-history --json` and /api/repos/NAME/tests/ID) and as terminal text; and, for a build
page, how long each of its failing tests has been failing.

Reads only the trail, the failing tests of one build and the flaky counts: never every build's results.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from voltci import humantime
from voltci.models import Build, Outcome
from voltci.store import Store
from voltci.store.trail import TRAIL_BUILDS, Cell

BAD = (Outcome.FAILED, Outcome.ERROR)
MAX_TEST_ID = 4000
# one character per build in the terminal's strip
STRIP_CHARS = {Outcome.PASSED: "✓", Outcome.FAILED: "✗", Outcome.ERROR: "E", Outcome.SKIPPED: "s",
               Outcome.FLAKY: "~", None: "·"}


def is_test_id(text: str) -> bool:
    """Whether `text` can be a test id at all (printable, and not absurdly long)."""
    return 0 < len(text) <= MAX_TEST_ID and text.isprintable()


@dataclass
class Point:
    """The test in one build: `cell.outcome` is None when that build did not run it."""

    build: Build
    cell: Cell

    @property
    def outcome(self) -> Outcome | None:
        return self.cell.outcome


@dataclass
class TestHistory:
    __test__ = False

    repo: str
    test_id: str
    branch: str | None
    points: list[Point]  # oldest first
    last_failure: Point | None
    last_failure_message: str
    flaky_times: int  # over the repository's whole history (`volt flaky`)
    flaky_last_build: str

    def ran(self) -> list[Point]:
        return [p for p in self.points if p.outcome is not None]

    def count(self, *outcomes: Outcome) -> int:
        return sum(1 for p in self.points if p.outcome in outcomes)

    def median_s(self) -> float | None:
        timed = [p.cell.ms / 1000 for p in self.ran() if p.outcome is not Outcome.SKIPPED]
        return statistics.median(timed) if timed else None

    def latest(self) -> Point | None:
        ran = self.ran()
        return ran[-1] if ran else None


def read(store: Store, repo: str, test_id: str, branch: str | None = None) -> TestHistory | None:
    """The test's history, or None when no build the trail keeps (of any branch) has it."""
    builds = store.trail.builds(repo)
    rows = store.trail.rows(repo, [test_id], builds)
    if test_id not in rows or all(cell.outcome is None for cell in rows[test_id]):
        return None
    points = [Point(b, c) for b, c in zip(builds, rows[test_id], strict=True)
              if branch is None or b.branch == branch][::-1]
    last = next((p for p in reversed(points) if p.outcome in BAD), None)
    message = ""
    if last is not None:
        message = next((t.message for t in store.records.listed_tests(last.build.id) if t.id == test_id), "")
    times, flaky_last = store.history.flaky_record(repo, test_id)
    return TestHistory(repo, test_id, branch, points, last, message, times, flaky_last)


def as_dict(history: TestHistory) -> dict[str, Any]:
    """The JSON form: every build (oldest first) with the test's outcome (null: not run) and seconds."""
    last = history.last_failure
    return {
        "repo": history.repo, "test": history.test_id, "branch": history.branch, "builds_kept": TRAIL_BUILDS,
        "builds": [{"commit": p.build.commit, "branch": p.build.branch, "status": p.build.status.value,
                    "queued_at": p.build.queued_at, "outcome": p.outcome.value if p.outcome else None,
                    "duration_s": p.cell.ms / 1000 if p.outcome else None} for p in history.points],
        "runs": len(history.ran()), "failed": history.count(*BAD), "flaky": history.count(Outcome.FLAKY),
        "median_duration_s": history.median_s(),
        "last_failure": None if last is None else {"commit": last.build.commit, "queued_at": last.build.queued_at,
                                                   "outcome": last.outcome.value if last.outcome else None,
                                                   "message": history.last_failure_message},
        "flaky_times_ever": history.flaky_times, "flaky_last_build": history.flaky_last_build,
    }


def strip(history: TestHistory) -> str:
    return "".join(STRIP_CHARS[p.outcome] for p in history.points)


def as_text(history: TestHistory) -> str:
    """The terminal form: a summary, a strip of one character per build, and one line per build."""
    where = f" on {history.branch}" if history.branch else ""
    runs, failed, flaky = len(history.ran()), history.count(*BAD), history.count(Outcome.FLAKY)
    lines = [f"{history.repo}  {history.test_id}",
             f"ran in {runs} of the last {len(history.points)} build(s){where}: {failed} failed, {flaky} flaky; "
             f"median {humantime.duration(history.median_s())}",
             f"strip (oldest → newest; ✓ passed, ✗ failed, E error, ~ flaky, s skipped, · not run): {strip(history)}"]
    last = history.last_failure
    if last is None:
        lines.append(f"last failed: not in the last {len(history.points)} build(s){where}")
    else:
        lines.append(f"last failed: {humantime.ago(last.build.queued_at)} in {last.build.commit[:10]} "
                     f"({last.build.branch})")
        if history.last_failure_message:
            lines += ["  " + line for line in history.last_failure_message.rstrip().splitlines()[-6:]]
    if history.flaky_times:
        lines.append(f"flaky {history.flaky_times} time(s) in all (`volt flaky`), last in "
                     f"{history.flaky_last_build.rsplit('-', 1)[-1][:10]}")
    lines.append("")
    for p in reversed(history.points):
        outcome = p.outcome.value if p.outcome else "not run"
        took = humantime.duration(p.cell.ms / 1000) if p.outcome else ""
        lines.append(f"{p.build.commit[:10]}  {p.build.branch:<12} {humantime.ago(p.build.queued_at):>14}  "
                     f"{outcome:<8} {took:>8}  {p.build.subject[:50]}".rstrip())
    return "\n".join(lines)


@dataclass(frozen=True)
class Streak:
    """How long a failing test of a build has been failing, in the builds of its branch before it."""

    previous: Build | None  # the branch's build with tests just before (None: none is kept)
    previous_outcome: Outcome | None
    first: Build  # the oldest build of the unbroken run of failures that ends with this one
    failing_builds: int  # builds in that run, this one included
    reaches_back: bool  # the run goes back to the oldest build kept: it may have started earlier


def streaks(store: Store, build: Build, test_ids: list[str]) -> dict[str, Streak]:
    """For each of `test_ids` (failing in `build`), its run of failures in `build`'s branch (builds that
    ran no tests at all — cancelled, or broken before the tests — are passed over); empty when the trail
    does not hold `build`."""
    builds = store.trail.builds(build.repo, build.branch)
    here = next((i for i, b in enumerate(builds) if b.id == build.id), None)
    if here is None or not test_ids:
        return {}
    line = builds[here:here + 1] + [b for b in builds[here + 1:] if b.counts.total]  # older ones that ran tests
    runs = dict.fromkeys(test_ids, 1)
    previous: dict[str, Outcome | None] = dict.fromkeys(test_ids)
    going, start, size = list(test_ids), 1, 4
    while going and start < len(line):  # a few builds back first: most failures are new
        chunk = line[start:start + size]
        rows = store.trail.rows(build.repo, going, chunk, durations=False)
        still = []
        for test_id in going:
            cells = rows.get(test_id, [])
            if start == 1 and cells:
                previous[test_id] = cells[0].outcome
            bad = next((k for k, c in enumerate(cells) if c.outcome not in BAD), len(cells))
            runs[test_id] += bad
            if cells and bad == len(cells):
                still.append(test_id)
        going, start, size = still, start + size, size * 4
    return {test_id: Streak(previous=line[1] if len(line) > 1 else None, previous_outcome=previous[test_id],
                            first=line[runs[test_id] - 1], failing_builds=runs[test_id],
                            reaches_back=runs[test_id] == len(line) > 1)
            for test_id in test_ids}
