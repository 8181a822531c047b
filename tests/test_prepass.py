"""The pre-pass of likely failures: the ranking and its bound (pure), the commit read as data (real git),
and real builds (a real Redis, real git, the build's own processes in its sandbox) in which the first
failure is known before the suite starts, the verdict is the suite's, and everything that could
mislead the pre-pass only shrinks it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis
from support import PYTEST_VERSION, GitRepo

from voltci import keys, report
from voltci.config import Settings
from voltci.models import Build, Outcome, Status, Work
from voltci.runner import commitfiles
from voltci.runner.build import BuildRun
from voltci.runner.importgraph import ImportGraph, imported_names, module_names
from voltci.runner.likely import Evidence, pick
from voltci.store import Store

# ---- the ranking and its bound ----


def test_the_previous_builds_failures_come_first_then_recent_then_changed_files_then_importers() -> None:
    costs = {"t/test_a.py::old": 0.5, "t/test_a.py::recent": 0.5, "t/test_b.py::changed": 0.1,
             "t/test_c.py::imports": 0.01, "t/test_d.py::far": 0.01, "t/test_e.py::other": 0.01}
    evidence = Evidence(costs, previous_failures={"t/test_a.py::old"}, recent_failures={"t/test_a.py::recent"},
                        file_distance={"t/test_b.py": 0, "t/test_c.py": 1, "t/test_d.py": 2},
                        file_of={test_id: test_id.split("::")[0] for test_id in costs})
    chosen = pick(evidence, budget_s=10)
    assert chosen.entries == ["t/test_a.py::old", "t/test_a.py::recent", "t/test_b.py::changed",
                              "t/test_c.py::imports", "t/test_d.py::far"]
    assert "t/test_e.py::other" not in chosen.entries  # nothing says it is likely to fail
    assert chosen.summary().startswith("1 failed in the previous build, 1 failed or flaky lately")


def test_the_pick_never_costs_more_than_its_budget_and_takes_cheaper_tests_that_still_fit() -> None:
    costs = {f"t/test_x.py::t{n}": cost for n, cost in enumerate([3.0, 0.4, 0.4, 0.3, 5.0])}
    evidence = Evidence(costs, file_distance={"t/test_x.py": 0},
                        file_of=dict.fromkeys(costs, "t/test_x.py"))
    chosen = pick(evidence, budget_s=1.2)
    assert chosen.cost_s <= 1.2
    assert sorted(chosen.entries) == ["t/test_x.py::t1", "t/test_x.py::t2", "t/test_x.py::t3"]
    assert chosen.left_out == 2
    assert not pick(evidence, budget_s=0.0)


def test_a_new_test_file_runs_whole_after_what_failed_before() -> None:
    costs = {"t/test_a.py::one": 0.2, "t/test_a.py::two": 0.2, "t/test_b.py::three": 0.1}
    evidence = Evidence(costs, previous_failures={"t/test_b.py::three"},
                        file_of={"t/test_a.py::one": "t/test_a.py", "t/test_a.py::two": "t/test_a.py",
                                 "t/test_b.py::three": "t/test_b.py"}, new_files=["t/test_new.py"])
    chosen = pick(evidence, budget_s=5)
    assert chosen.entries == ["t/test_b.py::three", "t/test_new.py"]
    assert chosen.cost_s == pytest.approx(0.1 + (0.4 + 0.1) / 2)  # a new file: what its suite's files cost, median


def test_tests_named_after_a_changed_function_come_before_the_rest_of_the_files_importing_it() -> None:
    costs = {"tests/test_more.py::ChunkedTests::test_even": 0.2, "tests/test_more.py::ChunkedTests::test_odd": 0.2,
             "tests/test_more.py::WindowedTests::test_basic": 0.01,
             "tests/test_other.py::test_chunked_elsewhere": 0.01}  # a file that does not import the module
    evidence = Evidence(costs, file_distance={"tests/test_more.py": 1},
                        file_of={test_id: test_id.split("::")[0] for test_id in costs},
                        changed_names={"chunked", "__init__", "_private_helper"})
    chosen = pick(evidence, budget_s=10)
    assert chosen.entries == ["tests/test_more.py::ChunkedTests::test_even",
                              "tests/test_more.py::ChunkedTests::test_odd",
                              "tests/test_more.py::WindowedTests::test_basic"]
    assert chosen.summary() == "2 named after a changed definition, 1 importing a changed module"


# ---- the import graph, read as data ----


def test_module_names_from_every_directory_and_a_package_by_its_init() -> None:
    assert module_names("src/pkg/core.py") == ["src.pkg.core", "pkg.core", "core"]
    assert module_names("src/pkg/__init__.py") == ["src.pkg", "pkg"]
    assert module_names("not-a-package/x.py") == []
    assert module_names("README.md") == []


def test_imports_are_found_by_a_line_scan_aliases_and_relative_imports_included() -> None:
    source = b"import os, a.b as c\nfrom . import x, y as z\nfrom ..up import m\n  from q.r import (s,\n"
    assert imported_names(source, "pkg/sub/mod.py") == {"os", "a.b", "pkg.sub", "pkg.sub.x", "pkg.sub.y", "pkg.up",
                                                        "pkg.up.m", "q.r", "q.r.s"}
    assert imported_names(b"from .... import too_far\n", "pkg/mod.py") == set()


def test_a_test_that_imports_a_changed_module_directly_is_nearer_than_one_through_another() -> None:
    graph = ImportGraph.of_sources({
        "src/pkg/__init__.py": b"from .core import f\n", "src/pkg/core.py": b"import os\n",
        "tests/test_direct.py": b"from pkg import core\n", "tests/test_package.py": b"import pkg\n",
        "tests/helpers.py": b"from pkg.core import f\n", "tests/test_helped.py": b"import helpers\n",
        "tests/test_unrelated.py": b"import json\n"})
    distance = graph.importers({"src/pkg/core.py"})
    assert distance["tests/test_direct.py"] == 1 and distance["tests/helpers.py"] == 1
    assert distance["tests/test_package.py"] == 2 and distance["tests/test_helped.py"] == 2
    assert "tests/test_unrelated.py" not in distance


def test_hostile_sources_cost_the_scan_nothing() -> None:
    hostile = {"pkg/a.py": b"import " + b"x." * 200_000 + b"y\n",  # one line far past the bound
               "pkg/b.py": bytes(range(256)) * 100,  # not text at all
               "pkg/c.py": b"(" * 100_000 + b"\nimport pkg.a\n",  # nesting Python's own parser refuses
               "pkg/d.py": b"\n".join(b"import m%d" % n for n in range(5_000))}  # more names than kept
    graph = ImportGraph.of_sources(hostile)
    assert graph.imports["pkg/c.py"] == {"pkg/a.py"}
    assert graph.imports["pkg/a.py"] == set()
    assert len(imported_names(hostile["pkg/d.py"], "pkg/d.py")) <= 600


# ---- the commit read from the mirror, never from the tree ----


@pytest.fixture
def repo(make_repo) -> GitRepo:
    return make_repo("data")


def test_what_a_commit_changed_since_another_and_nothing_before_a_first_commit(repo: GitRepo) -> None:
    first = repo.commit({"pkg/a.py": "A = 1\n", "README": "x\n"}, "first")
    second = repo.commit({"pkg/a.py": "A = 2\n", "tests/test_a.py": "import pkg.a\n"}, "second")
    git_dir = repo.path / ".git"
    assert commitfiles.changed_paths(git_dir, first, second).paths == ("pkg/a.py", "tests/test_a.py")
    assert commitfiles.parent_of(git_dir, second) == first
    assert commitfiles.parent_of(git_dir, first) == ""
    third = repo.commit({"pkg/a.py": "A = 2\n\ndef chunked(n):\n    return n\n\n\nclass Window:\n"
                                     "    def size(self):\n        return 1\n"}, "third")
    fourth = repo.commit({"pkg/a.py": "A = 2\n\ndef chunked(n):\n    return n + 1\n\n\nclass Window:\n"
                                      "    def size(self):\n        return 2\n"}, "fourth")
    assert commitfiles.changed_names(git_dir, third, fourth, ("pkg/a.py",)) == {"chunked", "Window"}
    assert commitfiles.changed_names(git_dir, second, third, ("pkg/a.py",)) >= {"chunked", "Window", "size"}
    unknown = commitfiles.changed_paths(git_dir, "f" * 40, second)
    assert unknown.paths == () and unknown.why_not
    assert commitfiles.changed_paths(git_dir, "--output=/tmp/x", second).why_not  # never an option to git


def test_the_sources_leave_out_links_and_large_files(repo: GitRepo, tmp_path: Path) -> None:
    secret = tmp_path / "secret.py"
    secret.write_text("HOST = 'secret'\n")
    repo.commit({"pkg/a.py": "import pkg.b\n", "pkg/big.py": "#" * (commitfiles.MAX_SOURCE_BYTES + 1)}, "files")
    os.symlink(secret, repo.path / "pkg" / "link.py")
    sha = repo.commit({}, "a link")
    sources = commitfiles.python_sources(repo.path / ".git", sha)
    assert sources == {"pkg/a.py": b"import pkg.b\n"}


# ---- real builds ----

SLOW_TESTS = "import time, unittest\n\nclass Slow(unittest.TestCase):\n" + "".join(
    f"    def test_{n}(self):\n        time.sleep(0.4)\n\n" for n in range(4))
LIBRARY = {
    "pkg/__init__.py": "",
    "pkg/calc.py": "def add(a, b):\n    return a + b\n",
    "pkg/words.py": "def shout(text):\n    return text.upper()\n",
    "tests/__init__.py": "",
    "tests/test_a_slow.py": SLOW_TESTS,
    "tests/test_b_words.py": "import unittest\nfrom pkg.words import shout\n\nclass Words(unittest.TestCase):\n"
                             "    def test_shout(self):\n        self.assertEqual(shout('a'), 'A')\n",
    "tests/test_c_calc.py": "import unittest\nfrom pkg.calc import add\n\nclass Calc(unittest.TestCase):\n"
                            "    def test_add(self):\n        self.assertEqual(add(2, 2), 4)\n",
    ".volt.toml": "[tests]\nstart_dir = \".\"\ntop_level_dir = \".\"\nretries = 0\nnetwork = false\n",
}


def build_of(store: Store, repo: GitRepo, sha: str, branch: str = "main") -> Build:
    build = Build(id=keys.build_id(repo.path.name, sha), repo=repo.path.name, url=str(repo.path), commit=sha,
                  branch=branch, subject="s")
    store.builds.add(build, 1.0)
    result = BuildRun(store, Work(build.id, 1), "runner-1").run()
    assert result["stored"], result
    found = store.records.get_build(build.id)
    assert found is not None
    return found


def log_of(store: Store, build: Build) -> str:
    return store.logs.read(build.id)


@pytest.fixture
def store(conn: redis.Redis, settings: Settings) -> Store:
    """A store whose pre-pass may take half of a suite of a few seconds: with the default 5 %, starting
    the pre-pass's process alone would cost more (see the quick suite's test below)."""
    return Store(conn, Settings(**{**settings.__dict__, "prepass_share": 0.5}))


def outcomes(store: Store, build: Build) -> dict[str, Outcome]:
    return {test.id: test.outcome for test in store.records.get_tests(build.id)}


def test_a_broken_module_is_named_by_the_pre_pass_before_the_suite_runs(store: Store, make_repo) -> None:
    repo = make_repo("lib")
    first = build_of(store, repo, repo.commit(LIBRARY, "a library"))
    assert first.status is Status.PASSED, (first.reason, log_of(store, first))
    assert "no pre-pass: no test times recorded" in log_of(store, first)
    broken = build_of(store, repo, repo.commit({"pkg/calc.py": "def add(a, b):\n    return a - b\n"}, "break add"))
    log = log_of(store, broken)
    assert broken.status is Status.FAILED
    assert broken.first_failure == "tests.test_c_calc.Calc.test_add"
    assert "importing a changed module" in log
    assert log.index("pre-pass: 1 of 1 failed") < log.index("$ python -m unittest discover")
    # the verdict is the whole suite's, in its own order: every test ran once and counts once
    assert outcomes(store, broken) == {**{f"tests.test_a_slow.Slow.test_{n}": Outcome.PASSED for n in range(4)},
                                       "tests.test_b_words.Words.test_shout": Outcome.PASSED,
                                       "tests.test_c_calc.Calc.test_add": Outcome.FAILED}
    assert broken.counts.total == 6 and broken.counts.failed == 1
    # the next build of the branch runs what failed in this one first, though its commit touches no code
    again = build_of(store, repo, repo.commit({"README": "still broken\n"}, "docs"))
    assert "1 failed in the previous build" in log_of(store, again)
    assert again.first_failure == "tests.test_c_calc.Calc.test_add"


def test_the_same_commit_without_the_pre_pass_gives_the_same_results(store: Store, make_repo, conn,
                                                                   settings: Settings) -> None:
    repo = make_repo("same")
    build_of(store, repo, repo.commit(LIBRARY, "a library"))
    sha = repo.commit({"pkg/words.py": "def shout(text):\n    return text\n"}, "break shout")
    with_prepass = build_of(store, repo, sha)
    plain_store = Store(conn, Settings(**{**settings.__dict__, "prepass": False}))
    plain = build_of(plain_store, repo, sha, branch="other")  # another branch: a build of its own
    assert "no pre-pass: turned off on this runner" in log_of(plain_store, plain)
    assert outcomes(store, with_prepass) == outcomes(plain_store, plain)
    assert with_prepass.status is plain.status is Status.FAILED


def test_a_test_that_fails_only_when_run_first_is_shown_order_dependent_and_the_build_passes(
        store: Store, make_repo) -> None:
    repo = make_repo("order")
    files = {**LIBRARY,
             "pkg/state.py": "READY = []\n",
             "tests/test_a_slow.py": SLOW_TESTS + "    def test_prepare(self):\n        import pkg.state\n"
                                                  "        pkg.state.READY.append(1)\n"}
    build_of(store, repo, repo.commit(files, "a library with state"))
    needs_state = ("import unittest\nimport pkg.state\n\nclass Later(unittest.TestCase):\n"
                   "    def test_after_prepare(self):\n        self.assertTrue(pkg.state.READY)\n")
    build = build_of(store, repo, repo.commit({"tests/test_d_later.py": needs_state}, "needs another test first"))
    assert build.status is Status.PASSED  # the suite's own order decides
    assert build.order_dependent == ["tests.test_d_later.Later.test_after_prepare"]
    assert "order-dependent: tests.test_d_later.Later.test_after_prepare" in log_of(store, build)
    assert build.first_failure == "tests.test_d_later.Later.test_after_prepare"  # said at once, all the same
    shown = report.as_dict(build, store.records.get_tests(build.id), [])
    assert shown["order_dependent"] == ["tests.test_d_later.Later.test_after_prepare"]
    assert "order-dependent (1)" in report.as_text(build, store.records.get_tests(build.id), [])


def test_a_rewritten_history_a_corrupt_record_and_vanished_tests_only_shrink_the_pre_pass(
        store: Store, make_repo, conn: redis.Redis) -> None:
    repo = make_repo("shrink")
    first = build_of(store, repo, repo.commit(LIBRARY, "a library"))
    broken = build_of(store, repo, repo.commit({"pkg/calc.py": "def add(a, b):\n    return 0\n"}, "break add"))
    assert broken.status is Status.FAILED
    conn.hset(keys.build_results(first.id), "listed", b"not a valid encoding")  # an older record corrupt
    # history rewritten: a commit with no common ancestor, in which the failing test no longer exists
    repo.git("checkout", "--quiet", "--orphan", "rewritten")
    sha = repo.commit({**LIBRARY, "tests/test_c_calc.py": None}, "history rewritten")
    build = build_of(store, repo, sha)
    log = log_of(store, build)
    assert build.status is Status.PASSED and build.counts.total == 5
    assert "pre-pass without the commit's changes since" in log  # no merge base to compare with
    assert "1 failed in the previous build" in log, log  # the vanished test was still chosen: it loads no more
    assert "pre-pass: 0 test(s) passed" in log
    assert build.first_failure == "" and build.order_dependent == []


PYTEST_LIBRARY = {
    "pkg/__init__.py": "",
    "pkg/calc.py": "def add(a, b):\n    return a + b\n",
    "tests/test_a_slow.py": "import time\nimport pytest\n\n@pytest.mark.parametrize('n', range(4))\n"
                            "def test_slow(n):\n    time.sleep(0.4)\n",
    "tests/test_calc.py": "from pkg.calc import add\n\ndef test_add():\n    assert add(2, 2) == 4\n\n"
                          "class TestMore:\n    def test_zero(self):\n        assert add(0, 0) == 0\n",
    ".volt.toml": "[tests]\nrunner = \"pytest\"\nargs = [\"-q\", \"tests\"]\nretries = 0\nnetwork = false\n"
                  f"setup = [['python', '-m', 'pip', 'install', '-q', 'pytest=={PYTEST_VERSION}']]\n",
}


def test_a_pytest_suite_runs_its_likely_failures_first_by_node_id(store: Store, make_repo) -> None:
    repo = make_repo("pylib")
    first = build_of(store, repo, repo.commit(PYTEST_LIBRARY, "a library"))
    assert first.status is Status.PASSED, first.reason
    timings = store.history.timings(repo.path.name)
    assert 0 < timings.start_s < first.duration_s  # until pytest's session began: the pre-pass pays it again
    broken = build_of(store, repo, repo.commit({"pkg/calc.py": "def add(a, b):\n    return a * b + 1\n"}, "break"))
    log = log_of(store, broken)
    assert "2 importing a changed module" in log
    assert broken.first_failure in ("tests/test_calc.py::test_add", "tests/test_calc.py::TestMore::test_zero")
    assert log.index("pre-pass: 2 of 2 failed") < log.index("$ python -m pytest -q tests")
    assert broken.counts.total == 6 and broken.counts.failed == 2


def test_a_named_test_whose_module_is_gone_is_dropped_and_one_whose_module_fails_to_import_is_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from voltci.runner import collector

    (tmp_path / "suite_kept.py").write_text("import unittest\nclass T(unittest.TestCase):\n"
                                            "    def test_ok(self):\n        pass\n")
    (tmp_path / "suite_broken.py").write_text("from suite_kept import missing_name\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    names = ["suite_kept.T.test_ok", "suite_gone.T.test_x", "suite_broken.T.test_y", "suite_kept.T.test_removed",
             "suite_kept.T.test_ok (i=2)"]
    loaded = collector.test_ids(collector.load_named(names, str(tmp_path), None))
    assert loaded[0] == "suite_kept.T.test_ok"
    assert len(loaded) == 2 and "suite_broken" in loaded[1]  # its import error is the test's to report


def test_collecting_a_file_counts_once_against_the_budget() -> None:
    costs = {"t/test_a.py::one": 0.1, "t/test_a.py::two": 0.1, "t/test_b.py::three": 0.1}
    evidence = Evidence(costs, file_distance={"t/test_a.py": 0, "t/test_b.py": 0},
                        file_of={test_id: test_id.split("::")[0] for test_id in costs},
                        collect_costs={"t/test_a.py": 0.5, "t/test_b.py": 2.0})
    chosen = pick(evidence, budget_s=1.0)
    assert chosen.entries == ["t/test_a.py::one", "t/test_a.py::two"]
    assert abs(chosen.cost_s - 0.7) < 1e-9


def test_a_pull_request_runs_first_what_its_own_change_may_break(store: Store, make_repo) -> None:
    from voltci.models import PullRequest

    repo = make_repo("pulled")
    build_of(store, repo, repo.commit(LIBRARY, "a library"))
    repo.checkout("feature", create=True)
    head = repo.commit({"pkg/calc.py": "def add(a, b):\n    return a - b\n"}, "a change that breaks add")
    repo.checkout("main")
    base = repo.commit({"README": "the base branch moved on\n"}, "docs")
    repo.git("update-ref", "refs/pull/7/head", head)
    pull = Build(id=keys.pull_build_id(repo.path.name, 7, head), repo=repo.path.name, url=str(repo.path),
                 commit=head, branch="main", subject="s", pull_request=PullRequest(7, head, base_branch="main"))
    store.builds.add(pull, 1.0)
    assert BuildRun(store, Work(pull.id, 1), "runner-1").run()["stored"]
    built = store.records.get_build(pull.id)
    assert built is not None and built.pull_request is not None and built.pull_request.base == base
    log = log_of(store, built)
    assert "1 importing a changed module" in log and "pre-pass without" not in log  # its own side of the diff
    assert built.first_failure == "tests.test_c_calc.Calc.test_add" and built.status is Status.FAILED


def test_a_hostile_commit_cannot_turn_the_pre_pass_against_the_runner(store: Store, make_repo, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo("hostile")
    build_of(store, repo, repo.commit(LIBRARY, "a library"))
    marker = tmp_path / "pwned"
    secret = tmp_path / "secret.py"
    secret.write_text("import pkg.calc\n")
    monkeypatch.setattr(commitfiles, "MAX_SOURCES", 50)
    hostile = {
        "pkg/calc.py": "def add(a, b):\n    return a - b\n",  # a real change, so that the graph is read
        f"tests/test_$(touch {marker}).py": "import unittest\nfrom pkg.calc import add\n\n"
                                            "class X(unittest.TestCase):\n    def test_x(self):\n        pass\n",
        "pkg/huge.py": "import pkg.calc; " * 20_000 + "\n",  # a line past every bound
        **{f"pkg/many_{n}.py": "import pkg.calc\n" for n in range(80)},  # more sources than are read
    }
    sha = repo.commit(hostile, "hostile names, sizes and links")
    os.symlink(secret, repo.path / "tests" / "test_link.py")  # a link committed as a test file
    sha = repo.commit({}, "a link")
    build = build_of(store, repo, sha)
    assert not marker.exists()
    assert build.status is Status.FAILED and build.first_failure == "tests.test_c_calc.Calc.test_add"
    assert "pre-pass: " in log_of(store, build)


def test_a_pre_pass_that_runs_past_its_bound_is_stopped_and_the_suite_runs_all_the_same(store: Store,
                                                                                       make_repo) -> None:
    repo = make_repo("slowfirst")
    build_of(store, repo, repo.commit(LIBRARY, "a library"))
    # the first run of this test (the pre-pass's) leaves a mark and hangs; a run that finds the mark passes
    hangs_once = ("import os, time, unittest\nfrom pkg.calc import add\n\nclass Calc(unittest.TestCase):\n"
                  "    def test_add(self):\n        if not os.path.exists('hung-once'):\n"
                  "            open('hung-once', 'w').close()\n            time.sleep(60)\n"
                  "        self.assertEqual(add(2, 2), 4)\n")
    build = build_of(store, repo, repo.commit({"tests/test_c_calc.py": hangs_once}, "a test that hangs once"))
    log = log_of(store, build)
    assert "the pre-pass took longer than its bound" in log
    assert build.status is Status.PASSED and build.counts.total == 6
    assert build.duration_s < 40  # not the minute the pre-pass's test would have taken


def test_a_changed_private_helper_names_its_public_callers() -> None:
    from voltci.runner.prepass import callers_of

    source = (b"def running_max(iterable, maxlen=None):\n    return _windowed_running_max(iter(iterable), maxlen)\n\n"
              b"def _windowed_running_max(iterator, maxlen):\n    yield from iterator\n\n"
              b"class Window:\n    def size(self):\n        return _windowed_running_max(iter(()), 1)\n\n"
              b"def unrelated():\n    return 'running_max_windowed'\n")
    assert callers_of({"_windowed_running_max"}, {"pkg/recipes.py": source}) == {"running_max", "size"}
    assert callers_of({"public_one"}, {"pkg/recipes.py": source}) == set()  # a public name is its tests' own


def test_a_suite_too_quick_to_pay_for_a_second_process_has_no_pre_pass_and_says_why(conn: redis.Redis,
                                                                                    settings: Settings,
                                                                                    make_repo) -> None:
    store = Store(conn, settings)  # the default share, 5 % of a suite of about two seconds
    repo = make_repo("quick")
    # a conftest that takes its time to import: pytest loads it before its session, any process pays it
    slow_start = {**PYTEST_LIBRARY, "conftest.py": "import time\n\ntime.sleep(0.3)  # a heavy import\n"}
    first = build_of(store, repo, repo.commit(slow_start, "a library"))
    assert first.status is Status.PASSED, (first.reason, log_of(store, first))
    timings = store.history.timings(repo.path.name)
    suite_s = sum(timings.tests.values()) + timings.start_s
    assert 0 < timings.start_s < suite_s  # the process's own start, its tests apart
    broken = build_of(store, repo, repo.commit({"pkg/calc.py": "def add(a, b):\n    return a - b\n"}, "break add"))
    log = log_of(store, broken)
    assert "no pre-pass: starting a test process takes about" in log, log[:1500]
    assert "pre-pass:" not in log.replace(
        "no pre-pass:", "")
    assert broken.status is Status.FAILED and broken.first_failure == "tests/test_calc.py::test_add"
    assert broken.counts.total == 6 and broken.counts.failed == 1
