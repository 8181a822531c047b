"""Knowing when the Redis primary changed under a process: a failover (Sentinel promoted a replica), or a
restart. Either can lose the writes of the last moments (replication is asynchronous), so whoever reads
Volt's state afterwards must not trust what it remembers of before: the scheduler lets runners refresh
their heartbeats before it judges them, and each process says so once, in one line, and counts it.

A primary is known by its `run_id` (a new one at every start) and its address; asking costs one round
trip (`INFO server`), so callers ask on the pace they already keep (a heartbeat, a scheduler pass).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import redis

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Primary:
    """Which Redis answers as the primary: its run id and where it listens."""

    run_id: str
    address: str
    uptime_s: float


def primary_of(client: redis.Redis) -> Primary:
    """The primary `client` speaks to now (raises redis.RedisError when none answers)."""
    info = client.info("server")
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    address = f"{kwargs.get('host', '')}:{kwargs.get('port', '')}"
    if hasattr(pool, "get_master_address"):  # a Sentinel pool: the address it would connect to now
        host, port = pool.get_master_address()
        address = f"{host}:{port}"
    return Primary(str(info.get("run_id", "")), address, float(info.get("uptime_in_seconds", 0)))


class PrimaryWatch:
    """Tells, each time it is asked, whether the primary changed since it last was: one log line per
    change, and the time of the last change for whoever must let things settle after one."""

    def __init__(self, who: str):
        self.who = who
        self.known: Primary | None = None
        self.changed_at = float("-inf")  # a process that starts has seen no change (uptime tells of restarts)
        self.changes = 0

    def check(self, client: redis.Redis) -> bool:
        """Whether the primary is another than at the last check (False the first time)."""
        now = primary_of(client)
        before, self.known = self.known, now
        if before is None or before.run_id == now.run_id:
            return False
        self.changed_at = time.monotonic()
        self.changes += 1
        how = "a failover" if before.address != now.address else "a restart"
        log.warning("%s: the Redis primary changed (%s): now %s, was %s; what was written in its last moments "
                    "may be gone, and is checked again", self.who, how, now.address, before.address)
        return True

    def settled(self, settle_s: float) -> bool:
        """Whether `settle_s` passed since the last change this watch saw (or since it started)."""
        return time.monotonic() - self.changed_at >= settle_s
