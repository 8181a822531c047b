"""A build's output, copied into Redis while the build runs, so `volt log -f` and the web page show
it live. Bounded: past `log_max_bytes` (a matrix leg: its share of it) the rest is counted, not kept,
and a marker says so.

Files in the build's tree are named relative to it (`tests/test_ops.py`, not
`/…/pool/…/0/tests/test_ops.py`), as the report names them (runner/testrun.py strip_workspace): the
path of a workspace that is gone once the build ends says nothing to its reader, and it is taken out
here, as the output is stored, so that `volt log`, `volt log -f`, the web page and /api/ all read the
same text and none of them needs to know where the build ran."""

from __future__ import annotations

import codecs
import os
import time
from collections.abc import Callable
from pathlib import Path

import redis

from voltci.models import Build
from voltci.store import Store

READ_CHUNK = 256 * 1024  # what one pump reads at most per step: memory stays bounded
MAX_STEPS_PER_PUMP = 64
POLL_S = 1.0  # how often a follower reads the build's record again while its output keeps coming


class TreeNames:
    """Takes the tree's path (`prefixes`, each ending in a separator) out of text that arrives in pieces
    cut anywhere: the end of a piece that may begin a prefix is held back (never more than a prefix's
    length) until the next piece, or `flush`, tells."""

    def __init__(self, prefixes: list[str]):
        self.prefixes = sorted({p for p in prefixes if p}, key=len, reverse=True)
        self.held = ""

    @classmethod
    def of_tree(cls, tree: Path | None) -> TreeNames:
        """For `tree` as given and as the kernel names it (a test's cwd is the real path)."""
        if tree is None:
            return cls([])
        return cls([f"{tree}{os.sep}", f"{os.path.realpath(tree)}{os.sep}"])

    def feed(self, text: str) -> str:
        if not self.prefixes:
            return text
        text = self.held + text
        for prefix in self.prefixes:
            text = text.replace(prefix, "")
        keep = len(text) - max(self._partial(text, prefix) for prefix in self.prefixes)
        self.held = text[keep:]
        return text[:keep]

    def flush(self) -> str:
        held, self.held = self.held, ""
        return held

    @staticmethod
    def _partial(text: str, prefix: str) -> int:
        """The length of the longest end of `text` that begins `prefix` (0: none)."""
        at = text.find(prefix[0], max(0, len(text) - len(prefix) + 1))
        while at != -1:
            if prefix.startswith(text[at:]):
                return len(text) - at
            at = text.find(prefix[0], at + 1)
        return 0


class LogPump:
    """Copies a running attempt's output file into the store. What Redis refuses for a while (it is
    away, or full) waits here and goes first next time; what it refuses because the attempt no longer
    owns the build is dropped."""

    def __init__(self, store: Store, build_id: str, attempt: int, path: Path, cap_bytes: int,
                 tree: Path | None = None):
        self.store, self.build_id, self.attempt, self.path = store, build_id, attempt, path
        self.names = TreeNames.of_tree(tree)  # the build's tree, named relative to itself
        try:  # a matrix leg keeps its share of its build's output budget
            self.cap = cap_bytes // store.logs.share(build_id)
        except redis.RedisError:
            self.cap = cap_bytes
        self.offset = 0  # bytes of the file read so far
        self.kept = 0  # bytes accepted for Redis (stored, or waiting in `pending`)
        self.dropped = 0
        self.pending = ""  # accepted, not yet stored
        self.owned = True
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def pump(self, drain: bool = False) -> None:
        """Copy what was written since the last call: a bounded amount, or with `drain` all of it (at
        the end, when nothing writes to the file any more). While Redis refuses a piece, the next ones
        are only read when draining."""
        self.flush()
        steps = 0
        while drain or steps < MAX_STEPS_PER_PUMP:
            steps += 1
            if self.pending and not drain:
                return  # Redis refused the last piece: read on once it is stored
            if self.dropped:  # past the cap nothing more is kept: what was written is counted, not read
                self._skip_to_end()
                return
            try:
                with open(self.path, "rb") as fh:
                    fh.seek(self.offset)
                    data = fh.read(READ_CHUNK)
            except OSError:
                return
            if not data:
                return
            self.offset += len(data)
            self._store(self.names.feed(self._decoder.decode(data)))

    def _skip_to_end(self) -> None:
        """Count what the file holds past what was read without reading it: a build can make its output
        file terabytes long at no cost (a hole), and the runner would read zeros for hours."""
        try:
            size = os.stat(self.path).st_size
        except OSError:
            return
        if size > self.offset:
            self.dropped += size - self.offset
            self.offset = size

    def finish(self) -> None:
        """Copy the rest, and say how much was cut if anything was. What Redis refused meanwhile is still
        pending: call `flush(raise_errors=True)` until it is stored."""
        self.pump(drain=True)
        tail = self.names.feed(self._decoder.decode(b"", final=True)) + self.names.flush()
        if tail:
            self._store(tail)
        if self.dropped:
            self._append(f"\n[volt: {self.dropped} more bytes of output were not kept]\n")

    def _store(self, text: str) -> None:
        data = text.encode()
        room = self.cap - self.kept
        if self.dropped or room <= 0:
            self.dropped += len(data)
            return
        if len(data) > room:
            kept = data[:room].decode(errors="ignore")
            self.dropped += len(data) - len(kept.encode())
            self._append(kept + f"\n[volt: the output was cut here, at {self.cap} bytes (log_max_bytes)]\n")
            return
        self._append(text)

    def _append(self, text: str) -> None:
        self.kept += len(text.encode())
        self.pending += text
        self.flush()

    def flush(self, raise_errors: bool = False) -> None:
        """Store what is waiting; a Redis error keeps it waiting (raised with `raise_errors`)."""
        if not self.pending or not self.owned:
            return
        try:
            end = self.store.logs.append(self.build_id, self.attempt, self.pending)
        except redis.RedisError:
            if raise_errors:
                raise
            return
        self.pending = ""
        if end is None:
            self.owned = False  # cancelled or re-dispatched: the output is no longer ours to write


def follow_log(store: Store, build_id: str, write: Callable[[str], None], limit_s: float,
               first_failure: Callable[[Build], None] | None = None) -> Build | None:
    """Write the output stored so far, then each piece as the runner publishes it, until the build
    ends (or `limit_s` passes). Subscribing before reading, and placing each piece by its offset,
    loses nothing and repeats nothing; a re-dispatched build's new attempt starts its output afresh.
    The moment the running build's first failing test is known — its message, in its place among the
    output's, or the record read again when the output pauses (a matrix leg's, which is not published:
    at most every POLL_S) — `first_failure(build)` is called, once. Returns the build as it was at
    the end."""
    subscription = store.logs.listen(build_id)
    deadline = time.monotonic() + limit_s
    told = first_failure is None

    def tell(build: Build | None) -> None:
        nonlocal told
        if told or first_failure is None or build is None or not build.first_failure or build.status.is_final:
            return
        told = True
        first_failure(build)

    try:
        build = store.records.get_build(build_id)
        attempt = build.attempt if build else 0
        text = store.logs.read(build_id)
        shown = len(text.encode())
        write(text)
        tell(build)
        legged = build is not None and build.is_leg  # a leg's first failure is read, not published
        polled = time.monotonic()
        while time.monotonic() < deadline:
            message = subscription.get(timeout=POLL_S)
            busy_leg = message is not None and legged and not told and time.monotonic() - polled >= POLL_S
            if message is None or busy_leg:
                build, polled = store.records.get_build(build_id), time.monotonic()
                if build is None or build.status.is_final:
                    break
                tell(build)
                if message is None:
                    continue
            kind, data = message
            if kind == "first_failure":
                if data.get("build") == build_id:
                    tell(store.records.get_build(build_id))
                continue
            if kind == "event":
                if data.get("build") == build_id:
                    break
                continue
            if data["attempt"] > attempt:
                attempt, shown = data["attempt"], 0
                write(f"\n[volt: attempt {attempt} started on another runner; its output follows]\n")
            elif data["attempt"] < attempt:
                continue
            end, piece = int(data["end"]), data["text"].encode()
            begin = end - len(piece)
            if end <= shown:
                continue
            if begin > shown:  # missed a piece: take it from Redis
                piece, begin = store.logs.read_range(build_id, shown, end).encode(), shown
            write(piece[shown - begin:].decode(errors="replace"))
            shown = end
        build = store.records.get_build(build_id)
        if build is not None and build.attempt == attempt:
            write(store.logs.read(build_id, shown))
        return build
    finally:
        subscription.close()
