"""Running a tree's tests in a real subprocess: per-test results equal stock unittest's, and the
build's status, timeout, environment and process-group handling."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cluster import alive
from sample_project import FAILING, IMPORT_FAILING, NO_TESTS, PASSING
from unittest_oracle import run_unittest
from voltci.models import Status
from voltci.testrun import Discovery, run_tests, scrubbed_environment


def write_tree(root: Path, *file_sets: dict[str, str]) -> Path:
    tree = root / "tree"
    for files in file_sets:
        for name, text in files.items():
            path = tree / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    (root / "scratch").mkdir(exist_ok=True)
    return tree


def run(tree: Path, timeout: float = 60, **kwargs):
    return run_tests(tree, tree.parent / "scratch", Discovery(), timeout, **kwargs)


def assert_same_as_unittest(tree: Path, outcome) -> None:
    oracle = run_unittest(tree)
    assert {t.id: t.outcome.value for t in outcome.tests} == oracle.outcomes
    assert outcome.counts.total == oracle.tests_run
    assert outcome.counts.failed == oracle.failures
    assert outcome.counts.errors == oracle.errors
    assert outcome.counts.skipped == oracle.skipped


def test_passing_tree_matches_unittest(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, PASSING)
    outcome = run(tree)
    assert outcome.status is Status.PASSED, outcome.reason
    assert_same_as_unittest(tree, outcome)
    ids = {t.id for t in outcome.tests}
    assert {"pkg.maths", "pkg.maths.double"} <= ids  # doctests added by load_tests
    assert outcome.counts.passed == 5


def test_failing_tree_matches_unittest_with_subtests_and_tracebacks(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, PASSING, FAILING)
    outcome = run(tree)
    assert outcome.status is Status.FAILED
    assert_same_as_unittest(tree, outcome)
    by_id = {t.id: t for t in outcome.tests}
    assert "AssertionError: 2 != 3 : arithmetic" in by_id["tests.test_broken.TestBroken.test_assert"].message
    assert "KeyError: 'boom'" in by_id["tests.test_broken.TestBroken.test_raises"].message
    assert 'File "tests/test_broken.py", line 9, in test_raises' in by_id["tests.test_broken.TestBroken.test_raises"].message
    sub = by_id["tests.test_broken.TestBroken.test_subtests (n=3)"]
    assert sub.subtest_of == "tests.test_broken.TestBroken.test_subtests"
    assert by_id["tests.test_broken.TestBroken.test_subtests"].outcome.value == "failed"
    assert "hello from a test" in outcome.log_tail


def test_module_that_does_not_import_is_an_error_build(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, PASSING, IMPORT_FAILING)
    outcome = run(tree)
    assert outcome.status is Status.ERROR
    assert "test_import" in outcome.reason and "import" in outcome.reason
    assert_same_as_unittest(tree, outcome)


def test_tree_without_tests_is_an_error_build(tmp_path: Path) -> None:
    outcome = run(write_tree(tmp_path, NO_TESTS))
    assert outcome.status is Status.ERROR
    assert outcome.reason == "no tests found"


def test_timeout_kills_the_whole_group_and_keeps_finished_tests(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    hang = {
        "tests/__init__.py": "",
        "tests/test_a_quick.py": "import unittest\n\nclass T(unittest.TestCase):\n    def test_quick(self):\n        pass\n",
        "tests/test_b_hang.py": (
            "import os, subprocess, sys, time, unittest\n\nclass T(unittest.TestCase):\n    def test_hang(self):\n"
            "        child = subprocess.Popen(['sleep', '600'])\n"
            "        daemon = subprocess.Popen(['sleep', '601'], start_new_session=True)\n"
            "        group = os.getpgid(0)\n"
            f"        open({str(pid_file)!r}, 'w').write(f'{{child.pid}} {{daemon.pid}} {{group}}')\n"
            "        time.sleep(600)\n"
        ),
    }
    tree = write_tree(tmp_path, hang)
    started = time.monotonic()
    outcome = run(tree, timeout=3)
    assert time.monotonic() - started < 30
    assert outcome.status is Status.TIMEOUT
    assert "time limit" in outcome.reason
    assert [t.id for t in outcome.tests] == ["tests.test_a_quick.T.test_quick"]
    grandchild, daemon, group = map(int, pid_file.read_text().split())
    assert not alive(grandchild), "the test's own child outlived the build"
    assert not alive(daemon), "a child that left the process group outlived the build"
    assert not [pid for pid in _pids() if _pgid(pid) == group and alive(pid)], "the process group outlived the build"


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
    outcome = run(write_tree(tmp_path, probe))
    assert outcome.status is Status.PASSED, [t.message for t in outcome.tests]


def test_scrubbed_environment_keeps_the_rest() -> None:
    env = scrubbed_environment({"PATH": "/bin", "VOLT_QUEUE": "x", "REDIS_URL": "y", "RQ_X": "z", "HOME": "/h"})
    assert env["PATH"] == "/bin" and env["HOME"] == "/h"
    assert not any(k.startswith(("VOLT_", "REDIS", "RQ_")) for k in env)


def test_should_stop_cancels_the_run(tmp_path: Path) -> None:
    hang = {"test_h.py": "import time, unittest\n\nclass T(unittest.TestCase):\n    def test_h(self):\n"
                         "        time.sleep(600)\n"}
    calls = iter(range(10**6))
    outcome = run(write_tree(tmp_path, hang), should_stop=lambda: "cancelled" if next(calls) > 5 else None)
    assert outcome.status is Status.CANCELLED


def test_repeated_ids_are_all_kept(tmp_path: Path) -> None:
    same = {"test_same.py": ("import unittest\n\nclass T(unittest.TestCase):\n    def test_same(self):\n"
                             "        for _ in range(2):\n            with self.subTest(k=1):\n"
                             "                self.fail('x')\n")}
    outcome = run(write_tree(tmp_path, same))
    ids = [t.id for t in outcome.tests]
    assert ids == ["test_same.T.test_same (k=1)", "test_same.T.test_same (k=1) [2]", "test_same.T.test_same"]
    assert outcome.counts.failed == 2
