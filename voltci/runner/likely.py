"""Which tests are most likely to fail in a build, and how many of them fit its pre-pass: pure ranking,
from evidence gathered elsewhere (prepass.py).

Most regressions are caught by few tests: those that failed lately, and those that exercise what the
commit changed. The ranking, first to last:

    0  failed in the previous build of the branch
    1  failed, erred or was flaky in one of its last builds (or its base branch's)
    2  in a test file the commit changed (a new file: all of it, even before its tests have timings)
    3  named after a function or class whose code the commit changed (`chunked` -> ChunkedTests.test_even),
       in a file that imports the changed module
    4  in a test file that imports a module the commit changed; 5 and 6 through one or two more files

and, within a rank, the cheapest first (more tests sooner). Tests are added while the sum of their
recorded costs (and, for pytest, what collecting their files took) stays within the budget (a share of
the last build's test time): one that does not fit is passed over for cheaper ones after it, so the
bound always holds.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

MAX_PICKED = 2_000  # ids handed to the pre-pass at most
MAX_NAMES_MATCHED = 50  # changed definitions matched against test ids (each test id is scanned for each)
GENERIC_NAMES = {"init", "new", "main", "test", "tests", "setup", "teardown", "call", "repr", "str", "eq", "hash",
                 "iter", "next", "len", "getattr", "getitem", "setattr", "enter", "exit", "run", "self", "helper"}
RANK_NAMES = ("failed in the previous build", "failed or flaky lately", "in a changed test file",
              "named after a changed definition", "importing a changed module",
              "importing a changed module through another", "importing a changed module through two others")
NAMED_RANK = 3
IMPORTER_RANK = 4


@dataclass
class Evidence:
    """What is known of the build before it runs."""

    costs: dict[str, float]  # each test of the last build that ran tests: its seconds (ids as recorded)
    previous_failures: set[str] = field(default_factory=set)  # of `costs`' tests: one gone since is no more
    recent_failures: set[str] = field(default_factory=set)  # (prepass.py leaves out those the last run had not)
    file_distance: dict[str, int] = field(default_factory=dict)  # test file -> 0 changed, n: imports through n-1
    file_of: dict[str, str] = field(default_factory=dict)  # test id -> its file, where known
    new_files: list[str] = field(default_factory=list)  # changed test files with no recorded test: whole-file entries
    collect_costs: dict[str, float] = field(default_factory=dict)  # pytest: collecting each file, in seconds
    changed_names: set[str] = field(default_factory=set)  # functions and classes whose code the commit changed


@dataclass
class Pick:
    """The pre-pass: entries (test ids, or whole files for new ones) in the order they run, why each was
    chosen (rank by entry), and what the entries are estimated to cost of what was allowed."""

    entries: list[str] = field(default_factory=list)
    ranks: dict[str, int] = field(default_factory=dict)
    cost_s: float = 0.0
    budget_s: float = 0.0
    left_out: int = 0  # likely tests that did not fit

    def __bool__(self) -> bool:
        return bool(self.entries)

    def summary(self) -> str:
        """For the build's log: how many of each rank."""
        counts: dict[int, int] = {}
        for rank in self.ranks.values():
            counts[rank] = counts.get(rank, 0) + 1
        parts = [f"{count} {RANK_NAMES[rank]}" for rank, count in sorted(counts.items())]
        return ", ".join(parts)


def _matchable(names: set[str]) -> list[str]:
    """Changed definitions as test ids spell them (lower case, no underscores), the generic ones left out:
    the longest first, at most MAX_NAMES_MATCHED."""
    plain = {name.lower().replace("_", "") for name in names}
    kept = sorted((name for name in plain if len(name) >= 4 and name not in GENERIC_NAMES), key=lambda n: (-len(n), n))
    return kept[:MAX_NAMES_MATCHED]


def _names_one_of(test_id: str, names: list[str]) -> bool:
    """Whether the test's own name (its id past its file or module) spells one of `names`."""
    own = test_id.rpartition(".py::")[2] if ".py::" in test_id else test_id
    plain = own.lower().replace("_", "")
    return any(name in plain for name in names)


def pick(evidence: Evidence, budget_s: float) -> Pick:
    """The likely tests that fit `budget_s`, most likely first."""
    costs = evidence.costs
    file_cost: dict[str, float] = {}
    for test_id, cost in costs.items():
        file = evidence.file_of.get(test_id)
        if file is not None:
            file_cost[file] = file_cost.get(file, 0.0) + cost
    unknown_file_cost = statistics.median(file_cost.values()) if file_cost else 0.0
    ranked: dict[str, tuple[int, float]] = {}

    def offer(entry: str, rank: int, cost: float) -> None:
        if entry not in ranked or rank < ranked[entry][0]:
            ranked[entry] = (rank, cost)

    names = _matchable(evidence.changed_names)
    for test_id, cost in costs.items():
        if test_id in evidence.previous_failures:
            offer(test_id, 0, cost)
        elif test_id in evidence.recent_failures:
            offer(test_id, 1, cost)
        file = evidence.file_of.get(test_id)
        distance = evidence.file_distance.get(file or "")
        if distance == 0:
            offer(test_id, 2, cost)
        elif distance is not None and IMPORTER_RANK + distance - 1 < len(RANK_NAMES):
            offer(test_id, IMPORTER_RANK + distance - 1, cost)
        if names and (distance or file is None) and _names_one_of(test_id, names):
            offer(test_id, NAMED_RANK, cost)
    for file in evidence.new_files:
        offer(file, 2, unknown_file_cost)
    chosen = Pick(budget_s=budget_s)
    collected: set[str] = set()
    for entry, (rank, cost) in sorted(ranked.items(), key=lambda item: (item[1][0], item[1][1], item[0])):
        file = evidence.file_of.get(entry, entry)
        collecting = evidence.collect_costs.get(file, 0.0) if file not in collected else 0.0
        if chosen.cost_s + cost + collecting > budget_s or len(chosen.entries) >= MAX_PICKED:
            chosen.left_out += 1
            continue
        chosen.entries.append(entry)
        chosen.ranks[entry] = rank
        chosen.cost_s += cost + collecting
        collected.add(file)
    return chosen
