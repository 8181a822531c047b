"""How much of Redis Volt uses: memory used against maxmemory, and what a finished build costs."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from voltci import keys
from voltci.store.records import Records
from voltci.store.retention import build_keys
from voltci.store.tx import Client

SAMPLE_BUILDS = 10
SCAN_BACK = 50


@dataclass(frozen=True)
class Memory:
    used: int
    maxmemory: int  # 0: no limit
    policy: str

    @property
    def full(self) -> bool:
        return bool(self.maxmemory) and self.used >= self.maxmemory


@dataclass(frozen=True)
class RepoUsage:
    repo: str
    builds: int  # builds kept
    bytes_per_build: int | None  # of its newest finished builds (None: none finished, or not measurable)


class Usage:
    """Memory used and bytes per build. `Usage(client, records)`."""

    def __init__(self, client: Client, records: Records):
        self.r = client
        self.records = records

    def memory(self) -> Memory:
        info = self.r.info("memory")
        return Memory(int(info.get("used_memory", 0)), int(info.get("maxmemory", 0)),
                      str(info.get("maxmemory_policy", "")))

    def repo_usage(self, repo: str) -> RepoUsage:
        """Builds kept, and Redis' own count of the bytes (MEMORY USAGE) of its newest finished builds."""
        total = int(self.r.zcard(keys.repo_history(repo)))
        finished = [b for b in self.records.builds(self.r.zrevrange(keys.repo_history(repo), 0, SCAN_BACK - 1))
                    if b.status.is_final][:SAMPLE_BUILDS]
        if not finished:
            return RepoUsage(repo, total, None)
        try:
            with self.r.pipeline(transaction=False) as pipe:
                for build in finished:
                    for key in build_keys(build):
                        pipe.memory_usage(key, samples=0)
                sizes = pipe.execute()
        except redis.ResponseError:
            return RepoUsage(repo, total, None)  # a server without MEMORY USAGE
        return RepoUsage(repo, total, round(sum(s or 0 for s in sizes) / len(finished)))
