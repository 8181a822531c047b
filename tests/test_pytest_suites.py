"""pytest suites run natively, in the build's sandbox: per-test results as pytest's own summary counts
them (checked against pytest's `-rA` report of the same tree), collection errors, flaky re-runs by
node id, shards chosen after pytest's own collection, and pytest refusing its arguments."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from support import PYTEST_VERSION, run_steps, write_tree

from voltci.config import Settings
from voltci.models import Outcome, Status
from voltci.runner import pytest_collector
from voltci.runner.testrun import OUTPUT_FILE

pytestmark = pytest.mark.e2e  # every test here starts processes: builds, volt, redis-server

SETUP = f"setup = [['python', '-m', 'pip', 'install', '-q', 'pytest=={PYTEST_VERSION}']]\n"

SUITE = {
    "pytest.ini": '[pytest]\naddopts = --doctest-modules -m "not slow"\nmarkers =\n    slow: slow\n',
    "tests/test_kinds.py": """\
        import pytest

        def test_pass():
            pass

        def test_fail():
            assert 1 == 2

        @pytest.mark.skip(reason="not today")
        def test_skip():
            pass

        @pytest.mark.xfail(reason="known")
        def test_xfail():
            assert 0

        @pytest.mark.xfail(reason="fixed?")
        def test_xpass():
            pass

        @pytest.mark.xfail(strict=True, reason="must fail")
        def test_xpass_strict():
            pass

        @pytest.fixture
        def broken():
            raise RuntimeError("setup boom")

        def test_setup_error(broken):
            pass

        @pytest.fixture
        def bad_teardown():
            yield
            raise RuntimeError("teardown boom")

        def test_teardown_error(bad_teardown):
            pass

        @pytest.mark.parametrize("n", [1, 2, "a b"])
        def test_param(n):
            assert n != 2

        @pytest.mark.slow
        def test_deselected_by_the_config():
            pass

        def double(x):
            '''
            >>> double(2)
            4
            '''
            return 2 * x
        """,
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """One workspace dir for the module: the environment with pytest is made once and reused."""
    return tmp_path_factory.mktemp("pytest-ws")


def build(workspace: Path, where: Path, files: dict[str, str], toml: str = "", **settings):
    tree, scratch = where / "tree", where / "scratch"
    write_tree(tree, {**files, ".volt.toml": f"[tests]\nrunner = 'pytest'\n{SETUP}{toml}"})
    scratch.mkdir(parents=True)
    options = {"workspace_dir": str(workspace), "build_timeout": 300, **settings}
    outcome = run_steps(tree, scratch, "pyproj", Settings(**options), lambda: None, "pytest-run")
    return outcome, (scratch / OUTPUT_FILE).read_text(errors="replace"), tree


def pytest_says(tree: Path, python: Path) -> dict[str, str]:
    """node id -> pytest's own word for it (PASSED, FAILED, ERROR, XFAIL, XPASS), from `-rA`."""
    shown = subprocess.run([str(python), "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider"], cwd=tree,
                           capture_output=True, text=True, timeout=300).stdout
    words: dict[str, str] = {}
    for line in shown.splitlines():
        match = re.fullmatch(r"(PASSED|FAILED|ERROR|XFAIL|XPASS) (.+?)(?: - .*)?", line)
        if match:
            words[match.group(2)] = words.get(match.group(2), "") + match.group(1)
    return words


def environment_python(workspace: Path) -> Path:
    (python,) = workspace.glob("*/envs/pyproj/*/bin/python")
    return python


WORD = {"PASSED": Outcome.PASSED, "FAILED": Outcome.FAILED, "ERROR": Outcome.ERROR, "XFAIL": Outcome.SKIPPED,
        "XPASS": Outcome.PASSED}


def test_outcomes_are_pytests_own(workspace, tmp_path) -> None:
    outcome, log, tree = build(workspace, tmp_path, SUITE, "retries = 0\n")
    assert outcome.status is Status.FAILED, (outcome.reason, log[-3000:])
    said = pytest_says(tree, environment_python(workspace))
    by_id = {t.id: t for t in outcome.tests}
    for node, word in said.items():
        if word == "PASSEDERROR" or word == "ERRORPASSED":  # passed, then its teardown failed
            assert by_id[node].outcome is Outcome.PASSED
            assert by_id[f"{node} [teardown]"].outcome is Outcome.ERROR
        else:
            assert by_id[node].outcome is WORD[word], (node, word)
    assert by_id["tests/test_kinds.py::test_skip"].outcome is Outcome.SKIPPED
    assert by_id["tests/test_kinds.py::test_skip"].message == "not today"
    assert by_id["tests/test_kinds.py::test_xfail"].message == "xfail: known"
    assert "tests/test_kinds.py::test_kinds.double" in by_id  # the doctest the config collects
    assert "tests/test_kinds.py::test_param[a b]" in by_id
    assert not [t for t in by_id if "deselected" in t]
    # pytest: 3 failed, 5 passed, 1 skipped, 1 deselected, 1 xfailed, 1 xpassed, 2 errors; Volt counts
    # an xpass as passed and an xfail as skipped
    counts = outcome.counts
    assert (counts.failed, counts.passed, counts.skipped, counts.errors) == (3, 6, 2, 2), counts
    assert "AssertionError" in by_id["tests/test_kinds.py::test_fail"].message or \
        "assert 1 == 2" in by_id["tests/test_kinds.py::test_fail"].message
    assert "$ python -m pytest" in log


def test_a_module_that_does_not_collect_is_an_error_naming_it(workspace, tmp_path) -> None:
    files = {"tests/test_ok.py": "def test_ok():\n    pass\n",
             "tests/test_broken.py": "import no_such_module\n\ndef test_never():\n    pass\n"}
    outcome, _, _ = build(workspace, tmp_path, files)
    assert outcome.status is Status.ERROR
    assert outcome.reason.startswith("collecting the tests failed in tests/test_broken.py: ")
    assert "No module named 'no_such_module'" in outcome.reason


def test_a_module_skipped_at_collection_is_one_skipped_test_as_pytests_junit_names_it(workspace, tmp_path) -> None:
    files = {"tests/test_ok.py": "def test_ok():\n    pass\n",
             "tests/test_optional.py": ("import pytest\n\nyaml = pytest.importorskip('no_such_module_here')\n\n"
                                        "def test_never():\n    pass\n"),
             "tests/test_marked.py": ("import pytest\n\npytest.skip('not on this host', allow_module_level=True)\n")}
    outcome, log, tree = build(workspace, tmp_path, files)
    assert outcome.status is Status.PASSED, outcome.reason
    by_id = {t.id: t for t in outcome.tests}
    assert by_id["tests/test_optional.py"].outcome is Outcome.SKIPPED
    assert "no_such_module_here" in by_id["tests/test_optional.py"].message
    assert by_id["tests/test_marked.py"].message == "not on this host"
    assert (outcome.counts.total, outcome.counts.skipped) == (3, 2)
    junit = tree / "junit.xml"
    python = Path(re.search(r"the environment (\S+)\]", log).group(1)) / "bin" / "python"
    subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"], cwd=tree,
                   capture_output=True, timeout=300)
    import xml.etree.ElementTree as ET
    named = {(case.get("classname"), case.get("name"), bool(case.find("skipped") is not None))
             for case in ET.parse(junit).getroot().iter("testcase")}
    assert named == {("tests.test_ok", "test_ok", False), ("", "tests.test_optional", True),
                     ("", "tests.test_marked", True)}


def test_failed_tests_run_again_by_node_id_and_flaky_ones_pass(workspace, tmp_path) -> None:
    files = {"tests/test_flaky.py": """\
        import os, pytest

        @pytest.mark.parametrize("n", [1, 2])
        def test_first_time_fails(n):
            mark = f"/tmp/ran-{n}"
            if not os.path.exists(mark):
                open(mark, "w").close()
                assert False, "first run"

        def test_always_fails():
            assert False
        """}
    outcome, log, _ = build(workspace, tmp_path, files, "retries = 1\n")
    by_id = {t.id: t.outcome for t in outcome.tests}
    assert by_id == {"tests/test_flaky.py::test_first_time_fails[1]": Outcome.FLAKY,
                     "tests/test_flaky.py::test_first_time_fails[2]": Outcome.FLAKY,
                     "tests/test_flaky.py::test_always_fails": Outcome.FAILED}
    assert outcome.status is Status.FAILED and outcome.counts.flaky == 2
    assert "running 3 failed test(s) again on their own" in log


def test_a_run_records_what_each_test_and_each_files_collection_cost(workspace, tmp_path) -> None:
    """The next split is balanced on these: a test's cost includes what pytest did around it (here a
    hook's 0.2 s before each test of test_hooked.py), a file's collection what importing it took."""
    files = {"tests/test_slow_import.py": "import time\ntime.sleep(0.3)\n\ndef test_a():\n    pass\n",
             "tests/test_hooked.py": "def test_b():\n    pass\n\ndef test_c():\n    pass\n",
             "tests/conftest.py": ("import time\n\ndef pytest_runtest_logstart(nodeid, location):\n"
                                   "    if 'hooked' in nodeid:\n        time.sleep(0.2)\n")}
    outcome, _, _ = build(workspace, tmp_path, files)
    assert outcome.status is Status.PASSED and outcome.counts.total == 3
    timings = outcome.timings
    assert set(timings.tests) == {t.id for t in outcome.tests}
    durations = {t.id: t.duration_s for t in outcome.tests}
    for hooked in ("tests/test_hooked.py::test_b", "tests/test_hooked.py::test_c"):
        assert timings.tests[hooked] >= durations[hooked] + 0.2
    assert all(timings.tests[t] >= durations[t] for t in durations)
    assert timings.files["tests/test_slow_import.py"] >= 0.3 > timings.files["tests/test_hooked.py"]


def collect(tree: Path, python: Path, *selection: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """node id -> outcome, as pytest_collector.py writes them for `selection` (its options), run by hand."""
    results = tree / "results.jsonl"
    subprocess.run([str(python), str(Path(pytest_collector.__file__)), "--out", str(results), *selection, "--",
                    "-q", "-p", "no:cacheprovider"], cwd=tree, capture_output=True, timeout=300,
                   env={**os.environ, **(env or {})})
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert not lines[-1]["summary"]["collect_errors"], lines[-1]
    return {line["id"]: line["outcome"] for line in lines if "id" in line}


def test_a_shard_runs_whole_files_and_the_rest_never_collects_them(workspace, tmp_path) -> None:
    """A split plans a module it does not cut as its file: the shard given it runs every test in it (new
    ones too), the shard that runs the rest does not even import it."""
    files = {"tests/test_whole.py": "def test_a():\n    pass\n\ndef test_new_since_the_plan():\n    pass\n",
             "tests/test_cut.py": "def test_x():\n    pass\n\ndef test_y():\n    pass\n",
             "tests/test_rest.py": "def test_r():\n    pass\n"}
    outcome, log, tree = build(workspace, tmp_path, files)
    assert outcome.status is Status.PASSED and outcome.counts.total == 5
    (tree / "tests" / "test_whole.py").write_text(
        "import os\nif os.environ.get('POISON'):\n    raise SystemExit('collected')\n" + files["tests/test_whole.py"])
    python = Path(re.search(r"the environment (\S+)\]", log).group(1)) / "bin" / "python"
    plan = tree / "plan.txt"
    plan.write_text("tests/test_whole.py\ntests/test_cut.py::test_x\n")
    assert collect(tree, python, "--only-file", str(plan)) == {
        "tests/test_whole.py::test_a": "passed", "tests/test_whole.py::test_new_since_the_plan": "passed",
        "tests/test_cut.py::test_x": "passed"}
    rest = collect(tree, python, "--except-file", str(plan), env={"POISON": "1"})
    assert rest == {"tests/test_cut.py::test_y": "passed", "tests/test_rest.py::test_r": "passed"}


MIXED = """import os


def pytest_generate_tests(metafunc):
    name = metafunc.function.__name__
    if os.environ.get("POISON") == name:
        raise SystemExit(f"{name} was expanded")
    if name in ("test_big", "test_other"):
        metafunc.parametrize("x", range(3))


def test_big(x):
    pass


def test_other(x):
    pass


class TestPlain:
    def test_plain(self):
        pass
"""


def test_a_shard_expands_only_the_functions_of_a_cut_module_it_runs(workspace, tmp_path) -> None:
    """Part of a cut module is planned as whole functions (every parametrization, no `[`) and single
    ids: the shard given them never expands the module's other functions, and the shard that runs
    the rest never expands those."""
    outcome, log, tree = build(workspace, tmp_path, {"tests/test_mixed.py": MIXED})
    assert outcome.status is Status.PASSED and outcome.counts.total == 7
    python = Path(re.search(r"the environment (\S+)\]", log).group(1)) / "bin" / "python"
    plan = tree / "plan.txt"
    plan.write_text("tests/test_mixed.py::test_other\ntests/test_mixed.py::TestPlain::test_plain\n")
    assert collect(tree, python, "--only-file", str(plan), env={"POISON": "test_big"}) == {
        **{f"tests/test_mixed.py::test_other[{n}]": "passed" for n in range(3)},
        "tests/test_mixed.py::TestPlain::test_plain": "passed"}
    assert collect(tree, python, "--except-file", str(plan), env={"POISON": "test_other"}) == {
        f"tests/test_mixed.py::test_big[{n}]": "passed" for n in range(3)}


def test_no_tests_and_bad_arguments_are_errors(workspace, tmp_path) -> None:
    outcome, _, _ = build(workspace, tmp_path / "a", {"tests/helpers.py": "X = 1\n"})
    assert outcome.status is Status.ERROR and outcome.reason == "no tests found"
    outcome, _, _ = build(workspace, tmp_path / "b", {"tests/test_ok.py": "def test_ok():\n    pass\n"},
                          "args = ['--no-such-option']\n")
    assert outcome.status is Status.ERROR
    assert outcome.reason == "pytest refused its command line (exit status 4); see the log"


def test_a_project_without_volt_toml_is_set_up_and_run_as_its_maintainers_do(tmp_path) -> None:
    """No .volt.toml: the test dependency group is installed, then the project (a src layout) itself,
    and pytest runs with the project's own configuration; the log says what was found and why."""
    files = {
        "pyproject.toml": f"""\
            [build-system]
            requires = ["setuptools>=68"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "shapes"
            version = "1.0"

            [dependency-groups]
            test = ["pytest=={PYTEST_VERSION}"]

            [tool.pytest.ini_options]
            testpaths = ["tests"]
            addopts = "-ra"
            """,
        "src/shapes/__init__.py": "def area(w, h):\n    return w * h\n",
        "tests/test_area.py": "from shapes import area\n\ndef test_area():\n    assert area(2, 3) == 6\n",
    }
    tree, scratch = tmp_path / "tree", tmp_path / "scratch"
    write_tree(tree, files)
    scratch.mkdir()
    settings = Settings(workspace_dir=str(tmp_path / "ws"), build_timeout=600)
    outcome = run_steps(tree, scratch, "shapes", settings, lambda: None, "zero-config")
    log = (scratch / OUTPUT_FILE).read_text(errors="replace")
    assert outcome.status is Status.PASSED, (outcome.reason, log[-3000:])
    assert [t.id for t in outcome.tests] == ["tests/test_area.py::test_area"]
    assert "[volt: no tox config: dependency group 'test' of pyproject.toml]" in log
    assert "[volt: runner: pytest, configured in pyproject.toml" in log
    assert "$ python -m pip install --group test" in log
    assert "build_wheel of setuptools.build_meta (PEP 517)" in log
    assert "/out/dist/shapes-1.0-py3-none-any.whl" in log
    assert "$ python -m pytest" in log
