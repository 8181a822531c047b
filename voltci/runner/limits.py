"""Resource limits on a build's processes: how much memory they may use and how many may exist.

Each step of a build (a setup command, the test run) gets a confinement of its own, from the
strongest mechanism the runner host offers:

- a cgroup (v2, or v1 where that is what is mounted) below the runner's own, with `memory` and
  `pids` limits: the kernel counts every process of the step, kills within it when memory runs
  out, and reports that it did; every process still in it is killed at the end;
- else rlimits set in the step's first process and inherited by the rest: the address space
  (a test that allocates past it gets a `MemoryError`) and the number of processes of the user.

The runner picks the mechanism once (`best()`), says which at start, and uses it for every step.
"""

from __future__ import annotations

import os
import resource
import signal
import time
from dataclasses import dataclass
from functools import cache
from itertools import count
from pathlib import Path
from typing import Protocol

from voltci.sizes import human_size, parse_processes, parse_size

CGROUP_ROOT = Path("/sys/fs/cgroup")
GROUP_NAME = "volt-builds"
KILL_WAIT_S = 2.0
_steps = count(1)


@dataclass(frozen=True)
class Limits:
    """What one build may use: bytes of memory, and processes (threads count, as the kernel counts)."""

    memory_bytes: int
    processes: int

    @classmethod
    def of_runner(cls, memory: str, processes: int) -> Limits:
        """The runner's own limits from its `build_memory` and `build_processes` settings."""
        return cls(parse_size(memory, allow_percent=True), parse_processes(processes))

    def describe(self) -> str:
        return f"memory {human_size(self.memory_bytes)}, {self.processes} processes"


class Confined(Protocol):
    """One step's confinement, from before its first process starts until every process is gone."""

    raises_memory_error: bool  # past the limit, an allocation fails (rather than a process being killed)

    def enter(self) -> None:
        """In the step's first process, between fork and exec: put it under the limits."""

    def out_of_memory(self) -> bool:
        """Whether the kernel killed a process of the step for want of memory."""

    def kill(self) -> None:
        """Kill every process of the step that is left."""

    def close(self) -> None:
        """Release what the confinement holds (its cgroup)."""


class Mechanism(Protocol):
    name: str

    def confine(self, limits: Limits) -> Confined:
        """A confinement for a step about to start."""


def _own_cgroup(hierarchy: str) -> str | None:
    """This process's cgroup path in the v1 hierarchy of `hierarchy` ("memory"), or in v2 for ""."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if (hierarchy == "" and controllers == "") or hierarchy in controllers.split(","):
            return path
    return None


def _write(path: Path, value: str) -> None:
    """One write of a cgroup file, with no buffering (safe between fork and exec)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read_field(path: Path, field: str) -> int:
    """`field`'s number in a "name value" file (memory.events, memory.oom_control); 0 when absent."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == field:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _kill_members(procs_files: list[Path]) -> None:
    """SIGKILL whatever is in the cgroups until they are empty (bounded)."""
    deadline = time.monotonic() + KILL_WAIT_S
    while True:
        pids: set[int] = set()
        for procs in procs_files:
            try:
                pids.update(int(p) for p in procs.read_text().split())
            except OSError:
                continue
        if not pids or time.monotonic() > deadline:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.01)


def _remove(dirs: list[Path]) -> None:
    deadline = time.monotonic() + KILL_WAIT_S
    for path in dirs:
        while True:
            try:
                path.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    break  # left for remove_stale at the next start
                time.sleep(0.01)


def _step_name() -> str:
    return f"{os.getpid()}-{next(_steps)}"


def remove_stale(parent: Path) -> None:
    """Remove the empty step cgroups that runners of this host left when they were killed."""
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for entry in entries:
        owner = entry.name.split("-", 1)[0]
        if entry.is_dir() and owner.isdigit() and not Path(f"/proc/{owner}").exists():
            try:
                entry.rmdir()
            except OSError:
                pass


class _CgroupStep:
    """A step's cgroup(s): one directory per hierarchy that holds a limit (one in v2, two in v1)."""

    raises_memory_error = False

    def __init__(self, dirs: list[Path], oom_file: Path, oom_field: str):
        self.dirs, self.oom_file, self.oom_field = dirs, oom_file, oom_field
        self._procs = [d / "cgroup.procs" for d in dirs]

    def enter(self) -> None:
        me = str(os.getpid())
        for procs in self._procs:
            _write(procs, me)

    def out_of_memory(self) -> bool:
        return _read_field(self.oom_file, self.oom_field) > 0

    def kill(self) -> None:
        killer = self.dirs[0] / "cgroup.kill"
        if killer.exists():
            try:
                _write(killer, "1")
            except OSError:
                pass
        _kill_members(self._procs)

    def close(self) -> None:
        self.kill()
        _remove(self.dirs)


class CgroupV1:
    """Per-step groups in the v1 `memory` and `pids` hierarchies, below the runner's own groups."""

    name = "cgroup v1"

    def __init__(self, memory_parent: Path, pids_parent: Path):
        self.memory_parent, self.pids_parent = memory_parent, pids_parent

    @classmethod
    def find(cls) -> CgroupV1 | None:
        parents = []
        for controller in ("memory", "pids"):
            own = _own_cgroup(controller)
            mount = CGROUP_ROOT / controller
            if own is None or not (mount / "cgroup.procs").exists():
                return None
            parents.append(mount / own.lstrip("/") / GROUP_NAME)
        mechanism = cls(*parents)
        return mechanism if mechanism._usable() else None

    def _usable(self) -> bool:
        try:
            for parent in (self.memory_parent, self.pids_parent):
                parent.mkdir(exist_ok=True)
                remove_stale(parent)
            self.confine(Limits(64 << 20, 64)).close()
            return True
        except OSError:
            return False

    def confine(self, limits: Limits) -> Confined:
        name = _step_name()
        memory, pids = self.memory_parent / name, self.pids_parent / name
        memory.mkdir()
        try:
            pids.mkdir()
        except OSError:
            memory.rmdir()
            raise
        step = _CgroupStep([memory, pids], memory / "memory.oom_control", "oom_kill")
        try:
            _write(memory / "memory.limit_in_bytes", str(limits.memory_bytes))
            if (memory / "memory.memsw.limit_in_bytes").exists():  # swap counts too, where it is accounted
                _write(memory / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
            _write(pids / "pids.max", str(limits.processes))
        except OSError:
            step.close()
            raise
        return step


class CgroupV2:
    """Per-step groups in the unified hierarchy, below a `volt-builds` group made in the runner's own
    (which needs the runner's cgroup delegated to it: systemd's `Delegate=`)."""

    name = "cgroup v2"

    def __init__(self, parent: Path):
        self.parent = parent

    @classmethod
    def find(cls) -> CgroupV2 | None:
        own = _own_cgroup("")
        if own is None or not (CGROUP_ROOT / "cgroup.controllers").exists():
            return None
        base = CGROUP_ROOT / own.lstrip("/")
        try:
            available = (base / "cgroup.controllers").read_text().split()
        except OSError:
            return None
        if not {"memory", "pids"} <= set(available):
            return None
        mechanism = cls(base / GROUP_NAME)
        return mechanism if mechanism._usable(base) else None

    def _usable(self, base: Path) -> bool:
        try:
            if not _enable_controllers(base):
                return False
            self.parent.mkdir(exist_ok=True)
            remove_stale(self.parent)
            _write(self.parent / "cgroup.subtree_control", "+memory +pids")
            self.confine(Limits(64 << 20, 64)).close()
            return True
        except OSError:
            return False

    def confine(self, limits: Limits) -> Confined:
        group = self.parent / _step_name()
        group.mkdir()
        step = _CgroupStep([group], group / "memory.events", "oom_kill")
        try:
            _write(group / "memory.max", str(limits.memory_bytes))
            if (group / "memory.swap.max").exists():
                _write(group / "memory.swap.max", "0")
            _write(group / "pids.max", str(limits.processes))
        except OSError:
            step.close()
            raise
        return step


def _enable_controllers(base: Path) -> bool:
    """Turn on memory and pids for the children of the runner's cgroup. A cgroup with processes in it
    cannot hand controllers down, so the runner first moves itself into a leaf of its own, as systemd
    expects of a delegated service."""
    control = base / "cgroup.subtree_control"
    if {"memory", "pids"} <= set(control.read_text().split()):
        return True
    try:
        _write(control, "+memory +pids")
        return True
    except OSError:
        pass
    leaf = base / "runner"
    leaf.mkdir(exist_ok=True)
    _write(leaf / "cgroup.procs", str(os.getpid()))
    try:
        _write(control, "+memory +pids")
        return True
    except OSError:
        return False  # other processes share the runner's cgroup


class _RlimitStep:
    raises_memory_error = True

    def __init__(self, limits: Limits):
        self.limits = limits
        # RLIMIT_NPROC counts every process of the user, so the step's share comes on top of those
        # running now (root is exempt from it: the kernel does not count for uid 0).
        self.nproc = limits.processes + _processes_of(os.getuid())

    def enter(self) -> None:
        resource.setrlimit(resource.RLIMIT_AS, (self.limits.memory_bytes, self.limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_NPROC, (self.nproc, self.nproc))

    def out_of_memory(self) -> bool:
        return False  # a test that allocates past RLIMIT_AS gets a MemoryError, which its result shows

    def kill(self) -> None:
        pass  # the process group and the run marker reach every process (testrun.run_process)

    def close(self) -> None:
        pass


def _processes_of(uid: int) -> int:
    found = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found += entry.stat().st_uid == uid
            except OSError:
                continue
    return found


class Rlimits:
    name = "rlimits"

    def confine(self, limits: Limits) -> Confined:
        return _RlimitStep(limits)


@cache
def best() -> Mechanism:
    """The strongest mechanism this host lets the runner use (chosen once per process)."""
    return CgroupV2.find() or CgroupV1.find() or Rlimits()
