"""A build's output, copied into Redis while the build runs, so `volt log -f` and the web page show
it live. Bounded: past `log_max_bytes` (a matrix leg: its share of it) the rest is counted, not kept,
and a marker says so."""

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


class LogPump:
    """Copies a running attempt's output file into the store. What Redis refuses for a while (it is
    away, or full) waits here and goes first next time; what it refuses because the attempt no longer
    owns the build is dropped."""

    def __init__(self, store: Store, build_id: str, attempt: int, path: Path, cap_bytes: int):
        self.store, self.build_id, self.attempt, self.path = store, build_id, attempt, path
        try:  # a matrix leg keeps its share of its build's output budget
            self.cap = cap_bytes // store.log_share(build_id)
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
            self._store(self._decoder.decode(data))

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
        tail = self._decoder.decode(b"", final=True)
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
            end = self.store.append_log(self.build_id, self.attempt, self.pending)
        except redis.RedisError:
            if raise_errors:
                raise
            return
        self.pending = ""
        if end is None:
            self.owned = False  # cancelled or re-dispatched: the output is no longer ours to write


def follow_log(store: Store, build_id: str, write: Callable[[str], None], limit_s: float) -> Build | None:
    """Write the output stored so far, then each piece as the runner publishes it, until the build
    ends (or `limit_s` passes). Subscribing before reading, and placing each piece by its offset,
    loses nothing and repeats nothing; a re-dispatched build's new attempt starts its output afresh.
    Returns the build as it was at the end."""
    subscription = store.listen_log(build_id)
    deadline = time.monotonic() + limit_s
    try:
        build = store.get_build(build_id)
        attempt = build.attempt if build else 0
        text = store.read_log(build_id)
        shown = len(text.encode())
        write(text)
        while time.monotonic() < deadline:
            message = subscription.get(timeout=1.0)
            if message is None:
                build = store.get_build(build_id)
                if build is None or build.status.is_final:
                    break
                continue
            kind, data = message
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
                piece, begin = store.read_log_range(build_id, shown, end).encode(), shown
            write(piece[shown - begin:].decode(errors="replace"))
            shown = end
        build = store.get_build(build_id)
        if build is not None and build.attempt == attempt:
            write(store.read_log(build_id, shown))
        return build
    finally:
        subscription.close()
