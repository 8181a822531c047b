"""Several test runs of one build made one result: the maintainers' commands of a tox environment run
one after another (steps.BuildSteps runs them), each test run's tests taken in order into one list.

A test id that an earlier command already reported is kept as `ID [2]` (the same test run twice, by two
commands): ids stay distinct within a build. The build's status is the worst of its commands' — a step
that failed makes it `failed`, one that could not start `error` — and its reason the first command's
that has one, naming the command.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path

from voltci.models import Counts, Cut, RunOutcome, Status, Timings
from voltci.runner import untrusted
from voltci.store.budget import Keeper

TMP = "{tmp}"  # detection's name for the build's temporary directory, in a run's `cwd`
RANK = {Status.PASSED: 0, Status.FAILED: 1, Status.ERROR: 2}


@dataclass
class Results:
    """What the commands run so far produced, merged."""

    total: int  # how many commands the build runs
    parts: list[RunOutcome] = field(default_factory=list)
    status: Status = Status.PASSED
    reason: str = ""

    def label(self, number: int, argv: list[str]) -> str:
        return f"command {number} of {self.total} (`{shlex.join(argv)}`)"

    def tests_of(self, number: int, argv: list[str], outcome: RunOutcome) -> None:
        """Take a test run's outcome (its failed tests already run again)."""
        self.parts.append(outcome)
        self._worse(outcome.status, f"{self.label(number, argv)}: {outcome.reason}" if outcome.reason else "")

    def step_failed(self, number: int, argv: list[str], why: str, status: Status = Status.FAILED) -> None:
        self._worse(status, f"{self.label(number, argv)} {why}")

    def _worse(self, status: Status, reason: str) -> None:
        if RANK.get(status, 3) > RANK.get(self.status, 3):
            self.status = status
        if reason and not self.reason:
            self.reason = reason

    def outcome(self, log_tail: str) -> RunOutcome:
        """One outcome of every command's: the tests in the order they ran, ids kept distinct."""
        keeper = Keeper(distinct=True)
        cut, tests_cost, files_cost, start_s = Cut(), {}, {}, 0.0
        order = 0
        for part in self.parts:
            cut = cut + part.cut
            renamed = {}
            for test in part.tests:
                renamed[test.id] = keeper.add(replace(test, order=order))
                order += 1
            tests_cost.update({renamed.get(test_id, test_id): cost for test_id, cost in part.timings.tests.items()})
            files_cost.update(part.timings.files)
            start_s = max(start_s, part.timings.start_s)
        tests, lost = keeper.done()
        cut = cut + lost
        kept = {test.id for test in tests}
        outcome = RunOutcome(self.status, tests, Counts.of(tests) + cut.counts, self.reason, log_tail,
                             Timings({k: v for k, v in tests_cost.items() if k in kept}, files_cost, start_s))
        outcome.cut = cut
        return outcome


def working_dir(cwd: str, tree: Path, tmp: Path) -> Path:
    """Where a command runs, made if missing (as tox makes its changedir): a directory of the tree or of
    the build's temporary directory `tmp` (`{tmp}/...`), reached through no link (untrusted.NotInside)."""
    if cwd == TMP or cwd.startswith(TMP + "/"):
        base, relative = tmp, cwd[len(TMP):].lstrip("/")
    else:
        base, relative = tree, cwd
    path = base / relative if relative not in ("", ".") else base
    untrusted.make_dirs(path, base)
    return path
