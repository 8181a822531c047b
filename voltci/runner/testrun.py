"""A build's test run: the suite started in the build's sandbox (through procs.run_process), and the
collector's JSON lines turned into per-test results with the build's status and reason.

Per-test results come from the collector's JSON lines, written as each test ends, so the tests that
finished before a hang, a crash or the time limit are kept.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from voltci.models import Counts, Outcome, RunOutcome, Status, TestResult, Timings
from voltci.runner import untrusted
from voltci.runner.procs import Budget, ProcessEnd, run_process
from voltci.runner.sandbox import Sandbox
from voltci.runner.suites import ALL, Selection, Suite
from voltci.sizes import human_size

RESULTS_FILE = "results.jsonl"  # in the sandbox's `out` directory
# pytest's exit statuses that mean its run itself went wrong, not a test.
PYTEST_TROUBLE = {3: "met an internal error", 4: "refused its command line"}
OUTPUT_FILE = "output.log"  # in the scratch directory, out of the build's reach


class LineCounter:
    """Counts the lines of a file that is being appended to, reading only what was added since."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.lines = 0

    def count(self) -> int:
        try:  # the file is the build's: never follow a link it put there
            data = untrusted.read_bytes(self.path, self.path.parent, offset=self.offset)
        except OSError:
            return self.lines
        self.offset += len(data)
        self.lines += data.count(b"\n")
        return self.lines


def run_tests(
    workdir: Path,
    box: Sandbox,
    suite: Suite,
    budget: Budget,
    log_path: Path,
    python: str = sys.executable,
    tail_lines: int = 60,
    should_stop: Callable[[], str | None] = lambda: None,
    run_id: str = "tests",
    selection: Selection = ALL,
) -> RunOutcome:
    """Run the suite in `workdir` inside `box` (for a shard, only what `selection` keeps); the results
    land in the box's `out` directory."""
    results_path = box.out / RESULTS_FILE
    end = run_process(suite.command(python, results_path, selection), workdir, log_path, budget, should_stop, run_id,
                      box)
    if end.not_started:
        return RunOutcome(Status.ERROR, [], Counts(), reason=f"cannot start the tests: {end.not_started}")
    tail = read_tail(log_path, tail_lines)
    outcome = parse_results(results_path, end.returncode, tail)
    strip_workspace(outcome, workdir)
    return apply_stop(outcome, end, budget)


def apply_stop(outcome: RunOutcome, end: ProcessEnd, budget: Budget) -> RunOutcome:
    """A run Volt stopped ends `timeout` or `cancelled`, whatever its tests said so far; one that met
    its memory limit says so, and does not pass."""
    if end.stopped == "timeout":
        outcome.status = Status.TIMEOUT
        outcome.reason = budget.reason
    elif end.stopped:
        outcome.status = Status.CANCELLED
        outcome.reason = end.stopped
    elif end.memory_limit is not None and (end.out_of_memory or end.limit_raises and _memory_errors(outcome)):
        what = ("the kernel killed a process of it" if end.out_of_memory
                else "a test raised MemoryError")
        said = f"the build hit its memory limit of {human_size(end.memory_limit)} ({what})"
        if outcome.status is Status.PASSED:
            outcome.status = Status.ERROR
        outcome.reason = f"{said}; {outcome.reason}" if outcome.reason else said
    return outcome


def _memory_errors(outcome: RunOutcome) -> bool:
    return any(t.outcome in (Outcome.FAILED, Outcome.ERROR) and "MemoryError" in t.message for t in outcome.tests)


def strip_workspace(outcome: RunOutcome, workdir: Path) -> None:
    """Tracebacks and output name files relative to the repository, not to a workspace now gone."""
    prefix = f"{workdir}{os.sep}"
    for test in outcome.tests:
        test.message = test.message.replace(prefix, "")
    outcome.log_tail = outcome.log_tail.replace(prefix, "")


def read_tail(path: Path, lines: int, max_bytes: int = 64 * 1024) -> str:
    """The last `lines` lines of a log, reading at most `max_bytes` from its end."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def parse_results(results_path: Path, returncode: int | None, log_tail: str = "") -> RunOutcome:
    """Turn the collector's JSON lines into a RunOutcome with unittest's own counting."""
    tests: list[TestResult] = []
    costs: dict[str, float] = {}
    summary = None
    discovery_error = None
    seen: dict[str, int] = {}
    try:  # the build wrote this file: never follow a link it put there
        lines = untrusted.read_text(results_path, results_path.parent).splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if "summary" in record:
            summary = record["summary"]
        elif "discovery_error" in record:
            discovery_error = record["discovery_error"]
        else:
            seen[record["id"]] = seen.get(record["id"], 0) + 1
            if seen[record["id"]] > 1:  # e.g. two subtests with the same parameters: keep both
                record["id"] = f"{record['id']} [{seen[record['id']]}]"
            tests.append(TestResult(id=record["id"], outcome=Outcome(record["outcome"]),
                                    duration_s=float(record.get("duration_s", 0.0)),
                                    message=record.get("message", ""), order=len(tests),
                                    subtest_of=record.get("subtest_of", ""),
                                    via_subtests=bool(record.get("via_subtests"))))
            cost = record.get("cost_s")
            if isinstance(cost, (int, float)) and cost >= 0:
                costs[record["id"]] = float(cost)
    outcome = _judge(tests, Counts.of(tests), summary, discovery_error, returncode, log_tail)
    outcome.timings = Timings(costs, _collect_times(summary, costs))
    return outcome


def _collect_times(summary: Any, costs: dict[str, float]) -> dict[str, float]:
    """pytest's seconds of collection per file, for the files of the tests that ran (the build wrote
    them: nothing else is kept)."""
    files = summary.get("collect_s") if isinstance(summary, dict) else None
    if not isinstance(files, dict):
        return {}
    ran = {test_id.split("::", 1)[0] for test_id in costs if "::" in test_id}
    return {file: float(seconds) for file, seconds in files.items()
            if file in ran and isinstance(seconds, (int, float)) and seconds >= 0}


def _judge(tests: list[TestResult], counts: Counts, summary: dict[str, Any] | None, discovery_error: str | None,
           returncode: int | None, log_tail: str) -> RunOutcome:
    """The run's status and reason, as unittest and pytest themselves would judge it."""
    if discovery_error:
        return RunOutcome(Status.ERROR, tests, counts, f"test discovery failed: {discovery_error}", log_tail)
    if summary is None:
        how = f"exit status {returncode}" if returncode is not None and returncode >= 0 else \
            f"signal {-returncode}" if returncode is not None else "no exit status"
        return RunOutcome(Status.ERROR, tests, counts,
                          f"the test process ended ({how}) before reporting all results", log_tail)
    if summary.get("import_failures"):
        names = ", ".join(name.rsplit(".", 1)[-1] for name, _ in summary["import_failures"])
        return RunOutcome(Status.ERROR, tests, counts, f"test module(s) failed to import: {names}", log_tail)
    if summary.get("collect_errors"):
        where, message = summary["collect_errors"][0]
        more = len(summary["collect_errors"]) - 1
        return RunOutcome(Status.ERROR, tests, counts, f"collecting the tests failed in {where}: {_last_line(message)}"
                          + (f" (and {more} more)" if more else ""), log_tail)
    if summary.get("exitstatus") in PYTEST_TROUBLE:
        return RunOutcome(Status.ERROR, tests, counts, f"pytest {PYTEST_TROUBLE[summary['exitstatus']]} "
                          f"(exit status {summary['exitstatus']}); see the log", log_tail)
    if summary["tests_run"] == 0:
        return RunOutcome(Status.ERROR, tests, counts, "no tests found", log_tail)
    status = Status.PASSED if counts.failed == 0 and counts.errors == 0 else Status.FAILED
    return RunOutcome(status, tests, counts, "", log_tail)


def _last_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


