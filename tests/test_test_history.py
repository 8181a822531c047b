"""A repository's test trail (store/trail.py) and what reads it: each test's outcome and duration
across the newest builds, written as builds end, bounded, pruned with retention, renumbered when
most numbers are dead; and the recent builds the charts read (store/history.py)."""

from __future__ import annotations

import json

import pytest

from voltci import keys
from voltci.models import Build, Counts, Outcome, RunOutcome, Status, TestResult
from voltci.store import Policy, Store
from voltci.store import trail as trail_module
from voltci.store.trail import Cell

P, F, E, S, K = Outcome.PASSED, Outcome.FAILED, Outcome.ERROR, Outcome.SKIPPED, Outcome.FLAKY


def sha(n: int) -> str:
    return f"{n:08x}".ljust(40, "c")


def record(store: Store, n: int, tests: dict[str, tuple[Outcome, float]], branch: str = "main",
           status: Status | None = None, repo: str = "proj") -> Build:
    """Build number `n` of `repo` (scored n: later builds are newer), ended with `tests`."""
    results = [TestResult(test_id, outcome, seconds, f"Traceback: {test_id} broke in {n}" if outcome in (F, E) else "",
                          i) for i, (test_id, (outcome, seconds)) in enumerate(tests.items())]
    failed = sum(1 for t in results if t.outcome in (F, E))
    if status is None:
        status = Status.FAILED if failed else Status.PASSED
    build = Build(id=keys.build_id(repo, sha(n)), repo=repo, url="/r", commit=sha(n), branch=branch,
                  subject=f"change {n}", queued_at=f"2026-01-01T00:{n % 60:02d}:00+00:00",
                  started_at=f"2026-01-01T00:{n % 60:02d}:05+00:00",
                  finished_at=f"2026-01-01T00:{n % 60:02d}:35+00:00",
                  duration_s=30.0, runner="host.1")
    store.builds.record_finished(build, RunOutcome(status, results, Counts(total=len(results), failed=failed,
                                                                           passed=len(results) - failed)),
                                 score=float(n))
    return build


def outcomes(cells: list[Cell]) -> list[Outcome | None]:
    return [c.outcome for c in cells]


@pytest.fixture
def store(conn, settings) -> Store:
    return Store(conn, settings)


def test_a_test_row_across_builds_newest_first(store) -> None:
    record(store, 1, {"a": (P, 0.010), "b": (P, 1.5)})
    record(store, 2, {"a": (F, 0.020), "b": (P, 1.6)})
    record(store, 3, {"a": (P, 0.030), "b": (S, 0.0), "c": (P, 0.001)})
    builds = store.trail.builds("proj")
    assert [b.commit for b in builds] == [sha(3), sha(2), sha(1)]
    rows = store.trail.rows("proj", ["a", "b", "c", "nosuch"], builds)
    assert set(rows) == {"a", "b", "c"}  # a test the trail never saw is left out
    assert outcomes(rows["a"]) == [P, F, P] and [c.ms for c in rows["a"]] == [30, 20, 10]
    assert outcomes(rows["b"]) == [S, P, P] and rows["b"][1].ms == 1600
    assert outcomes(rows["c"]) == [P, None, None]  # not in the builds before it was added


def test_finish_build_and_shards_merge_write_the_trail(store, rq_conn, settings) -> None:
    build = Build(id=keys.build_id("proj", sha(9)), repo="proj", url="/r", commit=sha(9), branch="main")
    Store(rq_conn, settings).builds.submit(build)
    store.builds.start_attempt(build.id, 1, "host.1")
    tests = [TestResult("t.T.test_a", F, 0.25, "boom", 0)]
    assert store.builds.finish(build.id, 1, "host.1", RunOutcome(Status.FAILED, tests, Counts(total=1, failed=1)))
    cells = store.trail.rows("proj", ["t.T.test_a"], store.trail.builds("proj"))["t.T.test_a"]
    assert cells == [Cell(F, 250)]


def test_a_sharded_build_enters_the_trail_when_its_last_shard_merges(store, rq_conn, settings) -> None:
    build = Build(id=keys.build_id("proj", sha(8)), repo="proj", url="/r", commit=sha(8), branch="main")
    Store(rq_conn, settings).builds.submit(build)
    store.builds.start_attempt(build.id, 1, "host.1")
    assert store.shards.start(build.id, 1, [["t.A.test_a"], ["t.B.test_b"]], "host.1")
    assert store.shards.claim(build.id, 1, 1, 1, "host.2")
    one = [TestResult("t.B.test_b", F, 1.25, "boom", 0)]
    assert store.shards.finish(build.id, 1, 1, 1, "host.2", RunOutcome(Status.FAILED, one, Counts(total=1, failed=1)))
    assert store.trail.builds("proj") == []  # not until the build's result is merged
    zero = [TestResult("t.A.test_a", P, 0.5, "", 0)]
    assert store.shards.finish(build.id, 1, 0, 1, "host.1",
                               RunOutcome(Status.PASSED, zero, Counts(total=1, passed=1))) == "merged"
    rows = store.trail.rows("proj", ["t.A.test_a", "t.B.test_b"], store.trail.builds("proj"))
    assert rows == {"t.A.test_a": [Cell(P, 500)], "t.B.test_b": [Cell(F, 1250)]}


def test_branches_and_builds_without_tests(store) -> None:
    record(store, 1, {"a": (P, 0.01)}, branch="main")
    record(store, 2, {"a": (F, 0.01)}, branch="dev")
    record(store, 3, {}, status=Status.ERROR)  # setup failed: no tests ran
    assert [b.commit for b in store.trail.builds("proj", "main")] == [sha(3), sha(1)]
    assert [b.commit for b in store.trail.builds("proj", "dev")] == [sha(2)]
    assert outcomes(store.trail.rows("proj", ["a"], store.trail.builds("proj"))["a"]) == [None, F, P]


def test_the_trail_keeps_its_newest_builds_only(store, monkeypatch) -> None:
    monkeypatch.setattr(trail_module, "TRAIL_BUILDS", 3)
    for n in range(1, 6):
        record(store, n, {"a": (P, 0.01)})
    assert [b.commit for b in store.trail.builds("proj")] == [sha(5), sha(4), sha(3)]
    assert store.r.hlen(keys.repo_trail("proj")) == 3
    older = record(store, 0, {"a": (P, 0.01)})  # older than the kept ones: not added
    assert not store.trail.record(older.id)
    assert store.r.hlen(keys.repo_trail("proj")) == 3


def test_retention_drops_the_columns_of_pruned_builds(store) -> None:
    for n in range(1, 5):
        record(store, n, {"a": (P, 0.01)})
    store.retention.prune(Policy(keep_builds=2), "proj")
    assert [b.commit for b in store.trail.builds("proj")] == [sha(4), sha(3)]
    assert store.r.hlen(keys.repo_trail("proj")) == 2 and store.r.zcard(keys.repo_trail_order("proj")) == 2


def test_ids_that_change_every_build_are_numbered_again(store, monkeypatch) -> None:
    monkeypatch.setattr(trail_module, "TRAIL_BUILDS", 2)
    monkeypatch.setattr(trail_module, "RENUMBER_SLACK", 0)
    for n in range(1, 8):
        record(store, n, {"stable": (P, 0.01), f"random[{n}a]": (P, 0.01), f"random[{n}b]": (F, 0.02)})
    ids = store.trail.ids("proj")
    assert len(ids) <= 2 * 3 + 3  # bounded: not 1 + 2 * 7
    rows = store.trail.rows("proj", ["stable", "random[7b]", "random[6a]"], store.trail.builds("proj"))
    assert outcomes(rows["stable"]) == [P, P] and outcomes(rows["random[7b]"]) == [F, None]
    assert outcomes(rows["random[6a]"]) == [None, P]


def test_a_trail_of_ids_that_change_every_build_keeps_fewer_builds_not_more_ids(store, monkeypatch) -> None:
    monkeypatch.setattr(trail_module, "TRAIL_IDS_MAX", 25)
    monkeypatch.setattr(trail_module, "RENUMBER_SLACK", 0)
    for n in range(1, 9):  # each build: 10 tests none of the others has
        record(store, n, {f"random[{n}-{k}]": (F if k == 0 else P, 0.01) for k in range(10)})
    assert len(store.trail.ids("proj")) <= 25
    builds = store.trail.builds("proj")
    assert [b.commit for b in builds][:2] == [sha(8), sha(7)] and len(builds) <= 3
    rows = store.trail.rows("proj", ["random[8-0]", "random[7-3]"], builds)
    assert outcomes(rows["random[8-0]"])[0] is F and outcomes(rows["random[7-3]"])[1] is P


def test_a_builds_own_table_from_the_trail(store) -> None:
    record(store, 1, {"old": (P, 0.01)})
    build = record(store, 2, {"a": (P, 0.5), "b": (F, 2.0)})
    table = store.trail.table(build)
    assert table is not None and table.ids == ["a", "b"]
    assert [table.cell(i) for i in range(2)] == [Cell(P, 500), Cell(F, 2000)]
    assert store.trail.table(Build(id="proj-" + sha(77), repo="proj", url="", commit=sha(77), branch="x")) is None


def test_recent_builds_of_a_branch_without_their_output(store) -> None:
    for n in range(1, 8):
        record(store, n, {"a": (P, 0.01)}, branch="main" if n % 2 else "dev")
    recent = store.history.recent_builds("proj", "main", limit=3)
    assert [b.commit for b in recent] == [sha(7), sha(5), sha(3)] and all(b.log_tail == "" for b in recent)
    assert len(store.history.recent_builds("proj")) == 7 and store.history.recent_builds("proj", "nosuch") == []
    assert store.history.branches("proj") == ["dev", "main"]


def volt(settings, *args: str):
    from click.testing import CliRunner

    from voltci.cli import cli
    return CliRunner().invoke(cli, [*args, "--redis-url", settings.effective_redis_url])


def test_volt_test_history_prints_the_strip_and_the_last_failure(store, settings) -> None:
    store.repos.register("proj", "/r", ["main"])
    for n, outcome in enumerate([P, F, P, K]):
        record(store, n + 1, {"t.T.test_x": (outcome, 0.25 * (n + 1)), "t.T.other": (P, 0.1)})
    record(store, 5, {"t.T.other": (P, 0.1)}, branch="dev")
    text = volt(settings, "test-history", "proj", "t.T.test_x")
    assert text.exit_code == 0, text.output
    assert "✓✗✓~·" in text.output and "ran in 4 of the last 5 build(s): 1 failed, 1 flaky" in text.output
    assert f"in {sha(2)[:10]} (main)" in text.output and "Traceback: t.T.test_x broke in 2" in text.output
    data = json.loads(volt(settings, "test-history", "proj", "t.T.test_x", "--json").output)
    assert [b["outcome"] for b in data["builds"]] == ["passed", "failed", "passed", "flaky", None]
    assert data["builds"][1]["duration_s"] == 0.5 and data["last_failure"]["commit"] == sha(2)
    dev = json.loads(volt(settings, "test-history", "proj", "t.T.test_x", "--branch", "dev", "--json").output)
    assert [b["outcome"] for b in dev["builds"]] == [None] and dev["last_failure"] is None


@pytest.mark.parametrize("args, says", [
    (("nosuch", "t.T.test_x"), "unknown repository 'nosuch'"),
    (("proj", "t.T.nosuch"), "no test 't.T.nosuch' in the newest builds of 'proj'"),
    (("proj", "a\nb"), "not a test id"),
    (("proj", "x" * 5000), "not a test id"),
])
def test_volt_test_history_bad_input_is_one_line_and_exit_2(store, settings, args, says) -> None:
    store.repos.register("proj", "/r", ["main"])
    record(store, 1, {"t.T.test_x": (P, 0.1)})
    result = volt(settings, "test-history", *args)
    assert result.exit_code == 2 and says in result.output and len(result.output.strip().splitlines()) == 1
