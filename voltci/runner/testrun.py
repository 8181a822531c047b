"""Runs a build's processes — its steps and its tests — and turns the tests into results.

Called by the runner. Every process runs inside the build's sandbox (sandbox.py) under its limits
(limits.py), in a session and process group of its own, with an allowlisted environment, no
standard input, and a deadline: when it passes, or the build is cancelled, the whole process group
is killed, then every process that still carries the run's mark and whatever is left in the step's
cgroup, so children, grandchildren and daemons of the tests go too. Per-test results come from the
collector's JSON lines, so the tests that finished before a hang or a crash are kept.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from voltci.models import Counts, Outcome, RunOutcome, Status, TestResult
from voltci.runner import limits, procs, untrusted
from voltci.runner.sandbox import Sandbox
from voltci.runner.suites import Selection, Suite
from voltci.sizes import human_size

# Every process of a test run carries this variable, naming the process that owns the run, so what
# escapes the process group (a daemon) or outlives a killed runner can still be found and stopped.
TEST_RUN_ENV = "VOLTCI_RUN"
KILL_GRACE_S = 2.0
PR_SET_PDEATHSIG = 1
POLL_INTERVAL_S = 0.1
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


def run_marker(run_id: str) -> str:
    """`<owner pid>.<owner start>.<run id>`: names this process as the owner of a test run."""
    pid = os.getpid()
    return f"{pid}.{procs.start_ticks(pid)}.{run_id}"


def kill_marked(marker: str) -> int:
    """Kill every process of the test run `marker`, wherever it went (new session, daemonized)."""
    pids = [pid for pid, value in procs.processes_with_env(TEST_RUN_ENV).items() if value == marker]
    procs.kill_all(pids)
    return len(pids)


def reap_orphaned_tests() -> int:
    """Kill test processes on this host whose owning runner died (SIGKILL leaves grandchildren behind)."""
    orphans = []
    for pid, marker in procs.processes_with_env(TEST_RUN_ENV).items():
        owner, _, rest = marker.partition(".")
        ticks = rest.partition(".")[0]
        if not (owner.isdigit() and ticks.isdigit()) or not procs.is_running(int(owner), int(ticks)):
            orphans.append(pid)
    procs.kill_all(orphans)
    return len(orphans)


def _die_with_parent() -> None:
    """In the test process before exec: get SIGKILL if the runner that started it dies (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def kill_group(proc: subprocess.Popen) -> None:
    """Kill the process group `proc` leads (the test command and everything it started) and wait,
    boundedly, until none of it is left. A sandbox's own init may linger as a zombie until the host's
    init reaps it: dead already, it is not waited for."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + KILL_GRACE_S
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        if not procs.live_in_group(proc.pid):
            return
        time.sleep(0.02)


@dataclass(frozen=True)
class ProcessEnd:
    """How a build's process ended: its status, or why Volt stopped it, or why it never started."""

    returncode: int | None
    stopped: str | None = None  # "timeout", or the reason should_stop gave
    not_started: str = ""
    memory_limit: int | None = None  # the limit the process ran under
    out_of_memory: bool = False  # the kernel killed a process of it at that limit
    limit_raises: bool = False  # under that limit, an allocation fails with MemoryError (rlimits)


@dataclass(frozen=True)
class Budget:
    """The build's time limit, shared by its setup steps and its tests."""

    timeout_s: float
    started: float = field(default_factory=time.monotonic)

    @property
    def expired(self) -> bool:
        return time.monotonic() - self.started > self.timeout_s

    @property
    def reason(self) -> str:
        return f"the build exceeded its time limit of {self.timeout_s:g} s; its process group was killed"


def run_process(argv: list[str], cwd: Path, log_path: Path, budget: Budget,
                should_stop: Callable[[], str | None], run_id: str, box: Sandbox) -> ProcessEnd:
    """Run `argv` in `box`, in a session and process group of its own, under the box's limits, its
    output appended to `log_path`, until it ends, the budget runs out or `should_stop` says why to stop;
    then kill what it left behind."""
    marker = run_marker(run_id)
    try:
        confined = limits.best().confine(box.limits) if box.limits is not None else None
    except OSError as exc:
        return ProcessEnd(None, not_started=f"cannot apply the build's limits: {exc}")

    def before_exec() -> None:
        _die_with_parent()
        if confined is not None:
            confined.enter()

    proc = None
    try:
        missing = box.missing(argv[0], cwd)
        if missing:
            return ProcessEnd(None, not_started=missing)
        with open(log_path, "ab") as log:
            try:
                proc = subprocess.Popen(box.command(argv, cwd), cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, env={**box.variables, TEST_RUN_ENV: marker},
                                        start_new_session=True, preexec_fn=before_exec)
            except (OSError, subprocess.SubprocessError) as exc:
                return ProcessEnd(None, not_started=f"cannot start '{argv[0]}': {getattr(exc, 'strerror', None) or exc}")
            stopped = _supervise(proc, budget, should_stop)
    finally:
        # Also reaps what the process left behind after a normal exit, in its group or not.
        if proc is not None:
            kill_group(proc)
        kill_marked(marker)
        out_of_memory = confined is not None and confined.out_of_memory()
        if confined is not None:
            confined.close()
    return ProcessEnd(box.returncode(proc.returncode), stopped,
                      memory_limit=box.limits.memory_bytes if box.limits is not None else None,
                      out_of_memory=out_of_memory, limit_raises=confined is not None and confined.raises_memory_error)


def _supervise(proc: subprocess.Popen, budget: Budget, should_stop: Callable[[], str | None]) -> str | None:
    """Wait for `proc` to end; why Volt stopped it, if it did."""
    while True:
        try:
            proc.wait(timeout=POLL_INTERVAL_S)
            return None
        except subprocess.TimeoutExpired:
            pass
        if budget.expired:
            return "timeout"
        stopped = should_stop()
        if stopped:
            return stopped


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
    selection: Selection = Selection(),
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
    counts = Counts.of(tests)
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


