"""Every command of a tox environment, run as tox runs it, in the build's sandbox: test runs whose tests
are the build's (ids distinct between commands), other commands as steps in their place, a failing
command stopping the rest unless `-` or ignore_errors say to go on, tox's placeholders and changedir —
and changedir refused where it would lead out of the build's directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support import PYTEST_VERSION, run_steps, write_tree

from voltci.config import Settings
from voltci.models import Outcome, Status
from voltci.runner.testrun import OUTPUT_FILE

pytestmark = pytest.mark.e2e  # every test here starts processes: builds in their sandbox

FILES = {
    "README.txt": ">>> 1 + 1\n2\n",
    "tests/test_a.py": "def test_one():\n    pass\n\ndef test_two():\n    pass\n",
    "tests/test_b.py": "def test_fails():\n    assert False, 'b fails'\n",
    "utests/__init__.py": "",
    "utests/test_u.py": "import unittest\n\nclass U(unittest.TestCase):\n    def test_u(self):\n        pass\n",
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """One workspace dir for the module: the environment with pytest is made once and reused."""
    return tmp_path_factory.mktemp("tox-ws")


def build(workspace: Path, where: Path, tox: str, files: dict[str, str] | None = None, retries: int = 0):
    tree, scratch = where / "tree", where / "scratch"
    header = f"[tox]\nskipsdist = true\n[testenv]\ndeps = pytest=={PYTEST_VERSION}\n"
    write_tree(tree, {**FILES, **(files or {}), "tox.ini": header + tox}, dedent=False)
    scratch.mkdir(parents=True)
    settings = Settings(workspace_dir=str(workspace), build_timeout=300, retries=retries)
    outcome = run_steps(tree, scratch, "toxproj", settings, lambda: None, "tox-run")
    return outcome, (scratch / OUTPUT_FILE).read_text(errors="replace"), tree


def test_every_command_runs_in_order_in_the_changedir(workspace, tmp_path) -> None:
    outcome, log, tree = build(workspace, tmp_path, """changedir = sub
commands =
    python -m doctest -v {toxinidir}/README.txt
    pytest -p no:cacheprovider {toxinidir}/tests/test_a.py
    - pytest -p no:cacheprovider {toxinidir}/tests/test_b.py
    python -m unittest discover -s {toxinidir}/utests -t {toxinidir}
    pytest -p no:cacheprovider {toxinidir}/tests/test_a.py
    python -c "import os, sys; open('{toxinidir}/ran-last', 'w').write(os.getcwd() + chr(10) + chr(10).join(sys.path))"
""")
    assert outcome.status is Status.FAILED, (outcome.reason, log[-3000:])
    by_id = {t.id: t.outcome for t in outcome.tests}
    assert by_id == {"tests/test_a.py::test_one": Outcome.PASSED, "tests/test_a.py::test_two": Outcome.PASSED,
                     "tests/test_b.py::test_fails": Outcome.FAILED, "utests.test_u.U.test_u": Outcome.PASSED,
                     "tests/test_a.py::test_one [2]": Outcome.PASSED, "tests/test_a.py::test_two [2]": Outcome.PASSED}
    assert [t.id for t in outcome.tests][:2] == ["tests/test_a.py::test_one", "tests/test_a.py::test_two"]
    assert (outcome.counts.total, outcome.counts.failed) == (6, 1)
    assert outcome.reason == ""  # failed tests say why themselves, as in a build of one test run
    cwd = (tree / "ran-last").read_text().splitlines()[0]
    assert cwd == str(tree / "sub")  # tox makes the changedir, and every command runs there
    assert "1 passed and 0 failed." in log  # the doctest step's own output
    assert "[volt: command 1 of 6 (`python -m doctest -v " in log and "a step, in sub]" in log
    assert "tox ignores the exit status of command 3 of 6" in log
    assert "[volt: tox.ini: env 'py' runs its commands in sub (changedir)]" in log
    # every test run added to the one results file the build's progress and first failure are read from
    lines = (tmp_path / "scratch" / "out" / "results.jsonl").read_text().splitlines()
    assert sum('"summary"' in line for line in lines) == 4 and sum('"id"' in line for line in lines) == 6


def test_a_failing_command_stops_the_rest_unless_ignore_errors(workspace, tmp_path) -> None:
    commands = """commands =
    python -c "import sys; sys.exit(3)"
    pytest -p no:cacheprovider tests/test_a.py
"""
    outcome, log, _ = build(workspace, tmp_path / "stops", commands)
    assert outcome.status is Status.FAILED and outcome.tests == []
    assert outcome.reason == ("command 1 of 2 (`python -c 'import sys; sys.exit(3)'`) failed with exit status 3")
    assert "the 1 command(s) after it do not run, as tox stops there" in log
    outcome, log, _ = build(workspace, tmp_path / "goes-on", "ignore_errors = true\n" + commands)
    assert outcome.status is Status.FAILED and outcome.counts.passed == 2
    assert "ignore_errors: the next command runs" in log


def test_site_packages_and_env_dir_are_the_builds_environment(workspace, tmp_path) -> None:
    check = ("import sys, os; site, env = sys.argv[1:]; assert site in sys.path, (site, sys.path); "
             "assert os.path.samefile(env, sys.prefix), (env, sys.prefix)")
    outcome, log, tree = build(workspace, tmp_path, f"""changedir = {{envtmpdir}}
commands =
    python -c "{check}" {{envsitepackagesdir}} {{env_dir}}
    pytest -p no:cacheprovider {{toxinidir}}/tests/test_a.py --basetemp={{envtmpdir}}/base
    python -c "import os; open('{{toxinidir}}/where', 'w').write(os.getcwd())"
""")
    assert outcome.status is Status.PASSED, (outcome.reason, log[-3000:])
    assert outcome.counts.passed == 2
    # the build's temporary directory is the steps' /tmp: they ran in its envtmp, as tox runs in {envtmpdir}
    assert (tree / "where").read_text() == "/tmp/envtmp"


SITE_MODULE = '''
import os


def double(x):
    """
    >>> double(2)
    4
    """
    return 2 * x


def flaky():
    """
    >>> flaky()
    'ok'
    """
    if not os.path.exists("/tmp/flaky-ran"):
        open("/tmp/flaky-ran", "w").close()
        return "first time"
    return "ok"
'''


def test_tests_in_site_packages_are_named_from_there_and_run_again_by_that_name(workspace, tmp_path) -> None:
    """pytest names a file of the environment from whatever directory holds it and the tree: Volt names
    it from site-packages, so its id does not carry the environment's path, and runs it again by that id."""
    install = "import shutil, sysconfig; shutil.copy('dmod.py', sysconfig.get_path('purelib'))"
    outcome, log, _ = build(workspace, tmp_path, f"""changedir = sub
commands_pre = python -c "{install}"
commands =
    pytest -p no:cacheprovider --doctest-modules {{envsitepackagesdir}}/dmod.py
    python -c pass
""", files={"dmod.py": SITE_MODULE}, retries=1)
    assert outcome.status is Status.PASSED, (outcome.reason, log[-3000:])
    assert {t.id: t.outcome for t in outcome.tests} == {"site-packages/dmod.py::dmod.double": Outcome.PASSED,
                                                        "site-packages/dmod.py::dmod.flaky": Outcome.FLAKY}
    assert "running 1 failed test(s) again on their own" in log


@pytest.mark.parametrize("where", ["link", "link/deeper"])
def test_a_changedir_through_a_link_is_refused(workspace, tmp_path, where) -> None:
    """The tree is the attacker's: a changedir that is (or lies behind) a link to the host is never entered."""
    tree = tmp_path / "tree"
    tree.mkdir()
    os.symlink("/etc", tree / "link")
    outcome, log, _ = build(workspace, tmp_path, f"changedir = {where}\ncommands =\n    pytest tests/test_a.py\n"
                                                 "    python -c pass\n")
    assert outcome.status is Status.ERROR and outcome.tests == []
    assert outcome.reason.startswith(f"command 1 of 2 (`pytest tests/test_a.py`) cannot run in {where}: ")
    assert "link" in outcome.reason
    assert not (Path("/etc") / "deeper").exists()


def test_an_unexpandable_placeholder_ends_the_build_naming_it(workspace, tmp_path) -> None:
    outcome, _, _ = build(workspace, tmp_path, "commands = pytest --rootdir={homedir}\n")
    assert outcome.status is Status.ERROR
    assert outcome.reason == "tox.ini: env 'py' uses {homedir}, which Volt cannot expand"


NAMED = {"utests/test_v.py": "import unittest\n\nclass V(unittest.TestCase):\n    def test_one(self):\n        pass\n\n"
                             "    def test_two(self):\n        pass\n\nclass W(unittest.TestCase):\n"
                             "    def test_w(self):\n        pass\n"}


@pytest.mark.parametrize("commands, ran", [
    ("python -m unittest utests.test_v.V.test_one utests/test_u.py",
     {"utests.test_v.V.test_one", "utests.test_u.U.test_u"}),
    ("python -m unittest utests.test_v.W\n    pytest -p no:cacheprovider tests/test_a.py::test_two",
     {"utests.test_v.W.test_w", "tests/test_a.py::test_two"}),
    ("python -m unittest -k one -k '*_w' utests.test_v", {"utests.test_v.V.test_one", "utests.test_v.W.test_w"}),
    ("python -m unittest discover -s utests -t . -kV.test_t", {"utests.test_v.V.test_two"}),
])
def test_tests_named_in_a_command_are_the_ones_run(workspace, tmp_path, commands, ran) -> None:
    """`python -m unittest NAMES` runs the modules, classes and methods it names (a file by its path, as
    unittest takes it), those its `-k` patterns keep (a substring, or a pattern with `*`, of the test's
    full name), and pytest the node ids it is given — not every test of the tree."""
    outcome, log, _ = build(workspace, tmp_path, f"commands =\n    {commands}\n", files=NAMED)
    assert outcome.status is Status.PASSED, (outcome.reason, log[-3000:])
    assert {t.id for t in outcome.tests} == ran
