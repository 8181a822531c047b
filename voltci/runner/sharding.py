"""Splitting one build's tests across runners: whole modules where they fit, single tests where not.

Each shard must collect the files of its tests before it runs any, and for a large pytest suite that
collection (importing the files, expanding their parametrizations) is a good part of the time. So
the units of a split are modules: longest first, each goes whole to the shard with the least work
so far, while it fits in that shard's fair share (the suite's weight ÷ the shards); one that does
not fit is cut, the shard filled up to its share with the module's first tests, and the rest goes
on as a unit of its own. At most one module per shard is cut, so each file is collected by as few
shards as possible, and module-level set-up mostly runs once.

A pytest shard that takes part of a module collects only the functions of its tests (the collector
does not even expand the other functions' parametrizations, which is most of what collecting a large
module costs), so each part of a cut module weighs the collection of the functions it touches (the
module's collection shared among its functions by their tests), and a function cut in two is
collected by both.

A test's weight is what it cost the repository's last run (models.Timings: its share of the run's
wall clock, the runner's work around it included), with costs for at least half of the tests; an
unknown one weighs the median; without them, every test weighs the same. A pytest module also
weighs what collecting its file took, and a module that is cut weighs it in both shards.

A pytest module given whole is planned as its file (`tests/test_a.py`, no `::`): its shard collects
the file and runs every test in it, new ones included, and the shard that runs "every test but the
others'" never collects it at all. A part of a cut module is planned as its functions taken whole
(`tests/test_a.py::T::test_x`, no `[`: every parametrization of it, new ones included) and the ids
of the function it shares. unittest ids are always planned one by one (their collector selects by
id; importing a module costs little).
"""

from __future__ import annotations

import heapq
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from itertools import groupby

from voltci.models import Timings

MIN_KNOWN_SHARE = 0.5  # of the tests with a recorded cost, for the costs to be trusted
MAX_SHARDS = 32
FIT_SLACK = 0.02  # of a fair share: a module that overfills a shard by no more than this is not cut
Weight = Callable[[str], float]


def function_of(test_id: str) -> str:
    """A pytest id's function, every parametrization of it: `tests/t.py::T::test_x[1-a]` →
    `tests/t.py::T::test_x`."""
    return test_id.split("[", 1)[0]


def module_of(test_id: str) -> str:
    """`pkg.test_mod.Class.test_x` → `pkg.test_mod`, pytest's `tests/test_mod.py::T::test_x[1]` →
    `tests/test_mod.py` (near enough for grouping)."""
    if "::" in test_id:
        return test_id.split("::", 1)[0]
    parts = test_id.split(" ", 1)[0].split(".")
    return ".".join(parts[:-2]) if len(parts) > 2 else parts[0]


@dataclass
class _Module:
    """What a cut needs to know of the whole module: its tests per function, and what collecting it took."""

    sizes: dict[str, int]  # pytest function -> its tests in the module (empty for unittest)
    tests: int
    collect: float

    def largest(self) -> float:
        """Collecting the module's largest function (all of it, for unittest)."""
        return self.collecting({max(self.sizes, key=self.sizes.__getitem__)}) if self.sizes else self.collect

    def collecting(self, functions: set[str]) -> float:
        """What collecting only `functions` of the module costs (all of it, for unittest)."""
        if not self.sizes:
            return self.collect
        return self.collect * sum(self.sizes.get(f, 0) for f in functions) / max(1, self.tests)


@dataclass
class _Unit:
    module: str
    ids: list[str]
    weight: float  # its tests', and collecting what it needs of its module
    whole: bool  # every test the module has: planned as its file when it is a pytest one
    of: _Module

    def entries(self) -> list[str]:
        if not self.of.sizes:
            return self.ids  # unittest: by id
        if self.whole:
            return [self.module]
        entries: list[str] = []
        for function, tests in groupby(self.ids, function_of):
            ids = list(tests)
            entries += [function] if len(ids) == self.of.sizes.get(function) else ids
        return entries


@dataclass(frozen=True)
class ShardPlan:
    """One shard's part of a split: the plan's entries (test ids, and pytest files and functions taken
    whole), and how many of the tests known now they stand for."""

    entries: list[str]
    tests: int


def partition(test_ids: list[str], shards: int, timings: Timings) -> list[ShardPlan]:
    """`test_ids` in at most `shards` non-empty plans of about equal expected time; every id in exactly
    one, by itself or in a whole file or function."""
    shards = max(1, min(shards, MAX_SHARDS, len(test_ids)))
    weight, collect = _weights(test_ids, timings)
    modules: dict[str, list[str]] = {}
    for test_id in sorted(test_ids):
        modules.setdefault(module_of(test_id), []).append(test_id)
    units = [_whole(module, ids, weight, collect(module)) for module, ids in modules.items()]
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
        # A cut may cost collecting a function twice: not worth it for an overfill no larger.
        if unit.weight <= room + FIT_SLACK * fair + unit.of.largest() / shards or len(unit.ids) == 1 \
                or len(loads) == 0:
            plans[number].append(unit)
            heapq.heappush(loads, (load + unit.weight, number))
            continue
        head, rest = _cut(unit, room, weight)
        fair += (head.weight + rest.weight - unit.weight) / shards  # what is now collected twice
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


def _whole(module: str, ids: list[str], weight: Weight, collect: float) -> _Unit:
    sizes = dict(Counter(function_of(t) for t in ids)) if "::" in ids[0] else {}
    return _Unit(module, ids, sum(weight(t) for t in ids) + collect, True, _Module(sizes, len(ids), collect))


def _part(unit: _Unit, ids: list[str], weight: Weight) -> _Unit:
    """Some of a unit's tests, weighing the collection of the functions they are in."""
    needed = unit.of.collecting({function_of(t) for t in ids})
    return _Unit(unit.module, ids, sum(weight(t) for t in ids) + needed, False, unit.of)


def _cut(unit: _Unit, room: float, weight: Weight) -> tuple[_Unit, _Unit]:
    """The unit's first tests up to `room` of weight (at least one), and the rest (at least one)."""
    touched: set[str] = set()
    taken, size = 0.0 if unit.of.sizes else unit.of.collect, 0
    for test_id in unit.ids[:-1]:
        function = function_of(test_id)
        more = weight(test_id) + (unit.of.collecting({function}) if unit.of.sizes and function not in touched else 0.0)
        if size and taken + more > room:
            break
        taken += more
        size += 1
        touched.add(function)
    return _part(unit, unit.ids[:size], weight), _part(unit, unit.ids[size:], weight)
