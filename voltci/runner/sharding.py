"""Splitting one build's tests across runners: whole modules where they fit, single tests where not.

Each shard must collect the files of its tests before it runs any, and for a large pytest suite that
collection (importing the files, expanding their parametrizations) is a good part of the time. So
the units of a split are modules: longest first, each goes whole to the shard with the least work
so far, while it fits in that shard's fair share (the suite's weight ÷ the shards); one that does
not fit is cut, the shard filled up to its share with the module's first tests, and the rest goes
on as a unit of its own. At most one module per shard is cut, so each file is collected by as few
shards as possible, and module-level set-up mostly runs once.

A test's weight is what it cost the repository's last run (models.Timings: its share of the run's
wall clock, the runner's work around it included), with costs for at least half of the tests; an
unknown one weighs the median; without them, every test weighs the same. A pytest module also
weighs what collecting its file took, and a module that is cut weighs it in both shards.

A pytest module given whole is planned as its file (`tests/test_a.py`, no `::`): its shard collects
the file and runs every test in it, new ones included, and the shard that runs "every test but the
others'" never collects it at all. A module that was cut is planned as its tests' ids. unittest ids
are always planned one by one (their collector selects by id; importing a module costs little).
"""

from __future__ import annotations

import heapq
import statistics
from collections.abc import Callable
from dataclasses import dataclass

from voltci.models import Timings

MIN_KNOWN_SHARE = 0.5  # of the tests with a recorded cost, for the costs to be trusted
MAX_SHARDS = 32
FIT_SLACK = 0.02  # of a fair share: a module that overfills a shard by no more than this is not cut
Weight = Callable[[str], float]


def module_of(test_id: str) -> str:
    """`pkg.test_mod.Class.test_x` → `pkg.test_mod`, pytest's `tests/test_mod.py::T::test_x[1]` →
    `tests/test_mod.py` (near enough for grouping)."""
    if "::" in test_id:
        return test_id.split("::", 1)[0]
    parts = test_id.split(" ", 1)[0].split(".")
    return ".".join(parts[:-2]) if len(parts) > 2 else parts[0]


@dataclass
class _Unit:
    module: str
    ids: list[str]
    weight: float  # its tests' and collecting its module
    whole: bool  # every test the module has: planned as its file when it is a pytest one
    collect: float = 0.0  # of the weight, collecting the module

    def entries(self) -> list[str]:
        if self.whole and "::" in self.ids[0]:
            return [self.module]
        return self.ids


@dataclass(frozen=True)
class ShardPlan:
    """One shard's part of a split: the plan's entries (test ids, and pytest files taken whole), and how
    many of the tests known now they stand for."""

    entries: list[str]
    tests: int


def partition(test_ids: list[str], shards: int, timings: Timings) -> list[ShardPlan]:
    """`test_ids` in at most `shards` non-empty plans of about equal expected time; every id in exactly
    one, by itself or in a whole file."""
    shards = max(1, min(shards, MAX_SHARDS, len(test_ids)))
    weight, collect = _weights(test_ids, timings)
    modules: dict[str, list[str]] = {}
    for test_id in sorted(test_ids):
        modules.setdefault(module_of(test_id), []).append(test_id)
    units = [_Unit(module, ids, sum(weight(t) for t in ids) + collect(module), True, collect(module))
             for module, ids in modules.items()]
    total = sum(unit.weight for unit in units)
    fair = total / shards
    waiting = [(-unit.weight, unit.module, n, unit) for n, unit in enumerate(units)]
    heapq.heapify(waiting)
    cuts = len(units)
    loads = [(0.0, number) for number in range(shards)]
    plans: list[list[_Unit]] = [[] for _ in range(shards)]
    while waiting:
        _, _, _, unit = heapq.heappop(waiting)
        load, number = heapq.heappop(loads)
        room = fair - load
        # A cut costs one more collection of the module: not worth it for an overfill no larger.
        overfill_kept = FIT_SLACK * fair + unit.collect / shards
        if unit.weight <= room + overfill_kept or len(unit.ids) == 1 or len(loads) == 0:
            plans[number].append(unit)
            heapq.heappush(loads, (load + unit.weight, number))
            continue
        fair += unit.collect / shards  # the module is now collected twice
        head, rest = _cut(unit, fair - load, weight)
        plans[number].append(head)
        heapq.heappush(loads, (load + head.weight, number))
        cuts += 1
        heapq.heappush(waiting, (-rest.weight, rest.module, cuts, rest))
    return [ShardPlan(sorted(e for unit in plan for e in unit.entries()), sum(len(unit.ids) for unit in plan))
            for plan in plans if plan]


def _weights(test_ids: list[str], timings: Timings) -> tuple[Weight, Weight]:
    """A test's weight, and a module's collection's (0 where unknown)."""
    costs, files = timings.tests, timings.files
    known = [costs[t] for t in test_ids if t in costs]
    if test_ids and known and len(known) >= MIN_KNOWN_SHARE * len(test_ids):
        typical = statistics.median(known)
        return (lambda test_id: costs.get(test_id, typical)), (lambda module: files.get(module, 0.0))
    return (lambda test_id: 1.0), (lambda module: 0.0)


def _cut(unit: _Unit, room: float, weight: Weight) -> tuple[_Unit, _Unit]:
    """The unit's first tests up to `room` of weight (at least one), and the rest (at least one). Both
    shards collect the whole module, so each part weighs its collection."""
    taken, size = unit.collect, 0
    for test_id in unit.ids[:-1]:
        if size and taken + weight(test_id) > room:
            break
        taken += weight(test_id)
        size += 1
    return (_Unit(unit.module, unit.ids[:size], taken, False, unit.collect),
            _Unit(unit.module, unit.ids[size:], unit.weight - taken + unit.collect, False, unit.collect))
