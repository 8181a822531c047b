"""Test dependencies installed once per environment: the key sees every file the steps read, and
anything it cannot see (a path of the tree, a command that is not pip) is installed by every build."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import PYTEST_VERSION, run_steps, write_tree

from voltci.config import Settings
from voltci.runner.installs import installs_key
from voltci.runner.testrun import OUTPUT_FILE

PIP = ["python", "-m", "pip", "install"]


def test_the_key_follows_every_file_the_steps_read(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, {"tests/requirements.txt": "pytest\n-r more.txt\n", "tests/more.txt": "attrs==25.1\n",
                                 "tox.ini": "[tox]\n"})
    steps = [[*PIP, "-r", "tests/requirements.txt"]]
    first = installs_key(tree, steps)
    assert first is not None and installs_key(tree, steps) == first
    keys = {first}
    for name, text in (("tests/more.txt", "attrs==25.2\n"), ("tox.ini", "[tox]\nenv_list = py\n"),
                       ("pyproject.toml", "[project]\nname = 'x'\n")):
        write_tree(tree, {name: text})
        keys.add(installs_key(tree, steps))
    assert len(keys) == 4 and None not in keys
    assert installs_key(tree, [[*PIP, "--requirement=tests/requirements.txt"]]) not in keys | {None}


@pytest.mark.parametrize("steps, files", [
    ([[*PIP, "./plugin"]], {}),
    ([[*PIP, "-e", "sub"]], {}),
    ([[*PIP, "--find-links", "./wheels", "attrs"]], {}),
    ([[*PIP, "-r", "req.txt"]], {"req.txt": "attrs\n-e .\n"}),
    ([[*PIP, "-r", "req.txt"]], {"req.txt": "-r inner.txt\n", "inner.txt": "file:./vendored/x.tar.gz\n"}),
    ([[*PIP, "-r", "../outside.txt"]], {}),
    ([["python", "-m", "uv", "export", "--frozen"]], {}),
    ([], {}),
])
def test_steps_that_install_what_the_key_cannot_see_run_in_every_build(tmp_path: Path, steps, files) -> None:
    assert installs_key(write_tree(tmp_path, files), steps) is None


def test_a_link_or_a_huge_file_is_not_a_key(tmp_path: Path) -> None:
    (tmp_path / "req.txt").symlink_to("/etc/passwd")
    assert installs_key(tmp_path, [[*PIP, "-r", "req.txt"]]) is None


@pytest.mark.e2e
def test_a_reused_environment_skips_the_installs_until_a_file_they_read_changes(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "tree", {"tests/requirements.txt": "-r more.txt\n",
                                          "tests/more.txt": f"pytest=={PYTEST_VERSION}\n",
                                          "tests/test_one.py": "def test_one():\n    pass\n"})
    settings = Settings(workspace_dir=str(tmp_path / "ws"), build_timeout=300)

    def build(number: int) -> str:
        scratch = tmp_path / f"scratch{number}"
        scratch.mkdir()
        outcome = run_steps(tree, scratch, "proj", settings, lambda: None, f"run{number}")
        log = (scratch / OUTPUT_FILE).read_text(errors="replace")
        assert outcome.status.value == "passed" and outcome.counts.passed == 1, (outcome.reason, log[-2000:])
        return log

    installing = "$ python -m pip install -r tests/requirements.txt"
    assert installing in build(1)
    second = build(2)
    assert "1 setup step(s) skipped" in second and installing not in second
    # not a file the environment's key reads:
    write_tree(tree, {"tests/more.txt": f"pytest=={PYTEST_VERSION}\niniconfig\n"})
    third = build(3)
    assert "reusing the environment" in third and installing in third
    assert "skipped" in build(4)
