"""A build's pre-pass: before the suite runs in its own order, the tests most likely to fail run first,
so that a breakage is known in seconds (likely.py ranks them). This module gathers what the ranking
needs — the repository's recorded test times and recent failures from the store, what the commit
changed and what imports it from the mirror (commitfiles.py, importgraph.py) — and, after the suite,
names the tests the pre-pass saw fail that the suite then passed: order-dependent, shown, never
deciding the build.

The pre-pass is only ever an early look. Whatever is missing or wrong — no recorded times, a history
pruned away, a diff git cannot give (a first commit, a force-push onto an unknown commit), ids of tests
that no longer exist — shrinks it or skips it with one line in the build's log; the build itself runs
and is judged exactly as without it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from voltci.config import Settings
from voltci.errors import GitError
from voltci.models import Build, Outcome, RunOutcome, Status, plain_test_id
from voltci.runner import commitfiles
from voltci.runner.importgraph import MAX_LINE, ImportGraph, module_names
from voltci.runner.likely import Evidence, Pick, pick
from voltci.runner.suites import Discovery, Suite
from voltci.store import CorruptRecord, Store

log = logging.getLogger(__name__)
RECENT_BUILDS = 10  # of the branch (and a pull request's base branch) whose failures count as recent
ORDER_DEPENDENT_MAX = 50  # named in a build; the others are counted
CUT = "the pre-pass reached its bound"  # why a pre-pass is stopped that ran past it
STARTUP_S = 2.0  # what starting a test process may take besides its tests
_DEFINITION = re.compile(r"^\s*(?:async\s+)?(?:def|class)\s+([A-Za-z_]\w*)")
MAX_PRIVATE = 50  # private definitions whose callers are looked for
MAX_CALLERS = 200
_SUBTEST = re.compile(r" \(.*\)$")  # a unittest subtest's entry: its test's id and its parameters
_TEST_FILE = re.compile(r"(^|/)(test[^/]*|[^/]*_test)\.py$")
BAD = (Outcome.FAILED, Outcome.ERROR)


@dataclass
class Choice:
    """The pre-pass chosen for a build, and what the build's log says of how."""

    pick: Pick = field(default_factory=Pick)
    notes: list[str] = field(default_factory=list)
    kind: str = ""  # the suite's: "pytest" or "unittest"
    start_s: float = 0.0  # what starting its process is expected to take, besides its tests


def enabled(settings: Settings, asked: bool | None) -> bool:
    """The repository's own `tests.prepass` where it says, else the runner's `prepass`."""
    return settings.prepass if asked is None else asked


def choose(store: Store, build: Build, git_dir: Path | None, commit: str, base: str, suite: Suite) -> Choice:
    """The likely failures of `build` (checked out as `commit`; a pull request's merged into `base`) that
    fit its pre-pass, with notes saying what was left out and why."""
    choice = Choice(kind=suite.kind)
    try:
        timings = store.history.timings(build.repo, build.leg)
        if not timings.tests:
            choice.notes.append("no pre-pass: no test times recorded for this repository yet")
            return choice
        costs = {plain_test_id(test_id): cost for test_id, cost in timings.tests.items()}
        previous, previous_failures, recent_failures = _failures(store, build, costs)
    except redis.RedisError as exc:
        choice.notes.append(f"no pre-pass: the build history could not be read ({exc})")
        return choice
    since = base or (previous.commit if previous is not None else "")
    changed: tuple[str, ...] = ()
    sources: dict[str, bytes] = {}
    if git_dir is None:
        choice.notes.append("pre-pass without the commit's changes: no mirror to read them from")
    else:
        since = since or commitfiles.parent_of(git_dir, commit)
        if not since:
            choice.notes.append("pre-pass without the commit's changes: a first commit, with nothing to compare")
        else:
            changes = commitfiles.changed_paths(git_dir, since, commit)
            changed = changes.paths
            if changes.why_not:
                choice.notes.append(f"pre-pass without the commit's changes since {since[:10]}: {changes.why_not}")
        if any(path.endswith(".py") for path in changed):
            try:
                sources = commitfiles.python_sources(git_dir, commit)
            except GitError as exc:
                choice.notes.append(f"pre-pass without the import graph: {exc}")
    evidence = _evidence(costs, previous_failures, recent_failures, changed, sources, suite)
    evidence.collect_costs = dict(timings.files)
    if git_dir is not None and sources:
        changed_code = tuple(p for p in changed if p.endswith(".py"))
        names = commitfiles.changed_names(git_dir, since, commit, changed_code)
        evidence.changed_names = names | callers_of(names, {p: sources[p] for p in changed_code if p in sources})
    share = store.settings.prepass_share
    suite_s = sum(costs.values()) + sum(timings.files.values()) + timings.start_s
    budget = share * suite_s
    if timings.start_s >= budget:
        choice.notes.append(f"no pre-pass: starting a test process takes about {timings.start_s:.1f} s, more than "
                            f"the {budget:.2f} s it may cost ({share:g} of the last build's {suite_s:.1f} s of "
                            "tests); the suite itself tells its first failure as soon")
        return choice
    choice.start_s = timings.start_s
    choice.pick = pick(evidence, budget - timings.start_s)
    return choice


def callers_of(names: set[str], sources: dict[str, bytes]) -> set[str]:
    """The definitions in `sources` whose code names a private one of `names` (`_helper`): no test is
    named after a private helper, but the tests of its public callers are (a line scan, bounded as the
    import graph's)."""
    private = {name for name in names if name.startswith("_") and not name.startswith("__")}
    if not private:
        return set()
    mention = re.compile(r"\b(" + "|".join(re.escape(name) for name in sorted(private)[:MAX_PRIVATE]) + r")\b")
    found: set[str] = set()
    for source in sources.values():
        current = ""
        for line in source.decode("utf-8", "replace").splitlines():
            if len(line) > MAX_LINE:
                continue
            defined = _DEFINITION.match(line)
            if defined:
                current = defined.group(1)
            elif current and current not in private and mention.search(line):
                found.add(current)
            if len(found) >= MAX_CALLERS:
                return found
    return found


def _known(test_id: str, costs: dict[str, float]) -> str:
    """A failed test as the pre-pass can run it: a test the last run had (a unittest subtest's entry,
    `id (i=2)`, as its test); "" for one it did not (removed since, or no test: a collection error)."""
    if test_id in costs:
        return test_id
    parent = _SUBTEST.sub("", test_id)
    return parent if parent in costs else ""


def _failures(store: Store, build: Build, costs: dict[str, float]) -> tuple[Build | None, set[str], set[str]]:
    """The build before this one — a branch's previous build; a pull request's build of its previous head,
    else its base branch's newest —, the tests that failed in it, and those that failed or were flaky in
    the recent builds of the branch (a pull request's own and its base branch's) — of those the last run
    had."""
    pull = build.pull_request
    branch = pull.base_branch if pull is not None and pull.base_branch else build.branch
    own: list[Build] = []
    if pull is not None:
        state = store.pulls.get(build.repo, pull.number)
        own = store.records.builds(state.builds[:RECENT_BUILDS + 1]) if state is not None else []
    base = store.history.recent_builds(build.repo, branch, RECENT_BUILDS + 1)
    recent = []
    for group in (own, base):
        ended = [b for b in group if b.id != build.id and b.status.is_final and b.commit != build.commit]
        ended.sort(key=lambda b: (b.finished_at, b.queued_at), reverse=True)  # the last to end first
        recent += ended
    previous = next((b for b in recent if b.status in (Status.PASSED, Status.FAILED)), None)
    previous_failures: set[str] = set()
    recent_failures: set[str] = set()
    for older in recent[:2 * RECENT_BUILDS]:
        try:
            listed = store.records.listed_tests(older.id)
        except CorruptRecord:
            log.warning("build %s: its failing tests cannot be read; the pre-pass goes without them", older.id)
            continue
        for test in listed:
            test_id = _known(plain_test_id(test.subtest_of or test.id), costs)
            if not test_id or (build.leg and test.leg and test.leg != build.leg):
                continue
            recent_failures.add(test_id)
            if older is previous and test.outcome in BAD:
                previous_failures.add(test_id)
    return previous, previous_failures, recent_failures


def _evidence(costs: dict[str, float], previous_failures: set[str], recent_failures: set[str],
              changed: tuple[str, ...], sources: dict[str, bytes], suite: Suite) -> Evidence:
    by_name: dict[str, list[str]] = {}
    for path in sources:
        for name in module_names(path):
            by_name.setdefault(name, []).append(path)
    file_of = {test_id: file for test_id in costs if (file := _file_of(test_id, by_name))}
    distance = ImportGraph.of_sources(sources).importers({p for p in changed if p.endswith(".py")}) \
        if sources else dict.fromkeys(changed, 0)
    test_files = set(file_of.values())
    file_distance = {path: steps for path, steps in distance.items()
                     if path in test_files or _TEST_FILE.search(path)}
    known = set(test_files)
    new_files = [entry for path in sorted(changed)
                 if path.endswith(".py") and _TEST_FILE.search(path) and path not in known and path in sources
                 and (entry := _file_entry(path, suite))]
    return Evidence(costs, previous_failures, recent_failures, file_distance, file_of, new_files)


def _file_of(test_id: str, by_name: dict[str, list[str]]) -> str:
    """The file a test id is in: pytest's `path.py::…`, or unittest's dotted id's longest prefix that
    names a module of the commit."""
    head, sep, _ = test_id.partition("::")
    if sep:
        return head if head.endswith(".py") else ""
    parts = test_id.split(".")
    for end in range(len(parts) - 1, 0, -1):
        found = by_name.get(".".join(parts[:end]))
        if found:
            return sorted(found, key=len)[0]
    return ""


def _file_entry(path: str, suite: Suite) -> str:
    """How the suite's runner names a whole new test file: pytest by its path, unittest by its module's
    dotted name from its top-level directory ("" when the file is not below it)."""
    if not isinstance(suite, Discovery):
        return path
    top = (suite.top_level_dir or suite.start_dir).strip("/")
    top = "" if top in ("", ".") else top + "/"
    if not path.startswith(top):
        return ""
    names = module_names(path[len(top):])
    return names[0] if names else ""


def hard_limit_s(chosen: Pick) -> float:
    """How long a pre-pass may run before it is stopped: twice what its tests cost the last build, and
    the start of a process — its tests may take longer when they fail (a test that failed took longer
    than the times recorded from when it passed), never the build's suite's time."""
    return 2 * chosen.budget_s + STARTUP_S


def order_dependent(outcome: RunOutcome, prepass: list[tuple[str, str]]) -> list[str]:
    """The tests the pre-pass saw fail (`prepass`: id and message) that passed in the suite's own order:
    each keeps its `passed`, with a message saying what the pre-pass saw."""
    failed = dict(prepass)
    found = []
    for test in outcome.tests:
        if test.outcome is Outcome.PASSED and test.id in failed:
            first = next((line for line in failed[test.id].splitlines() if line.strip()), "")[-300:]
            test.message = ("order-dependent: it failed when run first, in the pre-pass, and passed in the suite's "
                            "own order" + (f"; the pre-pass saw: {first}" if first else ""))
            found.append(test.id)
    return found


def describe(choice: Choice, say: Callable[[str], None]) -> None:
    """Say in the build's log what the pre-pass will run, and why."""
    for note in choice.notes:
        say(f"[volt: {note}]")
    chosen = choice.pick
    if not chosen:
        if chosen.budget_s and not choice.notes:
            say("[volt: no pre-pass: no test is likelier to fail than another in this build]")
        return
    left = f"; {chosen.left_out} more likely test(s) did not fit" if chosen.left_out else ""
    start = f" and {choice.start_s:.2f} s to start its process" if choice.start_s else ""
    say(f"[volt: pre-pass: {len(chosen.entries)} test(s) most likely to fail run first ({chosen.summary()}), "
        f"about {chosen.cost_s:.2f} s of tests{start}, of the {chosen.budget_s + choice.start_s:.2f} s allowed{left}; "
        "then the whole suite, in its own order, decides the build]")
