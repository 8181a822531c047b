"""How a long-running process says that Redis refused it: one line when a full Redis starts refusing
writes, and one when it takes them again.

A Redis at `maxmemory` with the `noeviction` policy refuses every write that needs memory (an
enqueue, a heartbeat, a result) and keeps everything it holds. The observer, the runners and the
scheduler keep retrying until memory is freed — by retention, `volt prune`, or a larger maxmemory —
and say so once per episode rather than once per retry. An unreachable Redis is still one line per
retry, as before.
"""

from __future__ import annotations

import logging
import threading

import redis

_SAID_FULL = threading.Event()  # this process said Redis is full, and not yet that it has room again
FULL_HINT = "free memory with `volt prune` (or lower keep_builds/keep_days), or raise maxmemory"


def is_full(exc: BaseException) -> bool:
    """Whether `exc` is Redis refusing a write because maxmemory is reached."""
    return isinstance(exc, redis.exceptions.OutOfMemoryError)


def describe(exc: BaseException) -> str:
    if is_full(exc):
        return f"Redis is full (maxmemory reached, nothing new can be stored): {FULL_HINT}"
    return f"Redis unavailable ({exc})"


class Outage:
    """Tells of Redis refusing this process: a full Redis once per episode and process (whichever part
    of the process meets it first says so), anything else every time."""

    def __init__(self, log: logging.Logger, who: str = ""):
        self.log = log
        self.who = f"{who}: " if who else ""

    def failed(self, exc: BaseException) -> None:
        if is_full(exc):
            if not _SAID_FULL.is_set():
                _SAID_FULL.set()
                self.log.warning("%s%s; retrying until it has room", self.who, describe(exc))
            return
        self.log.warning("%s%s; retrying", self.who, describe(exc))

    def ok(self) -> None:
        """Redis took a write: the episode, if there was one, is over."""
        if _SAID_FULL.is_set():
            _SAID_FULL.clear()
            self.log.warning("%sRedis takes writes again; carrying on", self.who)
