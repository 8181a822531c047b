"""A build's test run: the suite started in the build's sandbox (through procs.run_process), and the
collector's JSON lines turned into per-test results with the build's status and reason.

Per-test results come from the collector's JSON lines, written as each test ends, so the tests that
finished before a hang, a crash or the time limit are kept.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from voltci.models import Counts, Cut, Outcome, RunOutcome, Status, TestResult, Timings
from voltci.runner import bounds, untrusted
from voltci.runner.bounds import BadOutput
from voltci.runner.failures import FailureScan
from voltci.runner.procs import Budget, ProcessEnd, run_process
from voltci.runner.sandbox import Sandbox
from voltci.runner.suites import ALL, Selection, Suite
from voltci.sizes import human_size
from voltci.store.budget import ID_MAX, REASON_MAX, TESTS_MAX, Keeper, clean, clip_message, seconds

RESULTS_FILE = "results.jsonl"  # in the sandbox's `out` directory
PREPASS_FILE = "prepass.jsonl"  # the pre-pass's results, beside them (prepass.py)
# pytest's exit statuses that mean its run itself went wrong, not a test.
PYTEST_TROUBLE = {3: "met an internal error", 4: "refused its command line"}
OUTPUT_FILE = "output.log"  # in the scratch directory, out of the build's reach
NAMED_MAX = 10  # modules named in a reason; the others are counted
COUNT_CHUNK = 1024 * 1024
COUNT_MAX_PER_CALL = 64 * 1024 * 1024  # what LineCounter reads at most each time it is asked


class LineCounter:
    """Counts the lines of a file that is being appended to, reading only what was added since, and the
    failing tests among them (`failures`)."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.lines = 0
        self.failures = FailureScan()

    def count(self) -> int:
        """The lines so far, reading at most COUNT_MAX_PER_CALL new bytes, a chunk at a time."""
        for _ in range(COUNT_MAX_PER_CALL // COUNT_CHUNK):
            try:  # the file is the build's: never follow a link it put there
                data = untrusted.read_bytes(self.path, self.path.parent, COUNT_CHUNK, self.offset)
            except OSError:
                break
            self.offset += len(data)
            self.lines += data.count(b"\n")
            self.failures.feed(data)
            if len(data) < COUNT_CHUNK:
                break
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
    append: bool = False,
) -> RunOutcome:
    """Run the suite in `workdir` inside `box` (for a shard, only what `selection` keeps); the results
    land in the box's `out` directory — with `append`, after those of the runs before it, which are not
    this run's."""
    results_path = box.out / RESULTS_FILE
    try:
        start = untrusted.size(results_path, box.out) if append else 0
    except OSError:
        start = 0  # none yet (anything else there is the build's: the collector writes past it, or fails)
    began, launched_at = time.monotonic(), time.time()
    end = run_process(suite.command(python, results_path, selection, append), workdir, log_path, budget, should_stop,
                      run_id, box)
    if end.not_started:
        return RunOutcome(Status.ERROR, [], Counts(), reason=f"cannot start the tests: {end.not_started}")
    tail = read_tail(log_path, tail_lines)
    outcome = parse_results(results_path, end.returncode, tail, start, took_s=time.monotonic() - began,
                            launched_at=launched_at)
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


def read_listing(path: Path, inside: Path) -> list[str]:
    """The ids a listing run wrote, for a split (empty when the file breaks a bound: bounds.read_listing)."""
    return bounds.read_listing(path, inside, TESTS_MAX, ID_MAX)


def parse_results(results_path: Path, returncode: int | None, log_tail: str = "", offset: int = 0,
                  took_s: float | None = None, launched_at: float | None = None) -> RunOutcome:
    """Turn the collector's JSON lines (from `offset`: what the runs before it wrote is not this run's)
    into a RunOutcome with unittest's own counting. The build wrote the file: it is read within bounds
    and checked (bounds.py), and a fault in it ends the run `error` naming the line and what was wrong,
    with the tests read before it. With `took_s` and `launched_at`, the process's wall time and when
    Volt started it, its start (Timings.start_s) is what came before its session began."""
    reader = ResultsReader(results_path.name)
    fault = ""
    try:  # never follow a link the build put there, nor read a FIFO or a device
        with untrusted.open_binary(results_path, results_path.parent) as source:
            source.seek(offset)
            reader.read(source)
    except FileNotFoundError:
        pass  # the test process ended before it wrote anything: judged below
    except OSError as exc:
        fault = f"cannot read {results_path.name}: {exc.strerror or exc}"
    except BadOutput as exc:
        fault = str(exc)
    tests, cut = reader.keeper.done()
    counts = Counts.of(tests) + cut.counts
    if fault:
        outcome = RunOutcome(Status.ERROR, tests, counts, f"the test results are not valid: {fault}", log_tail)
    else:
        outcome = _judge(tests, counts, reader.summary, reader.discovery_error, returncode, log_tail)
    kept = {t.id for t in tests}
    files = _collect_times(reader.summary, reader.costs)
    outcome.timings = Timings({test_id: cost for test_id, cost in reader.costs.items() if test_id in kept}, files,
                              _start_s(took_s, launched_at, reader.summary, reader.costs, files))
    outcome.cut = cut
    return outcome


def _start_s(took_s: float | None, launched_at: float | None, summary: dict[str, Any] | None,
             costs: dict[str, float], files: dict[str, float]) -> float:
    """What starting the test process took, to a millisecond (0: unknown): from Volt's launch (the
    sandbox's set-up included) until its session began, as its summary says — else, without one, all
    it took besides its tests and their collection. The build wrote those numbers: never above what
    the process took as Volt timed it."""
    if took_s is None or took_s <= 0:
        return 0.0
    began_at = summary.get("began_at") if summary is not None else None
    if launched_at is not None and began_at is not None:
        return round(min(took_s, max(0.0, began_at - launched_at)), 3)
    spent = sum(costs.values()) + sum(files.values())
    return round(min(took_s, max(0.0, took_s - spent)), 3)


class ResultsReader:
    """Reads a collector's JSON lines (collector.py, pytest_collector.py) one at a time, checking each
    record; tests go to a Keeper (store/budget.py), so memory stays bounded whatever the file holds."""

    def __init__(self, name: str):
        self.name = name
        self.keeper = Keeper(distinct=True)
        self.summary: dict[str, Any] | None = None
        self.discovery_error: str | None = None
        self.costs: dict[str, float] = {}  # of at most TESTS_MAX tests: those that can be kept
        self._next = 0  # the order of the next test

    def read(self, source: BinaryIO) -> None:
        for number, line, ended in bounds.lines(source, self.name):
            try:
                record = bounds.parse(line, self.name, number)
            except BadOutput:
                if not ended:
                    return  # the last line, cut by a kill
                raise
            try:
                self._take(record)
            except BadOutput as exc:
                raise BadOutput(f"{self.name} line {number}: {exc}") from None

    def _take(self, record: Any) -> None:
        if not isinstance(record, dict):
            raise BadOutput(f"not a JSON object ({bounds.short(record)})")
        if "summary" in record:
            self.summary = _summary(record["summary"], self.keeper.cut)
        elif "discovery_error" in record:
            self.discovery_error = clip_message(bounds.text_of(record, "discovery_error"), REASON_MAX)[0]
        else:
            self._test(record)

    def _test(self, record: dict[str, Any]) -> None:
        test_id = bounds.text_of(record, "id", required=True)
        given = record.get("outcome")
        outcome = bounds.OUTCOMES.get(given) if isinstance(given, str) else None
        if outcome is None:
            raise BadOutput(f"outcome is not one of {', '.join(bounds.OUTCOMES)} ({bounds.short(given)})")
        via = record.get("via_subtests", False)
        if not isinstance(via, bool):
            raise BadOutput(f"via_subtests is not true or false ({bounds.short(via)})")
        test = TestResult(id=test_id, outcome=outcome, duration_s=bounds.duration_of(record),
                          message=bounds.text_of(record, "message"), order=self._next,
                          subtest_of=bounds.text_of(record, "subtest_of"), via_subtests=via)
        self._next += 1
        test_id = self.keeper.add(test)
        if "cost_s" in record:
            cost = seconds(record["cost_s"])
            if cost is None:
                self.keeper.cut.values_dropped += 1
            elif len(self.costs) < TESTS_MAX:
                self.costs[test_id] = cost


def _summary(summary: Any, cut: Cut) -> dict[str, Any]:
    """The summary record, checked: what _judge reads, each of the type the collectors write."""
    if not isinstance(summary, dict):
        raise BadOutput(f"the summary is not a JSON object ({bounds.short(summary)})")
    exitstatus = summary.get("exitstatus")
    if exitstatus is not None and (isinstance(exitstatus, bool) or not isinstance(exitstatus, int)):
        raise BadOutput(f"summary's exitstatus is not a whole number ({bounds.short(exitstatus)})")
    files = summary.get("collect_s")
    collect_s: dict[str, float] = {}
    if files is not None and not isinstance(files, dict):
        cut.values_dropped += 1
    for file, value in (files or {}).items():
        if seconds(value) is None or len(file) > ID_MAX:
            cut.values_dropped += 1
        else:
            collect_s[clean(file)] = float(value)
    began_at = summary.get("began_at")
    if began_at is not None and (isinstance(began_at, bool) or not isinstance(began_at, (int, float))
                                 or not math.isfinite(began_at)):
        cut.values_dropped += 1
        began_at = None
    return {"tests_run": bounds.count_of(summary, "tests_run", required=True),
            "import_failures": bounds.pairs_of(summary, "import_failures"),
            "collect_errors": bounds.pairs_of(summary, "collect_errors"),
            "exitstatus": exitstatus, "collect_s": collect_s,
            "began_at": float(began_at) if began_at is not None else None}


def _collect_times(summary: dict[str, Any] | None, costs: dict[str, float]) -> dict[str, float]:
    """pytest's seconds of collection per file, for the files of the tests that ran (the build wrote
    them: nothing else is kept)."""
    files = summary.get("collect_s") if summary is not None else None
    if not files:
        return {}
    ran = {test_id.split("::", 1)[0] for test_id in costs if "::" in test_id}
    return {file: taken for file, taken in files.items() if file in ran}


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
        failures = summary["import_failures"]
        names = ", ".join(name.rsplit(".", 1)[-1][:200] for name, _ in failures[:NAMED_MAX])
        others = f" (and {len(failures) - NAMED_MAX} more)" if len(failures) > NAMED_MAX else ""
        return RunOutcome(Status.ERROR, tests, counts, f"test module(s) failed to import: {names}{others}", log_tail)
    if summary.get("collect_errors"):
        where, message = summary["collect_errors"][0]
        more = len(summary["collect_errors"]) - 1
        return RunOutcome(Status.ERROR, tests, counts, f"collecting the tests failed in {where[:200]}: "
                          f"{_last_line(message)[:REASON_MAX // 2]}"
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


