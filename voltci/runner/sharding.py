"""Splitting one build's tests across runners: longest-processing-time-first bin packing.

With durations recorded by earlier builds of the repository, each test goes, longest first, to the
shard with the least work so far. Without them (a first build, or mostly new tests), whole modules
are packed by their number of tests, which keeps each module's set-up in one shard.
"""

from __future__ import annotations

import heapq
import statistics

MIN_KNOWN_SHARE = 0.5  # of the tests with a recorded duration, for durations to be trusted
MAX_SHARDS = 32


def module_of(test_id: str) -> str:
    """`pkg.test_mod.Class.test_x` → `pkg.test_mod`, pytest's `tests/test_mod.py::T::test_x[1]` →
    `tests/test_mod.py` (near enough for grouping)."""
    if "::" in test_id:
        return test_id.split("::", 1)[0]
    parts = test_id.split(" ", 1)[0].split(".")
    return ".".join(parts[:-2]) if len(parts) > 2 else parts[0]


def partition(test_ids: list[str], shards: int, durations: dict[str, float]) -> list[list[str]]:
    """`test_ids` in at most `shards` non-empty shares of about equal expected time; every id exactly once."""
    shards = max(1, min(shards, MAX_SHARDS, len(test_ids)))
    known = [durations[t] for t in test_ids if t in durations]
    if test_ids and len(known) >= MIN_KNOWN_SHARE * len(test_ids):
        typical = statistics.median(known) if known else 0.0
        items = [(durations.get(t, typical), [t]) for t in test_ids]
    else:
        modules: dict[str, list[str]] = {}
        for test_id in test_ids:
            modules.setdefault(module_of(test_id), []).append(test_id)
        items = [(float(len(ids)), ids) for ids in modules.values()]
    items.sort(key=lambda item: (-item[0], item[1][0]))
    loads = [(0.0, number) for number in range(shards)]
    shares: list[list[str]] = [[] for _ in range(shards)]
    for weight, ids in items:
        load, number = heapq.heappop(loads)
        shares[number] += ids
        heapq.heappush(loads, (load + weight, number))
    return [sorted(share) for share in shares if share]
