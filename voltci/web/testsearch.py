"""Finding tests in one build without sending them all to the page: a search over the ids, and the
slowest tests.

A build's tests are read from the repository's trail (an id list and one small column: ~10 ms for
25,000 tests) when it holds the build, else decoded from the build's results.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from voltci.models import Build, Outcome
from voltci.store import Store
from voltci.store.trail import Cell, TestTable

MAX_QUERY = 500
_CODES = {Outcome.PASSED: ord("p"), Outcome.FAILED: ord("f"), Outcome.ERROR: ord("e"), Outcome.SKIPPED: ord("s"),
          Outcome.FLAKY: ord("k")}


@dataclass(frozen=True)
class Found:
    test_id: str
    cell: Cell


def build_table(store: Store, build: Build) -> TestTable:
    """The build's tests: from the trail while it holds the (ended) build, else from its results."""
    if build.status.is_final:
        table = store.trail.table(build)
        if table is not None:
            return table
    tests = store.records.get_tests(build.id)
    return TestTable([t.id for t in tests], bytes(_CODES[t.outcome] for t in tests),
                     [round(t.duration_s * 1000) for t in tests])


def search(table: TestTable, query: str, limit: int) -> tuple[list[Found], int]:
    """The first `limit` tests whose id holds every word of `query` (any case), and how many match."""
    words = query.lower().split()
    matched = [i for i, test_id in enumerate(table.ids) if all(w in test_id.lower() for w in words)]
    return [Found(table.ids[i], table.cell(i)) for i in matched[:limit]], len(matched)


def slowest(table: TestTable, n: int) -> list[Found]:
    """The `n` tests that took longest (skipped ones left out), slowest first."""
    skipped = _CODES[Outcome.SKIPPED]
    ran = (i for i in range(len(table)) if table.codes[i] != skipped)
    return [Found(table.ids[i], table.cell(i)) for i in heapq.nlargest(n, ran, key=table.millis.__getitem__)]
