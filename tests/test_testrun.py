"""Running a tree's tests in a real subprocess: per-test results equal stock unittest's, and the
build's status, timeout, environment and process-group handling."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cluster import marked_processes
from sample_project import FAILING, IMPORT_FAILING, NO_TESTS, PASSING
from support import alive, tree_with, wait_until
from unittest_oracle import run_unittest

from voltci.models import Status
from voltci.runner.detect import detect
from voltci.runner.limits import Limits
from voltci.runner.procs import Budget
from voltci.runner.sandbox import Sandbox, build_environment
from voltci.runner.suites import Discovery
from voltci.runner.testrun import OUTPUT_FILE, run_tests

pytestmark = pytest.mark.e2e  # every test here starts processes: builds, volt, redis-server


def run(tree: Path, timeout: float = 60, **kwargs):
    scratch = tree.parent / "scratch"
    box = Sandbox.for_build(tree, scratch, Path(sys.executable), Limits(4 << 30, 1024)).with_network(False)
    return run_tests(tree, box, Discovery(), Budget(timeout), scratch / OUTPUT_FILE, **kwargs)


def assert_same_as_unittest(tree: Path, outcome) -> None:
    oracle = run_unittest(tree)
    assert {t.id: t.outcome.value for t in outcome.tests} == oracle.outcomes
    assert outcome.counts.total == oracle.tests_run
    assert outcome.counts.failed == oracle.failures
    assert outcome.counts.errors == oracle.errors
    assert outcome.counts.skipped == oracle.skipped


def test_passing_tree_matches_unittest(tmp_path: Path) -> None:
    tree = tree_with(tmp_path, PASSING)
    outcome = run(tree)
    assert outcome.status is Status.PASSED, outcome.reason
    assert_same_as_unittest(tree, outcome)
    ids = {t.id for t in outcome.tests}
    assert {"pkg.maths", "pkg.maths.double"} <= ids  # doctests added by load_tests
    assert outcome.counts.passed == 5


def test_failing_tree_matches_unittest_with_subtests_and_tracebacks(tmp_path: Path) -> None:
    tree = tree_with(tmp_path, PASSING, FAILING)
    outcome = run(tree)
    assert outcome.status is Status.FAILED
    assert_same_as_unittest(tree, outcome)
    by_id = {t.id: t for t in outcome.tests}
    assert "AssertionError: 2 != 3 : arithmetic" in by_id["tests.test_broken.TestBroken.test_assert"].message
    assert "KeyError: 'boom'" in by_id["tests.test_broken.TestBroken.test_raises"].message
    raises = by_id["tests.test_broken.TestBroken.test_raises"].message
    assert 'File "tests/test_broken.py", line 9, in test_raises' in raises
    sub = by_id["tests.test_broken.TestBroken.test_subtests (n=3)"]
    assert sub.subtest_of == "tests.test_broken.TestBroken.test_subtests"
    assert by_id["tests.test_broken.TestBroken.test_subtests"].outcome.value == "failed"
    assert "hello from a test" in outcome.log_tail


SKIPPING_SUBTESTS = {
    "tests/__init__.py": "",
    "tests/test_sub.py": (
        "import unittest\n\nclass T(unittest.TestCase):\n"
        "    def test_some_skip(self):\n        for n in range(3):\n            with self.subTest(n=n):\n"
        "                if n:\n                    self.skipTest(f'not {n}')\n"
        "    def test_skip_and_fail(self):\n        for n in range(2):\n            with self.subTest(n=n):\n"
        "                if n:\n                    self.skipTest('no')\n                self.assertEqual(n, 1)\n"
        "    def test_plain(self):\n        pass\n"),
}


def test_subtests_that_skip_leave_their_test_passed_as_unittest_counts_it(tmp_path: Path) -> None:
    """unittest's summary (`Ran 3 tests ... FAILED (failures=1, skipped=3)`): a test whose subtests only
    skipped ran and passed; each skipped subtest is listed beside its test and counted skipped."""
    tree = tree_with(tmp_path, SKIPPING_SUBTESTS)
    outcome = run(tree)
    assert outcome.status is Status.FAILED, outcome.reason
    assert_same_as_unittest(tree, outcome)
    by_id = {t.id: t for t in outcome.tests}
    assert by_id["tests.test_sub.T.test_some_skip"].outcome.value == "passed"
    skipped = by_id["tests.test_sub.T.test_some_skip (n=2)"]
    assert (skipped.outcome.value, skipped.subtest_of, skipped.message) == \
        ("skipped", "tests.test_sub.T.test_some_skip", "not 2")
    assert by_id["tests.test_sub.T.test_skip_and_fail"].outcome.value == "failed"
    counts = outcome.counts
    assert (counts.total, counts.passed, counts.failed, counts.skipped) == (3, 2, 1, 3)


LOAD_TESTS_ERA = {
    "setup.py": "from setuptools import setup\nsetup(package_dir={'': 'src'}, test_suite='sample.tests.test_suite')\n",
    "src/sample/__init__.py": 'def double(x):\n    """\n    >>> double(2)\n    4\n    """\n    return 2 * x\n',
    "src/sample/tests/__init__.py": (
        "import unittest\nfrom sample.tests import test_a\n\n"
        "def test_suite():\n    return unittest.TestSuite([test_a.test_suite()])\n"),
    "src/sample/tests/test_a.py": (
        "import doctest, unittest\nimport sample\n\n"
        "class A(unittest.TestCase):\n    def test_x(self):\n        pass\n\n"
        "class NotLoaded(unittest.TestCase):\n    def test_left_out(self):\n        pass\n\n"
        "def test_suite():\n    return unittest.TestSuite([unittest.TestLoader().loadTestsFromTestCase(A),\n"
        "                               doctest.DocTestSuite(sample)])\n\n"
        "def load_tests(loader, tests, pattern):\n    return test_suite()\n"),
}


def test_a_setup_py_test_suite_runs_as_setup_py_test_ran_it(tmp_path: Path) -> None:
    """Discovery of the package setup.py's test_suite names: each module's load_tests decides, as the
    suite `setup.py test` loaded (unittest's own loader, by name) had it."""
    tree = tree_with(tmp_path, LOAD_TESTS_ERA)
    plan = detect(tree)
    suite = Discovery(plan.start_dir, plan.pattern, plan.top_level_dir)
    scratch = tree.parent / "scratch"
    box = Sandbox.for_build(tree, scratch, Path(sys.executable), Limits(4 << 30, 1024)).with_network(False)
    outcome = run_tests(tree, box, suite, Budget(60), scratch / OUTPUT_FILE)
    assert outcome.status is Status.PASSED, outcome.reason
    by_name = subprocess.run([sys.executable, "-m", "unittest", "-v", "sample.tests.test_suite"], cwd=tree,
                             env={**os.environ, "PYTHONPATH": "src"}, capture_output=True, text=True, timeout=60)
    assert "Ran 2 tests" in by_name.stderr, by_name.stderr
    assert sorted(t.id for t in outcome.tests) == ["sample.double", "sample.tests.test_a.A.test_x"]


def test_module_that_does_not_import_is_an_error_build(tmp_path: Path) -> None:
    tree = tree_with(tmp_path, PASSING, IMPORT_FAILING)
    outcome = run(tree)
    assert outcome.status is Status.ERROR
    assert "test_import" in outcome.reason and "import" in outcome.reason
    assert_same_as_unittest(tree, outcome)


def test_tree_without_tests_is_an_error_build(tmp_path: Path) -> None:
    outcome = run(tree_with(tmp_path, NO_TESTS))
    assert outcome.status is Status.ERROR
    assert outcome.reason == "no tests found"


def test_timeout_kills_the_whole_group_and_keeps_finished_tests(tmp_path: Path) -> None:
    hang = {
        "tests/__init__.py": "",
        "tests/test_a_quick.py": ("import unittest\n\nclass T(unittest.TestCase):\n"
                                  "    def test_quick(self):\n        pass\n"),
        "tests/test_b_hang.py": (
            "import os, subprocess, sys, time, unittest\n\nclass T(unittest.TestCase):\n    def test_hang(self):\n"
            "        child = subprocess.Popen(['sleep', '600'])\n"
            "        daemon = subprocess.Popen(['sleep', '601'], start_new_session=True)\n"
            "        time.sleep(600)\n"
        ),
    }
    tree = tree_with(tmp_path, hang)
    run_id = f"hang-{os.getpid()}-{tmp_path.name}"
    seen: list[int] = []

    def watch() -> None:  # the run's processes, as the host sees them, while it hangs
        wait_until(lambda: len(sleepers(marked_processes(run_id))) == 2, "the hanging test's children", timeout=30)
        seen.extend(marked_processes(run_id))

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    outcome = run(tree, timeout=3, run_id=run_id)
    watcher.join()
    assert time.monotonic() - started < 30
    assert outcome.status is Status.TIMEOUT
    assert "time limit" in outcome.reason
    assert [t.id for t in outcome.tests] == ["tests.test_a_quick.T.test_quick"]
    assert len(seen) >= 4, "bwrap, the test process and the two sleeps"
    groups = {_pgid(pid) for pid in seen} - {-1}
    assert not [pid for pid in seen if alive(pid)], "a process of the build outlived it (the daemon included)"
    assert not [pid for pid in _pids() if _pgid(pid) in groups and alive(pid)], "a process group outlived the build"


def sleepers(processes: dict[int, str] | list[int]) -> list[int]:
    """The `sleep` processes among `processes`: the hanging test's child and the daemon it started."""
    found = []
    for pid in processes:
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == b"sleep":
                found.append(pid)
        except OSError:
            continue
    return found


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return -1


def test_tests_see_no_volt_or_redis_settings_and_no_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOLT_REDIS_URL", "redis://:secret@127.0.0.1:1/0")
    monkeypatch.setenv("REDIS_PASSWORD", "secret")
    probe = {
        "test_env.py": (
            "import os, sys, unittest\n\nclass T(unittest.TestCase):\n"
            "    def test_env(self):\n"
            "        leaked = [k for k in os.environ if k.startswith(('VOLT_', 'REDIS'))]\n"
            "        self.assertEqual(leaked, [])\n"
            "    def test_stdin(self):\n        self.assertEqual(sys.stdin.read(), '')\n"
        ),
    }
    outcome = run(tree_with(tmp_path, probe))
    assert outcome.status is Status.PASSED, [t.message for t in outcome.tests]


def test_build_environment_is_an_allowlist() -> None:
    runner = {"PATH": "/home/me/bin:/bin", "VOLT_QUEUE": "x", "REDIS_URL": "y", "RQ_X": "z", "HOME": "/home/me",
              "AWS_SECRET_ACCESS_KEY": "k", "SSH_AUTH_SOCK": "/run/agent", "LANG": "de_DE.UTF-8", "LC_TIME": "C",
              "https_proxy": "http://proxy:3128", "PIP_INDEX_URL": "https://pypi.example/simple"}
    env = build_environment(Path("/b/home"), Path("/tmp"), Path("/b/venv"), runner_environ=runner)
    assert env == {"LANG": "de_DE.UTF-8", "LC_TIME": "C", "https_proxy": "http://proxy:3128",
                   "PIP_INDEX_URL": "https://pypi.example/simple", "HOME": "/b/home", "TMPDIR": "/tmp",
                   "PYTHONUNBUFFERED": "1", "VIRTUAL_ENV": "/b/venv",
                   "PATH": "/b/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


def test_should_stop_cancels_the_run(tmp_path: Path) -> None:
    hang = {"test_h.py": "import time, unittest\n\nclass T(unittest.TestCase):\n    def test_h(self):\n"
                         "        time.sleep(600)\n"}
    calls = iter(range(10**6))
    outcome = run(tree_with(tmp_path, hang), should_stop=lambda: "cancelled" if next(calls) > 5 else None)
    assert outcome.status is Status.CANCELLED


def test_repeated_ids_are_all_kept(tmp_path: Path) -> None:
    same = {"test_same.py": ("import unittest\n\nclass T(unittest.TestCase):\n    def test_same(self):\n"
                             "        for _ in range(2):\n            with self.subTest(k=1):\n"
                             "                self.fail('x')\n")}
    outcome = run(tree_with(tmp_path, same))
    ids = [t.id for t in outcome.tests]
    assert ids == ["test_same.T.test_same (k=1)", "test_same.T.test_same (k=1) [2]", "test_same.T.test_same"]
    assert outcome.counts.failed == 2
