"""Runners as Redis sees them: heartbeat keys that expire by themselves, the registry the scheduler
keeps from them (alive, or gone since when), the latest lost attempts, and the scheduler's lock."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from typing import Any

import redis
from redis.lock import Lock

from voltci import keys
from voltci.clock import age_s, now_iso
from voltci.models import LostAttempt, RunnerBeat, RunnerRow
from voltci.store.tx import Client

KEEP_GONE_RUNNERS_S = 3600.0


class Runners:
    """Runners' heartbeats and registry, lost attempts, the scheduler's lock. `Runners(client)`."""

    def __init__(self, client: Client):
        self.r = client

    def send_beat(self, beat: RunnerBeat, ttl_ms: int) -> None:
        """Write a runner's heartbeat key, expiring after `ttl_ms`.

        A full Redis refuses the new value but still lets the key's expiry be pushed back, so a live
        runner stays alive (with its last value) until memory is freed; the refusal is raised after."""
        try:
            with self.r.pipeline(transaction=False) as pipe:
                pipe.set(keys.runner(beat.name), beat.to_json(), px=ttl_ms)
                pipe.sadd(keys.runner_names(), beat.name)
                pipe.execute()
        except redis.exceptions.OutOfMemoryError:
            self.r.pexpire(keys.runner(beat.name), ttl_ms)
            raise

    def drop_beat(self, name: str) -> None:
        """A runner leaving cleanly removes its key (it is not a lost runner)."""
        with self.r.pipeline(transaction=False) as pipe:
            pipe.delete(keys.runner(name))
            pipe.srem(keys.runner_names(), name)
            pipe.execute()

    def live(self) -> dict[str, RunnerBeat]:
        """Runners whose key has not expired, by name."""
        names = sorted(self.r.smembers(keys.runner_names()))
        if not names:
            return {}
        values = self.r.mget([keys.runner(name) for name in names])
        return {name: RunnerBeat.from_json(text) for name, text in zip(names, values, strict=False) if text}

    def beat_of(self, name: str) -> RunnerBeat | None:
        """One runner's heartbeat, if its key has not expired."""
        text = self.r.get(keys.runner(name))
        return RunnerBeat.from_json(text) if text else None

    def update_registry(self, runners: dict[str, RunnerBeat]) -> None:
        """Registry entries: live runners as their key says; runners whose key went, marked gone (and
        forgotten an hour later)."""
        seen_at = now_iso()
        registry = self.r.hgetall(keys.runners())
        with self.r.pipeline(transaction=False) as pipe:
            for name, beat in runners.items():
                pipe.hset(keys.runners(), name, json.dumps({**asdict(beat), "state": "alive", "seen_at": seen_at}))
            for name, text in registry.items():
                if name in runners:
                    continue
                entry = json.loads(text)
                if entry.get("state") == "alive":
                    entry.update(state="gone", gone_at=seen_at)
                    pipe.hset(keys.runners(), name, json.dumps(entry))
                    pipe.srem(keys.runner_names(), name)
                elif age_s(entry.get("gone_at", "")) > KEEP_GONE_RUNNERS_S:
                    pipe.hdel(keys.runners(), name)
            pipe.execute()

    def table(self) -> list[RunnerRow]:
        """Every runner the registry or a live key knows of: alive or gone, heartbeat age, current work."""
        live = self.live()
        registry = {name: (RunnerBeat.from_json(text), json.loads(text).get("state", ""))
                    for name, text in self.r.hgetall(keys.runners()).items()}
        registry.update({name: (beat, "alive") for name, beat in live.items()})
        rows = [_row(beat, state, alive=name in live) for name, (beat, state) in registry.items()]
        return sorted(rows, key=lambda r: (not r.alive, r.name))

    def recent_lost(self, limit: int = 10) -> list[LostAttempt]:
        """The latest attempts lost with their runner (written by the transitions that re-dispatch them)."""
        return [LostAttempt.from_json(text) for text in self.r.lrange(keys.lost(), 0, limit - 1)]

    def scheduler_lock(self, ttl_s: float) -> Lock:
        """The expiring lock that the acting scheduler holds."""
        return self.r.lock(keys.scheduler_lock(), timeout=ttl_s, blocking=False, thread_local=False)

    def redis_uptime_s(self) -> float:
        return float(self.r.info("server")["uptime_in_seconds"])

    def await_replicas(self, timeout_s: float, poll_s: float = 0.02) -> bool | None:
        """Whether a replica holds everything the primary had written when asked, within `timeout_s` (as
        `WAIT 1` would say, but for every connection's writes: WAIT counts only its own connection's,
        and a pool hands out any); None when the primary has no replica to wait for."""
        info = self.r.info("replication")
        if int(info.get("connected_slaves", 0)) == 0:
            return None
        target = int(info["master_repl_offset"])
        deadline = time.monotonic() + timeout_s
        while True:
            if any(offset >= target for offset in _replica_offsets(info)):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll_s)
            info = self.r.info("replication")

    def replication(self) -> dict[str, Any]:
        """The primary's replication, for `volt status`: its role and each replica's address, state and lag."""
        info = self.r.info("replication")
        replicas = []
        for n in range(int(info.get("connected_slaves", 0))):
            entry = info.get(f"slave{n}")
            if isinstance(entry, dict):
                replicas.append({"address": f"{entry.get('ip')}:{entry.get('port')}", "state": entry.get("state"),
                                 "lag_s": entry.get("lag"),
                                 "behind_bytes": int(info.get("master_repl_offset", 0)) - int(entry.get("offset", 0))})
        return {"role": info.get("role"), "replicas": replicas}


def _replica_offsets(info: dict[str, Any]) -> list[int]:
    return [int(entry.get("offset", -1)) for n in range(int(info.get("connected_slaves", 0)))
            if isinstance(entry := info.get(f"slave{n}"), dict) and entry.get("state") == "online"]


def _row(beat: RunnerBeat, state: str, alive: bool) -> RunnerRow:
    """A runner's row: what its beat says, and, for a runner that is gone, no work."""
    row = RunnerRow(beat.name, alive, state, beat.host, beat.pid, list(beat.queues), beat.started_at,
                    heartbeat_at=beat.heartbeat_at, heartbeat_age_s=round(age_s(beat.heartbeat_at), 1))
    if not alive:
        return row
    return replace(row, build=beat.build, attempt=beat.attempt, shard=beat.shard, shard_attempt=beat.shard_attempt)
