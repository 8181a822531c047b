"""One suite split across runners: shards cover every test id exactly once, the merged report equals
an unsharded build of the same commit, and a shard lost with its runner is run again elsewhere."""

from __future__ import annotations

import json

import pytest
from cluster import Cluster
from support import run_volt, wait_until

from voltci.models import AttemptState, Timings
from voltci.runner.sharding import function_of, module_of, partition
from voltci.store import Store


def expand(entries: list[str], test_ids: list[str]) -> list[str]:
    """A plan's test ids: its ids, and every id of the files it takes whole."""
    return [t for t in test_ids if t in entries or ("::" in t and {module_of(t), function_of(t)} & set(entries))]


def test_partition_covers_every_id_once_and_balances_by_duration() -> None:
    ids = [f"pkg.test_m{m}.T.test_{n}" for m in range(5) for n in range(20)]
    durations = {test_id: (5.0 if test_id.endswith("_0") else 0.1) for test_id in ids}
    plans = partition(ids, 3, Timings(durations))
    assert sorted(i for plan in plans for i in plan.entries) == sorted(ids)  # unittest: always by id
    assert [plan.tests for plan in plans] == [len(plan.entries) for plan in plans]
    loads = [sum(durations[i] for i in plan.entries) for plan in plans]
    assert max(loads) - min(loads) <= 5.0  # no shard gets two long tests while another has none
    two = partition(ids[:2], 8, Timings(durations))
    assert [p.entries for p in two] == [[ids[0]], [ids[1]]]  # no more shards than tests


def test_pytest_modules_go_whole_where_they_fit_and_are_cut_where_not() -> None:
    sizes = {"a": 500, "b": 300, "c": 100, "d": 50}
    ids = [f"tests/test_{m}.py::test_{n}" for m, size in sizes.items() for n in range(size)]
    durations = Timings(dict.fromkeys(ids, 0.01))
    plans = partition(ids, 2, durations)
    expanded = [expand(plan.entries, ids) for plan in plans]
    assert sorted(t for share in expanded for t in share) == sorted(ids)  # every id exactly once
    assert [plan.tests for plan in plans] == [len(share) for share in expanded]
    assert abs(plans[0].tests - plans[1].tests) <= 2  # as even as single tests make it
    whole = {e for plan in plans for e in plan.entries if "::" not in e}
    assert whole == {"tests/test_b.py", "tests/test_c.py", "tests/test_d.py"}  # only the largest module is cut
    assert len(partition(ids, 2, durations)) == len(plans) and partition(ids, 2, durations) == plans  # stable


def test_a_cut_module_is_cut_between_functions_and_each_part_weighs_what_it_collects() -> None:
    """A shard collects only the functions of a module it has tests of: the module's collection is
    shared among its functions by their tests, and a part is planned as its whole functions."""
    ids = [f"tests/test_a.py::test_f[{n}]" for n in range(60)] + [f"tests/test_a.py::test_g[{n}]" for n in range(40)]
    ids += [f"tests/test_b.py::test_{n}" for n in range(100)]
    timings = Timings(dict.fromkeys(ids, 0.01), {"tests/test_a.py": 1.0})
    plans = partition(ids, 2, timings)
    shares = [expand(plan.entries, ids) for plan in plans]
    assert sorted(t for share in shares for t in share) == sorted(ids)  # every id exactly once
    entries = {e for plan in plans for e in plan.entries}
    assert {"tests/test_a.py::test_f", "tests/test_a.py::test_g"} <= entries  # whole functions, never cut
    # test_f: 0.6 s of tests + 0.6 s of collection; test_g: 0.4 + 0.4; test_b.py: 1.0.
    sizes = {"tests/test_a.py::test_f": 60, "tests/test_a.py::test_g": 40}
    loads = sorted(round(0.01 * len(share) + sum(n / 100 for f, n in sizes.items() if f in plan.entries), 2)
                   for plan, share in zip(plans, shares, strict=True))
    assert loads == [1.2, 1.8], loads


def test_shards_timings_add_up_to_one_runs() -> None:
    """Each shard collected only its functions of a module they shared: the module's collection is the sum;
    each started a process of its own, which one run starts once."""
    shard0 = Timings({"tests/test_a.py::test_f[0]": 0.5}, {"tests/test_a.py": 0.25, "tests/test_b.py": 1.0}, 0.5)
    shard1 = Timings({"tests/test_a.py::test_g": 0.125}, {"tests/test_a.py": 0.5}, 0.625)
    assert Timings.combined([shard0, shard1]) == Timings(
        {"tests/test_a.py::test_f[0]": 0.5, "tests/test_a.py::test_g": 0.125},
        {"tests/test_a.py": 0.75, "tests/test_b.py": 1.0}, 0.625)


def test_without_history_whole_modules_are_packed() -> None:
    ids = [f"pkg.test_{m}.T.test_{n}" for m, size in (("a", 30), ("b", 20), ("c", 10)) for n in range(size)]
    plans = partition(ids, 2, Timings())
    assert sorted(plan.tests for plan in plans) == [30, 30]
    assert {module_of(i) for i in plans[0].entries}.isdisjoint({module_of(i) for i in plans[1].entries})
    assert module_of("tests/test_a.py::TestX::test_y[1.5-a.b]") == "tests/test_a.py"


SUITE = {"tests/__init__.py": "", "pkg/__init__.py": "", "pkg/maths.py": (
    '"""\n>>> double(2)\n4\n"""\n\ndef double(x):\n    return 2 * x\n')}
for module in range(6):
    SUITE[f"tests/test_m{module}.py"] = (
        "import doctest, os, time, unittest\nimport pkg.maths\n\n\n"
        + ("def load_tests(loader, tests, ignore):\n    tests.addTests(doctest.DocTestSuite(pkg.maths))\n"
           "    return tests\n\n\n" if module == 0 else "")
        + "class T(unittest.TestCase):\n"
        + "".join(f"    def test_{n}(self):\n        time.sleep(float(os.environ.get('SHARD_SLEEP', '0')))\n"
                  f"        self.assertNotEqual({n}, 7)\n" for n in range(8))
        + "    def test_sub(self):\n        for i in range(3):\n            with self.subTest(i=i):\n"
          "                self.assertLess(i, 2)\n"
        + "    @unittest.skip('later')\n    def test_skip(self):\n        pass\n")


def outcomes(cluster: Cluster, sha: str) -> tuple[dict, dict]:
    proc = run_volt("report", sha, "--json", "--redis-url", cluster.server.url)
    assert proc.stdout, proc.stderr
    data = json.loads(proc.stdout)
    return {t["id"]: t["outcome"] for t in data["tests"]}, data


def two_runners(cluster: Cluster, **env: str) -> None:
    """Runners r1 and r2 (with `env`) and a scheduler, once both runners' heartbeats are in."""
    cluster.worker("r1", **env)
    cluster.worker("r2", **env)
    cluster.scheduler()
    wait_until(lambda: len([n for n in ("r1", "r2") if cluster.beat(n)]) == 2, "both runners")


@pytest.fixture
def cluster(tmp_path):
    cluster = Cluster(tmp_path, shard_threshold=20)
    yield cluster
    cluster.stop()


def test_a_split_build_reports_like_an_unsplit_one(cluster, make_repo) -> None:
    repo = make_repo()
    sha = repo.commit(SUITE, "a suite of six modules")
    # tests that take some time, and a share that pays for starting a pre-pass: a suite of no time has none
    two_runners(cluster, VOLT_PREPASS_SHARE="0.5", SHARD_SLEEP="0.02")
    (build,) = cluster.watch(repo).poll()
    split = cluster.wait_final(build.id)
    shards = Store(cluster.conn).records.get_shards(build.id)
    assert split.shards == len(shards) == 2 and {s.runner for s in shards} == {"r1", "r2"}
    plans = [set(Store(cluster.conn).shards.plan(build.id, s.number)) for s in shards]
    assert plans[0].isdisjoint(plans[1])
    sharded, data = outcomes(cluster, sha)
    assert {s["state"] for s in data["shards"]} == {"finished"}
    recorded = Store(cluster.conn).history.timings(build.repo).tests  # both shards' costs, merged
    assert set(recorded) == {t for t, outcome in sharded.items() if " (" not in t} and min(recorded.values()) > 0

    # The next commit is split from the recorded timings at once; its new tests run in shard 0.
    newer = repo.commit({"tests/test_new.py": "import unittest\n\nclass N(unittest.TestCase):\n"
                         "    def test_new(self):\n        pass\n"}, "a new test")
    (second,) = cluster.watch(repo).poll()
    assert cluster.wait_final(second.id).shards == 2
    assert cluster.conn.hget(f"volt:build:{second.id}", "shard_rest") == "1"
    newest, _ = outcomes(cluster, newer)
    assert newest == {**sharded, "tests.test_new.N.test_new": "passed"}  # the suite's verdict, pre-pass or not
    assert "[volt: pre-pass: " in Store(cluster.conn).logs.read(second.id)  # shard 0 ran it, for every shard
    assert set(sharded) == set(newest) - {"tests.test_new.N.test_new"}

    # The same commit as another repository, built by one runner without splitting.
    cluster.conn.close()
    plain = Cluster(cluster.tmp_path / "plain", shard_threshold=0)
    try:
        plain.worker("solo")
        (again,) = plain.watch(repo).poll()
        whole = plain.wait_final(again.id)
        unsharded, _ = outcomes(plain, newer)
    finally:
        plain.stop()
    assert whole.shards == 0
    assert newest == unsharded and len(unsharded) == 6 * 10 + 6 + 1 + 1  # subtest entries and the doctest too
    whole.counts.total -= 1
    whole.counts.passed -= 1
    assert (split.status, split.counts) == (whole.status, whole.counts)
    assert plans[0] | plans[1] == {i for i in sharded if " (" not in i}  # every id in exactly one shard


def test_a_shard_lost_with_its_runner_runs_again_elsewhere(cluster, make_repo) -> None:
    repo = make_repo()
    sha = repo.commit(SUITE, "a suite of six modules")
    two_runners(cluster, SHARD_SLEEP="0.3")
    (build,) = cluster.watch(repo).poll()

    def shard_one_runner():
        shards = Store(cluster.conn).records.get_shards(build.id)
        return len(shards) == 2 and shards[1].state is AttemptState.RUNNING and shards[1].runner
    victim = wait_until(shard_one_runner, "shard 1 to start")
    cluster.worker("r3", SHARD_SLEEP="0.3")
    cluster.kill_runner(victim)
    done = cluster.wait_final(build.id)
    shards = Store(cluster.conn).records.get_shards(build.id)
    assert shards[1].attempt == 2 and shards[1].runner != victim and done.results_stored == 1
    lost = Store(cluster.conn).runners.recent_lost()
    assert lost[0].then == "shard 1 attempt 2 queued" and lost[0].runner == victim
    merged, _ = outcomes(cluster, sha)
    assert len(merged) == 67 and done.status.value == "failed"


PYTEST_SUITE = {".volt.toml": "[tests]\nrunner = 'pytest'\nargs = ['-q']\n"
                              "setup = [['python', '-m', 'pip', 'install', '-q', 'pytest==9.2.0']]\n",
                "pytest.ini": "[pytest]\naddopts = --doctest-modules\ntestpaths = tests pkg\n",
                "pkg/__init__.py": "", "pkg/maths.py": SUITE["pkg/maths.py"]}
for module in range(4):
    PYTEST_SUITE[f"tests/test_p{module}.py"] = (
        "import pytest\n\n\n@pytest.mark.parametrize('n', range(8))\ndef test_n(n):\n    assert n != 7\n\n\n"
        "class TestK:\n    def test_k(self):\n        pass\n")


def test_a_pytest_suite_is_split_after_pytests_own_collection(cluster, make_repo) -> None:
    repo = make_repo()
    sha = repo.commit(PYTEST_SUITE, "a pytest suite of four modules and a doctest")
    two_runners(cluster)
    (build,) = cluster.watch(repo).poll()
    split = cluster.wait_final(build.id, timeout=300)
    assert split.shards == 2, split.reason
    plans = [set(Store(cluster.conn).shards.plan(build.id, n)) for n in (0, 1)]
    # five modules of 9, 9, 9, 9 and 1 tests: each goes whole, planned as its file
    assert plans[0].isdisjoint(plans[1]) and plans[0] | plans[1] == {
        "pkg/maths.py", *(f"tests/test_p{module}.py" for module in range(4))}
    sharded, _ = outcomes(cluster, sha)
    assert {module_of(t) for t in sharded} == plans[0] | plans[1] and len(sharded) == 4 * 9 + 1
    assert sharded["tests/test_p2.py::test_n[7]"] == "failed" and split.counts.failed == 4
    assert (split.counts.total, split.counts.passed) == (37, 33)

    # From the recorded timings: a new test in a module some shard takes whole runs there, a new
    # module runs in shard 0 (every test the others' plans do not take); each exactly once.
    newer = repo.commit({"tests/test_p1.py": PYTEST_SUITE["tests/test_p1.py"] + "\n\ndef test_added():\n    pass\n",
                         "tests/test_p9.py": "def test_nine():\n    pass\n"}, "a new test and a new module")
    (second,) = cluster.watch(repo).poll()
    again = cluster.wait_final(second.id, timeout=300)
    assert again.shards == 2 and cluster.conn.hget(f"volt:build:{second.id}", "shard_rest") == "1"
    newest, data = outcomes(cluster, newer)
    assert newest == {**sharded, "tests/test_p1.py::test_added": "passed", "tests/test_p9.py::test_nine": "passed"}
    assert data["counts"]["total"] == 39
