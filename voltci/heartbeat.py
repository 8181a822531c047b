"""Runner heartbeats: one expiring key per runner, refreshed by a thread while the runner lives.

The key holds who the runner is and what it is working on. It outlives the runner by at most
`heartbeat_ttl` seconds, so a runner that is killed, frozen or cut off from Redis disappears from
Redis by itself, and the scheduler gives its build to another runner. A full Redis is not a lost
runner: the key's expiry is pushed back until Redis has room again (see store/runners.py, send_beat).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

import redis

from voltci.clock import now_iso
from voltci.failover import PrimaryWatch
from voltci.models import RunnerBeat, Work
from voltci.outage import Outage, is_full
from voltci.store import Store

log = logging.getLogger("volt.heartbeat")
OUTAGE_LOG_EVERY_S = 10.0

# Set in a runner whose own thread heartbeats (VoltWorker), and so in the work-horses it forks: a job
# there leaves the heartbeat to that thread. A plain `rq worker` has none, and its jobs keep the
# runner's key alive themselves. (Builds never see it: their environment is an allowlist.)
WORKER_BEATS = "VOLTCI_WORKER_BEATS"


def worker_beats() -> bool:
    return os.environ.get(WORKER_BEATS) == "1"


class Heartbeat:
    """Keeps `P:runner:<name>` alive from a thread of its own; `on_outage` is called with the seconds
    Redis has been out of reach each time a refresh fails."""

    def __init__(self, store: Store, beat: RunnerBeat, interval_s: float, ttl_s: float,
                 on_outage: Callable[[float], None] | None = None,
                 on_tick: Callable[[], None] | None = None):
        self.store = store
        self.beat = beat
        self.interval_s = interval_s
        self.ttl_ms = int(ttl_s * 1000)
        self.on_outage = on_outage
        self.on_tick = on_tick
        self.primary = PrimaryWatch(f"runner {beat.name}")
        self.last_ok = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_outage_log = 0.0
        self._full = Outage(log, f"runner {beat.name}")

    def set_work(self, work: Work) -> None:
        """Say at once that the runner now works on `work` (so no scheduler sees it idle meanwhile)."""
        with self._lock:
            self.beat.build, self.beat.attempt, self.beat.build_started_at = work.build, work.attempt, now_iso()
            self.beat.shard, self.beat.shard_attempt = work.shard, work.shard_attempt
        self.send()

    def clear_work(self) -> None:
        with self._lock:
            self.beat.build, self.beat.attempt, self.beat.build_started_at = "", 0, ""
            self.beat.shard, self.beat.shard_attempt = None, 0
        self.send()

    def send(self) -> bool:
        """One refresh; False (and the outage noted) when Redis cannot be reached."""
        with self._lock:
            self.beat.heartbeat_at = now_iso()
            beat = RunnerBeat(**vars(self.beat))
        try:
            self.store.runners.send_beat(beat, self.ttl_ms)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._outage(exc)
            return False
        except redis.RedisError as exc:
            if not is_full(exc):
                raise
            self._full.failed(exc)  # the key was kept alive; Redis is reachable
        else:
            self._full.ok()
        self.last_ok = time.monotonic()
        return True

    def _watch_primary(self) -> None:
        """A change of the Redis primary may have lost this runner's last writes: its key is written again at
        the next beat anyway; the change is said once and counted."""
        try:
            if self.primary.check(self.store.r):
                self.store.metrics.count_event("failovers", "runner")
                self.send()
        except redis.RedisError:
            pass  # an outage: the beat says so

    def _outage(self, exc: Exception) -> None:
        out_for = time.monotonic() - self.last_ok
        if time.monotonic() - self._last_outage_log >= OUTAGE_LOG_EVERY_S:
            self._last_outage_log = time.monotonic()
            log.warning("runner %s cannot reach Redis (%s) for %.0f s; retrying", self.beat.name, exc, out_for)
        if self.on_outage is not None:
            self.on_outage(out_for)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.send()
            except redis.RedisError as exc:  # anything but an outage or a full Redis: said, and tried again
                log.warning("runner %s: heartbeat failed (%s); retrying", self.beat.name, exc)
            self._watch_primary()
            if self.on_tick is not None:
                try:
                    self.on_tick()
                except Exception:  # a chore failing must not stop the heartbeat
                    log.exception("runner %s: periodic task failed", self.beat.name)

    def start(self) -> Heartbeat:
        self.send()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{self.beat.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, remove: bool = True) -> None:
        """Stop beating; with `remove`, delete the key (a runner leaving cleanly is not a lost one)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 5)
        if remove:
            try:
                self.store.runners.drop_beat(self.beat.name)
            except redis.RedisError:
                pass  # it expires by itself
