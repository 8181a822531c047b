"""A build's steps in its tree, with real processes: .volt.toml, environments, setup, a test command
with JUnit results, flaky tests, and every way they go wrong ending with a status and a reason."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest
from support import run_steps, running, tree_with

from voltci.config import Settings
from voltci.logstream import LogPump
from voltci.models import Outcome, Status
from voltci.runner import project
from voltci.runner.testrun import OUTPUT_FILE

pytestmark = pytest.mark.e2e  # every test here starts processes: builds, volt, redis-server

PASSING = {"tests/__init__.py": "", "tests/test_ok.py": (
    "import unittest\n\nclass T(unittest.TestCase):\n    def test_ok(self):\n        self.assertTrue(True)\n")}


def steps(tmp_path: Path, files: dict[str, str], **settings):
    tree = tree_with(tmp_path, files)
    options = {"workspace_dir": str(tmp_path.parent / "ws"), "build_timeout": 120, **settings}
    outcome = run_steps(tree, tmp_path / "scratch", "proj", Settings(**options), lambda: None, "test-run")
    return outcome, (tmp_path / "scratch" / OUTPUT_FILE).read_text(errors="replace")


@pytest.mark.parametrize("toml, fragment", [
    ("[tests]\ntimout = 3\n", "unknown key 'tests.timout'"),
    ("colour = 'red'\n", "unknown key 'colour'"),
    ("[tests]\ntimeout = 'soon'\n", "'tests.timeout' must be a positive number"),
    ("[tests]\nsetup = 'pip install .'\n", "'tests.setup' must be a list of commands"),
    ("[tests]\nsetup = [['python', 3]]\n", "'tests.setup[0]' must be a command as a list of strings"),
    ("[tests]\ncommand = ['pytest']\n", "'tests.command' needs 'tests.junit'"),
    ("[tests]\njunit = 'r.xml'\n", "'tests.junit' needs 'tests.command'"),
    ("[tests]\ncommand = ['x']\njunit = '../r.xml'\n", "must be a path inside the repository"),
    ("[tests]\nretries = 9\n", "'tests.retries' must be a whole number from 0 to 5"),
    ("python = 3.11\n", "'python' must be a version like"),
    ("[tests\n", "not valid TOML"),
])
def test_a_broken_volt_toml_is_an_error_that_names_the_key(tmp_path, toml, fragment) -> None:
    outcome, _ = steps(tmp_path, {**PASSING, ".volt.toml": toml})
    assert outcome.status is Status.ERROR and fragment in outcome.reason, outcome.reason


def test_discovery_settings_and_a_reused_environment(tmp_path) -> None:
    files = {".volt.toml": "[tests]\nstart_dir = 'checks'\npattern = 'check_*.py'\n",
             "checks/check_one.py": PASSING["tests/test_ok.py"], "tests/test_never.py": "raise SystemExit(1)\n"}
    outcome, log = steps(tmp_path / "a", files)
    assert outcome.status is Status.PASSED and [t.id for t in outcome.tests] == ["check_one.T.test_ok"]
    assert "[volt: made the environment" in log
    again, log = steps(tmp_path / "b", files)
    assert again.status is Status.PASSED and "[volt: reusing the environment" in log
    changed, log = steps(tmp_path / "c", {**files, "requirements.txt": "# nothing\n"})
    assert changed.status is Status.PASSED and "[volt: made the environment" in log


def test_setup_runs_in_the_environment_and_a_failing_one_ends_the_build(tmp_path) -> None:
    probe = {"tests/test_env.py": (
        "import os, sys, unittest\n\nclass T(unittest.TestCase):\n    def test_in_venv(self):\n"
        "        self.assertEqual(os.path.realpath(sys.prefix), os.path.realpath(os.environ['VIRTUAL_ENV']))\n"
        "        self.assertTrue(os.path.exists('made-by-setup'))\n")}
    ok, log = steps(tmp_path / "a", {**PASSING, **probe, ".volt.toml": (
        "[tests]\nsetup = [['python', '-c', \"open('made-by-setup', 'w')\"]]\n")})
    assert ok.status is Status.PASSED, (ok.reason, log)
    failing, log = steps(tmp_path / "b", {**PASSING, ".volt.toml": (
        "[tests]\nsetup = [['python', '-c', 'print(\"installing\"); raise SystemExit(3)']]\n")})
    assert failing.status is Status.ERROR
    assert failing.reason == ("setup step 1 failed with exit status 3: "
                              "python -c 'print(\"installing\"); raise SystemExit(3)'")
    assert "installing" in failing.log_tail
    missing, _ = steps(tmp_path / "c", {**PASSING, ".volt.toml": "[tests]\nsetup = [['no-such-tool', 'x']]\n"})
    assert missing.reason == "setup step 1 could not start: command not found: 'no-such-tool'"


def test_an_unknown_python_is_an_error(tmp_path) -> None:
    outcome, _ = steps(tmp_path, {**PASSING, ".volt.toml": "python = '3.99'\n"})
    assert outcome.status is Status.ERROR and "python 3.99 is not on this runner host" in outcome.reason


JUNIT_RUNNER = """\
import sys
cases = [
    '<testcase classname="suite.A" name="test_ok" time="0.5"/>',
    '<testcase classname="suite.A" name="test_bad" time="0.1">'
    '<failure message="boom">Traceback\\nboom</failure></testcase>',
    '<testcase classname="suite.B" name="test_skip"><skipped message="later"/></testcase>',
]
mode = sys.argv[1]
if mode == "fail":
    body = "".join(cases)
elif mode == "pass":
    body = cases[0] + cases[2]
if mode == "garbage":
    open("out/report.xml", "w").write("<testsuite><testcase")
elif mode == "html":
    open("out/report.xml", "w").write("<html></html>")
elif mode != "none":
    open("out/report.xml", "w").write(
        f'<?xml version="1.0"?><testsuites><testsuite name="s">{body}</testsuite></testsuites>')
sys.exit(1 if mode == "fail" else 0)
"""


@pytest.mark.parametrize("mode, status, reason", [
    ("fail", Status.FAILED, ""),
    ("pass", Status.PASSED, ""),
    ("none", Status.ERROR,
     "the test command exited with status 0 and left no usable results: no JUnit XML file at report.xml"),
    ("garbage", Status.ERROR, "report.xml is not well-formed XML"),
    ("html", Status.ERROR, "report.xml is not JUnit XML (its root element is <html>)"),
])
def test_a_test_command_with_junit_results(tmp_path, mode, status, reason) -> None:
    files = {"run_tests.py": JUNIT_RUNNER, "out/.keep": "", ".volt.toml": (
        f"[tests]\ncommand = ['python', 'run_tests.py', '{mode}']\njunit = 'out/report.xml'\n")}
    outcome, _ = steps(tmp_path, files)
    assert outcome.status is status and reason in outcome.reason, outcome.reason
    if mode == "fail":
        assert [(t.id, t.outcome) for t in outcome.tests] == [
            ("suite.A.test_ok", Outcome.PASSED), ("suite.A.test_bad", Outcome.FAILED),
            ("suite.B.test_skip", Outcome.SKIPPED)]
        assert outcome.tests[1].message == "Traceback\nboom" and outcome.counts.failed == 1


def test_a_test_command_that_does_not_exist(tmp_path) -> None:
    outcome, _ = steps(tmp_path, {".volt.toml": "[tests]\ncommand = ['no-such-runner']\njunit = 'r.xml'\n"})
    assert outcome.status is Status.ERROR
    assert outcome.reason == "the test command could not start: command not found: 'no-such-runner'"


FLAKY = {"tests/__init__.py": "", "tests/test_flaky.py": """\
import os, unittest

class T(unittest.TestCase):
    def test_flaky(self):
        first = not os.path.exists("ran-once")
        open("ran-once", "w").close()
        self.assertFalse(first, "fails the first time only")

    def test_broken(self):
        self.assertEqual(1, 2)

    def test_fine(self):
        pass
"""}


def test_a_test_that_passes_when_run_again_is_flaky(tmp_path) -> None:
    outcome, log = steps(tmp_path / "a", FLAKY)
    outcomes = {t.id: t.outcome for t in outcome.tests}
    assert outcomes == {"tests.test_flaky.T.test_broken": Outcome.FAILED,
                        "tests.test_flaky.T.test_fine": Outcome.PASSED,
                        "tests.test_flaky.T.test_flaky": Outcome.FLAKY}
    assert outcome.status is Status.FAILED  # test_broken fails every time
    assert (outcome.counts.passed, outcome.counts.failed, outcome.counts.flaky) == (2, 1, 1)
    assert "running 2 failed test(s) again on their own (retry 1)" in log
    only_flaky = {**FLAKY,
                  "tests/test_flaky.py": FLAKY["tests/test_flaky.py"].replace("self.assertEqual(1, 2)", "pass")}
    passed, _ = steps(tmp_path / "b", only_flaky)
    assert passed.status is Status.PASSED and passed.counts.flaky == 1
    off, _ = steps(tmp_path / "c", only_flaky, retries=0)
    assert off.status is Status.FAILED and off.counts.flaky == 0


def test_100_mb_of_output_keeps_memory_bounded(fake, tmp_path) -> None:
    loud = {"tests/__init__.py": "", "tests/test_loud.py": (
        "import sys, unittest\n\nclass T(unittest.TestCase):\n    def test_loud(self):\n"
        "        for _ in range(100):\n            sys.stdout.write('x' * (1024 * 1024))\n")}
    tree = tree_with(tmp_path, loud)
    scratch = tmp_path / "scratch"
    store = running(fake, "b")
    pump = LogPump(store, "b", 1, scratch / OUTPUT_FILE, cap_bytes=1024 * 1024)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def tick():
        pump.pump()
        return None
    outcome = run_steps(tree, scratch, "proj", Settings(workspace_dir=str(tmp_path / "ws"), build_timeout=120),
                        tick, "loud")
    pump.finish()
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert outcome.status is Status.PASSED, outcome.reason
    assert (scratch / OUTPUT_FILE).stat().st_size > 100 * 1024 * 1024
    stored = store.logs.read("b")
    assert len(stored) < 1024 * 1024 + 1000 and "more bytes of output were not kept" in stored
    assert grown_mib < 50, f"the runner grew by {grown_mib:.0f} MiB"


def test_project_config_defaults_without_a_file(tmp_path) -> None:
    assert project.load(tmp_path) == project.ProjectConfig()
