"""A build's processes: each step started in its sandbox, under its limits, in a session and process
group of its own, with no standard input and the build's allowlisted environment; supervised until it
ends, its time runs out or the build is stopped; then stopped entirely.

Stopping reaches every process of the step: its process group, then every process that still
carries the run's mark (a daemon that left the group), then whatever is left in the step's cgroup.
A runner killed outright takes its steps with it (PR_SET_PDEATHSIG, bwrap's --die-with-parent and
the sandbox's PID namespace), and any runner of the host reaps what is left (reap_orphaned_tests).
Process trees are read from /proc.
"""

from __future__ import annotations

import ctypes
import functools
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from voltci.runner import limits
from voltci.runner.network import NetworkUnavailable
from voltci.runner.sandbox import TEST_RUN_ENV, Sandbox

KILL_GRACE_S = 2.0
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
POLL_INTERVAL_S = 0.1


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat from the state on (field 3), or None if the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None  # exited while we looked
    # The command name may hold spaces and parentheses; fields resume after the last ')'.
    return stat.rsplit(")", 1)[1].split()


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process visible in /proc."""
    parents = {}
    for pid in _pids():
        fields = _stat_fields(pid)
        if fields is not None:
            parents[pid] = int(fields[1])
    return parents


def start_ticks(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot): with the pid, names one process even after pid reuse."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def is_running(pid: int, ticks: int) -> bool:
    return start_ticks(pid) == ticks


def live_in_group(pgid: int) -> list[int]:
    """The processes of process group `pgid` that still run (zombies waiting for a parent to reap them
    are not counted: nothing of them is left to kill)."""
    found = []
    for pid in _pids():
        fields = _stat_fields(pid)
        if fields is not None and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            found.append(pid)
    return found


def processes_with_env(name: str) -> dict[int, str]:
    """pid -> value of environment variable `name`, for every process of ours that has it set."""
    needle = name.encode() + b"="
    found = {}
    for pid in _pids():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue  # gone, or not ours to read
        for item in environ.split(b"\0"):
            if item.startswith(needle):
                found[pid] = item[len(needle):].decode(errors="replace")
                break
    return found


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (a runner's work-horse, say)."""
    return [child for child, parent in _parents().items() if parent == pid]


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, grandchildren, …), whatever their process group or session."""
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found, stack = [], list(children.get(pid, []))
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(children.get(current, []))
    return found


def kill_all(pids: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def run_marker(run_id: str) -> str:
    """`<owner pid>.<owner start>.<run id>`: names this process as the owner of a test run."""
    pid = os.getpid()
    return f"{pid}.{start_ticks(pid)}.{run_id}"


def kill_marked(marker: str) -> int:
    """Kill every process of the test run `marker`, wherever it went (new session, daemonized), and
    wait, boundedly, until they are gone: the run is over only when none of them runs."""
    pids = [pid for pid, value in processes_with_env(TEST_RUN_ENV).items() if value == marker]
    kill_all(pids)
    _wait_gone(pids, KILL_GRACE_S)
    return len(pids)


def _wait_gone(pids: list[int], timeout_s: float) -> None:
    """Until none of `pids` runs (a zombie has nothing left to run), or `timeout_s` passes."""
    ticks = {pid: start_ticks(pid) for pid in pids}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(start_ticks(pid) == started for pid, started in ticks.items() if started is not None):
            return
        time.sleep(0.01)


def reap_orphaned_tests() -> int:
    """Kill test processes on this host whose owning runner died (SIGKILL leaves grandchildren behind)."""
    orphans = []
    for pid, marker in processes_with_env(TEST_RUN_ENV).items():
        owner, _, rest = marker.partition(".")
        ticks = rest.partition(".")[0]
        if not (owner.isdigit() and ticks.isdigit()) or not is_running(int(owner), int(ticks)):
            orphans.append(pid)
    kill_all(orphans)
    return len(orphans)


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's prctl, looked up once in the runner (not in each child between fork and exec)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _die_with_parent() -> None:
    """In the test process before exec: get SIGKILL if the runner that started it dies (Linux)."""
    prctl = _prctl()
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@functools.cache
def _adopt_orphans() -> bool:
    """Become a child subreaper, so that a sandbox's init, orphaned when its bwrap exits, is ours to
    reap at once instead of lingering as a zombie until the host's init gets to it."""
    prctl = _prctl()
    return prctl is not None and prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def _reap(pid: int | None) -> None:
    """Reap the sandbox's init (our child once its bwrap exited), boundedly, woken the moment it ends."""
    if pid is None:
        return
    deadline = time.monotonic() + KILL_GRACE_S
    with _pidfd(pid) as ended:
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    return
            except ChildProcessError:
                return  # not ours (no subreaper here) or already reaped
            if ended is not None:
                select.select([ended], [], [], 0.05)
            else:
                time.sleep(0.005)


@contextmanager
def _pidfd(pid: int) -> Iterator[int | None]:
    """A descriptor of process `pid` that turns readable the moment it ends; None where the kernel has no
    pidfds (or the process is gone already): then poll."""
    try:
        ended = os.pidfd_open(pid)
    except (AttributeError, OSError):
        yield None
        return
    try:
        yield ended
    finally:
        os.close(ended)


def kill_group(proc: subprocess.Popen, init: int | None = None) -> None:
    """Kill the process group `proc` leads (the test command and everything it started) and wait,
    boundedly, until none of it is left; reap `init`, the sandbox's own init, once `proc` is gone. One
    that lingers as a zombie (no subreaper here) is dead already and not waited for."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    _reap(init)
    deadline = time.monotonic() + KILL_GRACE_S
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        if not live_in_group(proc.pid):
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

    _prctl()  # looked up here, not in the child
    if box.bwrap is not None:
        _adopt_orphans()
    proc, init = None, None
    try:
        missing = box.missing(argv[0], cwd) or box.refusal()
        if missing:
            return ProcessEnd(None, not_started=missing)
        with open(log_path, "ab") as log, box.launch(argv, cwd, marker) as launch:
            try:
                proc = subprocess.Popen(launch.argv, cwd=cwd, stdin=launch.stdin, stdout=log,
                                        stderr=subprocess.STDOUT, env=launch.env, start_new_session=True,
                                        preexec_fn=before_exec, pass_fds=launch.pass_fds)
            except (OSError, subprocess.SubprocessError) as exc:
                why = getattr(exc, "strerror", None) or exc
                return ProcessEnd(None, not_started=f"cannot start '{argv[0]}': {why}")
            finally:
                launch.started()
            init = launch.init_pid()
            try:
                with box.uplink(launch, init):
                    launch.release()
                    stopped = _supervise(proc, budget, should_stop)
            except NetworkUnavailable as exc:
                return ProcessEnd(None, not_started=f"the build's network could not be set up: {exc}")
    finally:
        # Also reaps what the process left behind after a normal exit, in its group or not.
        if proc is not None:
            kill_group(proc, init)
        if box.bwrap is None:  # in a sandbox, its PID namespace took every process with it
            kill_marked(marker)
        out_of_memory = confined is not None and confined.out_of_memory()
        if confined is not None:
            confined.close()
    return ProcessEnd(box.returncode(proc.returncode), stopped,
                      memory_limit=box.limits.memory_bytes if box.limits is not None else None,
                      out_of_memory=out_of_memory, limit_raises=confined is not None and confined.raises_memory_error)


def _supervise(proc: subprocess.Popen, budget: Budget, should_stop: Callable[[], str | None]) -> str | None:
    """Wait for `proc` to end, woken the moment it does (a pidfd); why Volt stopped it, if it did."""
    with _pidfd(proc.pid) as ended:
        while True:
            if ended is not None:
                select.select([ended], [], [], POLL_INTERVAL_S)
            try:
                proc.wait(timeout=0 if ended is not None else POLL_INTERVAL_S)
                return None
            except subprocess.TimeoutExpired:
                pass
            if budget.expired:
                return "timeout"
            stopped = should_stop()
            if stopped:
                return stopped
