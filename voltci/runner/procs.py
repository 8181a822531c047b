"""Process trees on this host, read from /proc: what a runner started, so it can all be stopped."""

from __future__ import annotations

import os
import signal
from pathlib import Path


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
