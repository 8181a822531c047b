"""The project installed as tox does it: its wheel built by its own backend from build requirements
installed once per environment, then installed without resolving again dependencies that did not
change — and yet every build tests its own commit's code, with the dependencies its wheel asks for."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import PYTEST_VERSION, run_steps, write_tree

from voltci.config import Settings
from voltci.models import RunOutcome, Status
from voltci.runner import project_install, sandbox
from voltci.runner.detect import DetectError, detect
from voltci.runner.sandbox import uv_binary
from voltci.runner.testrun import OUTPUT_FILE

TARGET = "--target"  # the build requirements being installed
RESOLVED_AGAIN_NOT = "they are not resolved again"
FLIT = """\
    [build-system]
    requires = ["flit_core>=3.9,<4"]
    build-backend = "flit_core.buildapi"
    """


def in_tree_backend(path: str) -> str:
    """A [build-system] whose backend is the module `backend` in the tree's directory `path`."""
    return f'[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["{path}"]\n'


SHAPES = FLIT + """\
    [project]
    name = "shapes"
    version = "1.0"
    description = "areas"
    """
SIDES = {"shapes.py": "SIDES = 4\n",
         "tests/test_shapes.py": "import shapes\n\ndef test_sides():\n    assert shapes.SIDES == 4\n"}


class Builds:
    """Builds of one tree, one after another, in the environments of one runner host."""

    def __init__(self, tmp_path: Path, files: dict[str, str]):
        self.tmp_path, self.tree = tmp_path, tmp_path / "tree"
        write_tree(self.tree, {"tests/requirements.txt": f"pytest=={PYTEST_VERSION}\n", **files})
        self.settings = Settings(workspace_dir=str(tmp_path / "ws"), build_timeout=600)
        self.number = 0

    def build(self, files: dict[str, str] | None = None) -> tuple[RunOutcome, str]:
        write_tree(self.tree, files or {})
        self.number += 1
        scratch = self.tmp_path / f"scratch{self.number}"
        scratch.mkdir()
        outcome = run_steps(self.tree, scratch, "proj", self.settings, lambda: None, f"run{self.number}")
        return outcome, (scratch / OUTPUT_FILE).read_text(errors="replace")


@pytest.mark.e2e
def test_each_build_tests_its_own_code_from_a_wheel_built_without_a_new_build_environment(tmp_path: Path) -> None:
    builds = Builds(tmp_path, {
        "pyproject.toml": SHAPES,
        "src/shapes/__init__.py": "def area(w, h):\n    return w * h\n",
        "tests/test_area.py": "from shapes import area\n\ndef test_area():\n    assert area(2, 3) == 6\n",
    })
    first, log = builds.build()
    assert first.status is Status.PASSED, (first.reason, log[-3000:])
    assert "build_wheel of flit_core.buildapi (PEP 517)" in log
    assert TARGET in log and "flit_core>=3.9,<4" in log  # the build requirements, once
    assert "/out/dist/shapes-1.0-" in log and RESOLVED_AGAIN_NOT not in log

    second, log = builds.build({"src/shapes/__init__.py": "def area(w, h):\n    return w + h\n"})
    assert second.status is Status.FAILED, (second.reason, log[-3000:])  # the second commit's code, not the first's
    assert [t.outcome.value for t in second.tests] == ["failed"]
    assert TARGET not in log and RESOLVED_AGAIN_NOT in log
    assert f"$ {uv_binary()} pip install --python " in log and " --no-deps --reinstall --no-index " in log

    third, log = builds.build({"src/shapes/__init__.py": "def area(w, h):\n    return w * h\n"})
    assert third.status is Status.PASSED, (third.reason, log[-3000:])


@pytest.mark.e2e
def test_without_uv_pip_installs_the_wheel_over_the_last_one(tmp_path: Path, monkeypatch) -> None:
    for module in (project_install, sandbox):
        monkeypatch.setattr(module, "uv_binary", lambda: None)
    builds = Builds(tmp_path, {
        "pyproject.toml": SHAPES,
        **SIDES,
    })
    assert builds.build()[0].status is Status.PASSED
    outcome, log = builds.build({"shapes.py": "SIDES = 5\n"})
    assert outcome.status is Status.FAILED and RESOLVED_AGAIN_NOT in log, (outcome.reason, log[-3000:])
    assert "$ python -m pip install --no-deps --force-reinstall --no-index " in log
    assert " pip install --python" not in log


@pytest.mark.e2e
def test_dependencies_the_wheel_asks_for_anew_are_installed(tmp_path: Path) -> None:
    """No pyproject.toml: pip's fallback backend (setuptools' legacy one). The dependencies come from a
    file the environment's key does not read, so only the wheel's metadata tells they changed."""
    builds = Builds(tmp_path, {
        "setup.py": "from setuptools import setup\n\nsetup(name='needy', version='1.0', py_modules=['needy'],\n"
                    "      install_requires=open('needs.txt').read().split())\n",
        "needs.txt": "",
        "needy.py": "",
        "tests/test_needs.py": "def test_needs():\n    for name in open('needs.txt').read().split():\n"
                               "        __import__(name)\n",
    })
    first, log = builds.build()
    assert first.status is Status.PASSED, (first.reason, log[-3000:])
    assert "build_wheel of setuptools.build_meta:__legacy__" in log and "setuptools>=40.8.0" in log
    again, log = builds.build()
    assert again.status is Status.PASSED and RESOLVED_AGAIN_NOT in log, (again.reason, log[-3000:])

    more, log = builds.build({"needs.txt": "six\n"})
    assert more.status is Status.PASSED, (more.reason, log[-3000:])
    assert RESOLVED_AGAIN_NOT not in log and "Successfully installed six" in log


@pytest.mark.e2e
def test_the_backend_is_isolated_and_gets_what_it_asks_for_on_top(tmp_path: Path) -> None:
    """An in-tree backend (backend-path) that asks for flit_core through get_requires_for_build_wheel,
    and that must not see the environment's own packages (pytest is installed there)."""
    builds = Builds(tmp_path, {
        "pyproject.toml": in_tree_backend("_build") + "[project]\nname = 'tiny'\nversion = '1.0'\n"
                                                      "description = 'tiny'\n",
        "_build/backend.py": """\
            import importlib.util

            def get_requires_for_build_wheel(config_settings=None):
                return ["flit_core>=3.9,<4"]

            def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
                assert importlib.util.find_spec("pytest") is None, "the backend sees the environment's packages"
                from flit_core import buildapi
                return buildapi.build_wheel(wheel_directory, config_settings, metadata_directory)
            """,
        "tiny.py": "VALUE = 1\n",
        "tests/test_tiny.py": "import tiny\n\ndef test_tiny():\n    assert tiny.VALUE == 1\n",
    })
    first, log = builds.build()
    assert first.status is Status.PASSED, (first.reason, log[-3000:])
    assert "build_wheel of backend (PEP 517)" in log
    assert log.count(TARGET) == 1 and "flit_core>=3.9,<4" in log  # asked for, then installed
    second, log = builds.build()
    assert second.status is Status.PASSED and TARGET not in log, (second.reason, log[-3000:])


@pytest.mark.e2e
def test_a_backend_that_fails_ends_the_build_error_with_its_own_words(tmp_path: Path) -> None:
    builds = Builds(tmp_path, {
        "pyproject.toml": in_tree_backend("."),
        "backend.py": "def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):\n"
                      "    print('compiling the extension')\n"
                      "    raise RuntimeError('no C compiler here')\n",
        "tests/test_x.py": "def test_x():\n    pass\n",
    })
    outcome, log = builds.build()
    assert outcome.status is Status.ERROR
    assert outcome.reason == "setup step 2 failed with exit status 1: build_wheel of backend"
    assert "compiling the extension" in log and "RuntimeError: no C compiler here" in log

    outcome, log = builds.build({"pyproject.toml": "[build-system]\nrequires = ['volt-no-such-package-anywhere']\n"})
    assert outcome.status is Status.ERROR and outcome.reason.startswith("setup step 2 failed with exit status 1: "
                                                                        "python -m pip install --target ")
    assert "volt-no-such-package-anywhere" in outcome.reason


@pytest.mark.e2e
def test_an_editable_install_uses_the_editable_hook_or_pip_when_the_backend_has_none(tmp_path: Path) -> None:
    builds = Builds(tmp_path, {
        "pyproject.toml": SHAPES,
        "tox.ini": f"[testenv]\nusedevelop = true\ndeps = pytest=={PYTEST_VERSION}\ncommands = pytest\n",
        **SIDES,
    })
    outcome, log = builds.build()
    assert outcome.status is Status.PASSED, (outcome.reason, log[-3000:])
    assert "build_editable of flit_core.buildapi" in log and "/out/dist/shapes-1.0-" in log

    no_editable_hook = "def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):\n" \
                       "    raise RuntimeError('not called')\n"
    outcome, log = builds.build({"pyproject.toml": in_tree_backend("."), "backend.py": no_editable_hook})
    assert "[volt: the build backend backend has no build_editable hook: installed by pip instead]" in log
    assert outcome.status is Status.ERROR and outcome.reason.endswith("python -m pip install -e .")


@pytest.mark.parametrize("build_system, fault", [
    ("requires = 'flit_core'", "[build-system] requires must be a list of strings"),
    ("requires = []\nbuild-backend = 3", "[build-system] build-backend must be a string"),
    ("requires = []\nbuild-backend = 'b'\nbackend-path = ['../elsewhere']",
     "[build-system] backend-path names '../elsewhere', which is not inside the repository"),
])
def test_a_wrong_build_system_is_one_line_naming_the_file(tmp_path: Path, build_system: str, fault: str) -> None:
    write_tree(tmp_path, {"pyproject.toml": f"[build-system]\n{build_system}\n[project]\nname = 'x'\n",
                          "tests/test_x.py": "def test_x():\n    pass\n"})
    with pytest.raises(DetectError) as raised:
        detect(tmp_path)
    assert str(raised.value) == f"pyproject.toml: {fault}"


def test_a_project_not_installed_never_reads_its_build_system(tmp_path: Path) -> None:
    write_tree(tmp_path, {"pyproject.toml": "[build-system]\nrequires = 'flit_core'\n",
                          "tox.ini": "[testenv]\nskip_install = true\ndeps = pytest\ncommands = pytest\n"})
    plan = detect(tmp_path)
    assert plan.project is None and plan.runner == "pytest"


def test_the_plan_says_which_step_installs_the_project_and_with_what(tmp_path: Path) -> None:
    write_tree(tmp_path, {"pyproject.toml": FLIT + "[project]\nname = 'x'\n[project.optional-dependencies]\n"
                                                   "test = ['pytest']\n"})
    plan = detect(tmp_path)
    assert plan.project is not None
    assert plan.setup[plan.project.step] == ["python", "-m", "pip", "install", ".[test]"]
    assert plan.project.extras == ("test",) and not plan.project.editable
    assert plan.project.build.requires == ("flit_core>=3.9,<4",) and plan.project.build.backend == "flit_core.buildapi"
