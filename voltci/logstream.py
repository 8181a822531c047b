"""A build's output, copied into Redis while the build runs, so `volt log -f` and the web page show
it live. Bounded: past `log_max_bytes` the rest is counted, not kept, and a marker says so."""

from __future__ import annotations

import codecs
import json
import time
from pathlib import Path
from typing import Callable

import redis

from voltci import keys, results
from voltci.models import Build

READ_CHUNK = 256 * 1024  # what one pump reads at most per step: memory stays bounded
MAX_STEPS_PER_PUMP = 64


class LogPump:
    def __init__(self, conn: redis.Redis, build_id: str, attempt: int, path: Path, cap_bytes: int):
        self.conn, self.build_id, self.attempt, self.path, self.cap = conn, build_id, attempt, path, cap_bytes
        self.offset = 0  # bytes of the file read so far
        self.kept = 0  # bytes stored in Redis
        self.dropped = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def pump(self) -> None:
        """Copy what was written since the last call (a bounded amount per call)."""
        for _ in range(MAX_STEPS_PER_PUMP):
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

    def finish(self) -> None:
        """Copy the rest, and say how much was cut if anything was."""
        self.pump()
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
        with self.conn.pipeline(transaction=False) as pipe:
            pipe.append(keys.build_log(self.build_id), text)
            pipe.publish(keys.log_channel(self.build_id), json.dumps(
                {"attempt": self.attempt, "end": self.kept + len(text.encode()), "text": text}))
            end, _ = pipe.execute()
        self.kept = int(end)


def read_log(conn: redis.Redis, build_id: str, start: int = 0) -> str:
    """The stored output from byte `start` on."""
    data = conn.getrange(keys.build_log(build_id), start, -1)
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def follow_log(conn: redis.Redis, build_id: str, write: Callable[[str], None], limit_s: float) -> Build | None:
    """Write the output stored so far, then each piece as the runner publishes it, until the build
    ends (or `limit_s` passes). Subscribing before reading, and placing each piece by its offset,
    loses nothing and repeats nothing; a re-dispatched build's new attempt starts its output afresh.
    Returns the build as it was at the end."""
    pubsub = conn.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.log_channel(build_id), keys.events())
    deadline = time.monotonic() + limit_s
    try:
        build = results.get_build(conn, build_id)
        attempt = build.attempt if build else 0
        text = read_log(conn, build_id)
        shown = len(text.encode())
        write(text)
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=1.0)
            if message is None:
                build = results.get_build(conn, build_id)
                if build is None or build.status.is_final:
                    break
                continue
            data = json.loads(message["data"])
            if message["channel"] == keys.events():
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
                piece, begin = conn.getrange(keys.build_log(build_id), shown, end - 1).encode(), shown
            write(piece[shown - begin:].decode(errors="replace"))
            shown = end
        build = results.get_build(conn, build_id)
        if build is not None and build.attempt == attempt:
            write(read_log(conn, build_id, shown))
        return build
    finally:
        pubsub.close()
