"""File locks shared by the processes of one host: mirrors, workspace slots, environment slots."""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class AllBusy(Exception):
    """Every lock asked for stayed held by other processes for the whole wait."""


@contextmanager
def first_free(lock_paths: list[Path], wait_s: float, poll_s: float = 0.05) -> Iterator[int]:
    """Hold the first of `lock_paths` that no other process holds (flock, released when the block ends
    or the process dies), waiting at most `wait_s` for one; yields its index."""
    for path in lock_paths:
        path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        for index, path in enumerate(lock_paths):
            held = open(path, "a+")  # noqa: SIM115 -- held, locked, for as long as the caller's block runs
            try:
                fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held.close()
                continue
            try:
                yield index
                return
            finally:
                fcntl.flock(held, fcntl.LOCK_UN)
                held.close()
        if time.monotonic() > deadline:
            raise AllBusy(f"{len(lock_paths)} lock(s) stayed busy for {wait_s:g} s")
        time.sleep(poll_s)


@contextmanager
def all_held(lock_paths: list[Path]) -> Iterator[None]:
    """Hold every one of `lock_paths` at once, without waiting: raises AllBusy when another process holds
    any (for removing what they guard, while nobody uses it)."""
    held = []
    try:
        for path in lock_paths:
            if not path.exists():
                continue  # never made: nobody holds it
            lock = open(path, "a+")  # noqa: SIM115 -- closed below, after the caller's block
            held.append(lock)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise AllBusy(f"{path} is held") from None
        yield
    finally:
        for lock in held:
            lock.close()
