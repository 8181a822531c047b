"""Zero-configuration detection: each convention real Python projects use to declare how their tests
are set up and run, as a small file set in a temporary directory, and the plan Volt reads from it."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT, child_env, write_tree

from voltci.runner.detect import DetectError, TestPlan, describe, detect
from voltci.runner.detect.files import MAX_BYTES

PIP = ["python", "-m", "pip", "install"]
UV_STEPS = [[*PIP, "uv"]]


PYPROJECT = """
    [build-system]
    requires = ["setuptools>=68"]
    build-backend = "setuptools.build_meta"

    [project]
    name = "sample"
    version = "1.0"
    """


def notes(plan: TestPlan) -> str:
    return "\n".join(plan.notes)


# ---------------------------------------------------------------- tox.ini


def test_tox_ini_deps_extras_commands_setenv_and_commands_pre(tmp_path: Path) -> None:
    """humanize's shape: deps, an extra, editable install, a commands_pre borrowed from another env."""
    tree = write_tree(tmp_path, {
        "pyproject.toml": PYPROJECT + """
            [project.optional-dependencies]
            tests = ["freezegun", "pytest>=9", "pytest-cov"]
            """,
        "tox.ini": r"""
            [tox]
            env_list =
                lint
                py{py3}
                py{311-313}

            [testenv]
            package = editable
            deps =
                babel
            extras =
                tests
            setenv =
                DATA_DIR = {toxinidir}/data
                SCRATCH = {envtmpdir}
            commands_pre =
                {[testenv:compile-translations]commands}
            commands =
                {envpython} -m pytest \
                  --cov sample \
                  --cov-report xml \
                  {posargs}

            [testenv:compile-translations]
            skip_install = true
            deps = babel
            commands =
                pybabel --quiet compile --directory src/sample/locale --domain sample

            [testenv:lint]
            deps = ruff
            commands = ruff check
            """,
    })
    plan = detect(tree)
    assert plan.runner == "pytest"
    assert plan.pytest_args == []  # --cov and its values are coverage's, {posargs} is tox's
    assert plan.setup == [
        [*PIP, "babel"],
        [*PIP, "-e", ".[tests]"],
        ["pybabel", "--quiet", "compile", "--directory", "src/sample/locale", "--domain", "sample"],
    ]
    assert plan.env == {"DATA_DIR": "data", "SCRATCH": "{tmp}/envtmp"}
    assert "env 'py311', the first CPython env" in notes(plan)  # pypy3 and lint are not it
    assert "--cov sample" in notes(plan)


def test_tox_ini_factors_keep_what_the_default_env_has_and_say_what_went(tmp_path: Path) -> None:
    """attrs/pyparsing: generative env names and sections, factor conditions, negated factors."""
    tree = write_tree(tmp_path, {
        "pyproject.toml": PYPROJECT + """
            [project.optional-dependencies]
            diagrams = ["jinja2"]
            """,
        "tox.ini": """
            [tox]
            envlist = py3{10-12}-{unit,doctest}, mypy-check

            [testenv]
            deps =
                unit: pytest
                unit-!py312: matplotlib; implementation_name != 'pypy'
                doctest: sphinx
                py3: only-for-a-py3-factor
            extras = unit: diagrams
            setenv =
                PYTHONPATH = {env:PYTHONPATH}{:}{toxinidir}
                coverage: RUN_COVERAGE=1
            commands =
                unit: pytest tests examples/tiny/tests {posargs}
                doctest: sphinx-build -b doctest docs docs/_build

            [testenv:py3{11,12}-unit]
            commands = pytest tests
            """,
    })
    plan = detect(tree)
    assert plan.setup == [[*PIP, "pytest", "matplotlib; implementation_name != 'pypy'"], [*PIP, ".[diagrams]"]]
    assert plan.pytest_args == ["tests", "examples/tiny/tests"]
    assert plan.env == {"PYTHONPATH": "."}
    assert "env 'py310-unit'" in notes(plan)
    assert "doctest: sphinx" in notes(plan)  # what was left out is said

    # the env for the build's Python, when listed, and its generative section
    plan = detect(tree, python="3.12")
    assert plan.pytest_args == ["tests"]
    assert plan.setup[0] == [*PIP, "pytest"]


def test_tox_posargs_default_is_kept_and_envtmpdir_is_the_builds_tmp(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, {
        "setup.py": "from setuptools import setup\nsetup()\n",
        "tox.ini": """
            [tox]
            envlist = py311
            [testenv]
            usedevelop = true
            deps = pytest-xdist
            commands = pytest {posargs:-n auto "{toxinidir}/tests"} --basetemp={envtmpdir} --junitxml=out.xml
            """,
    })
    plan = detect(tree, tmp_dir="/scratch/b1")
    assert plan.pytest_args == ["-n", "auto", "tests", "--basetemp=/scratch/b1/envtmp"]
    assert plan.setup == [[*PIP, "pytest-xdist"], [*PIP, "-e", "."]]


def test_the_project_named_in_tox_deps_is_installed_last_with_its_extras(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, {
        "pyproject.toml": PYPROJECT + "[project.optional-dependencies]\ntest = ['pytest']\n",
        "tox.ini": "[testenv]\ndeps =\n    -e {toxinidir}[test]\n    mock\ncommands = pytest\n"})
    assert detect(tree).setup == [[*PIP, "mock"], [*PIP, "-e", ".[test]"]]


def test_tox_deps_read_requirements_files_and_constraints(tmp_path: Path) -> None:
    """jinja2: `-r requirements/tests.txt` (pinned) is installed as such; its names are read, nested too."""
    tree = write_tree(tmp_path, {
        "pyproject.toml": PYPROJECT,
        "requirements/tests.txt": "-r base.txt\npluggy==1.5.0\n",
        "requirements/base.txt": "pytest==8.3.4  # pinned\n",
        "constraints.txt": "iniconfig<3\n",
        "tox.ini": """
            [tox]
            envlist = py313,style
            [testenv]
            deps =
                -r requirements/tests.txt
                -c{toxinidir}/constraints.txt
            commands = pytest -v --tb=short {posargs}
            """,
    })
    plan = detect(tree)
    assert plan.setup == [[*PIP, "-r", "requirements/tests.txt", "-c", "constraints.txt"], [*PIP, "."]]
    assert plan.pytest_args == ["-v", "--tb=short"]
    assert "pytest is not among" not in notes(plan)  # found in the nested file


def test_tox_env_set_env_references_and_tox_only_substitutions(tmp_path: Path) -> None:
    """pluggy/dateutil: `{env:X:default}` reads set_env, a value may extend itself, `{envname}`."""
    tree = write_tree(tmp_path, {
        "pyproject.toml": PYPROJECT + """
            [dependency-groups]
            testing = ["pytest>=8"]
            """,
        "tox.ini": """
            [tox]
            envlist = py311
            [testenv]
            dependency_groups = testing
            setenv =
                _SKIP_DEP=1
                PYTEST_ADDOPTS=-n auto {env:PYTEST_ADDOPTS:}
                COVERAGE_FILE={toxworkdir}/.coverage.{envname}
                coverage: _CMD=coverage run -m pytest
            commands = {env:_CMD:pytest} {posargs}
            """,
    })
    plan = detect(tree)
    assert plan.env == {"_SKIP_DEP": "1", "PYTEST_ADDOPTS": "-n auto", "COVERAGE_FILE": "{tmp}/.coverage.py311"}
    assert plan.runner == "pytest" and plan.pytest_args == []
    assert plan.setup == [[*PIP, "-U", "pip>=25.1"], [*PIP, "--group", "testing"], [*PIP, "."]]


def test_what_volt_cannot_read_is_said_and_what_it_cannot_expand_ends_detection(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, {"setup.py": "", "tox.ini": """
        [testenv]
        setenv =
            file|.env
            A=1
        commands = pytest --rootdir={envsitepackagesdir}
        """})
    plan = detect(tree)
    assert plan.pytest_args == ["--rootdir={site}"] and plan.env == {"A": "1"}
    assert "tox.ini: set_env from files is not read: file|.env" in plan.notes
    write_tree(tmp_path, {"tox.ini": "[testenv]\ncommands = pytest --basetemp={homedir}/x {nosuchthing}\n"})
    with pytest.raises(DetectError, match=r"^tox.ini: env 'py' uses \{homedir\}, \{nosuchthing\}, which Volt "
                                          r"cannot expand$"):
        detect(tree)


def test_tox_ini_without_tox_sections_is_not_a_tox_config(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, {
        "setup.py": "from setuptools import setup\nsetup()\n",
        "tox.ini": "[flake8]\nmax-line-length = 100\n\n[pytest]\naddopts = --doctest-modules\n",
    })
    plan = detect(tree)
    assert plan.runner == "pytest"
    assert "configured in tox.ini [pytest]" in notes(plan)
    assert plan.setup == [[*PIP, "pytest"], [*PIP, "."]]


# ---------------------------------------------------------------- other tox forms


def test_pyproject_tool_tox_legacy_ini_string(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, {
        "pyproject.toml": PYPROJECT + '''
            [tool.tox]
            legacy_tox_ini = """
            [tox]
            envlist = py312
            [testenv]
            deps = pytest
            commands = python -m pytest tests {posargs}
            """
            ''',
    })
    plan = detect(tree)
    assert plan.setup == [[*PIP, "pytest"], [*PIP, "."]]
    assert plan.pytest_args == ["tests"]
    assert "pyproject.toml [tool.tox] legacy_tox_ini: env 'py312'" in notes(plan)


def test_pyproject_tool_tox_native_with_uv_lock(tmp_path: Path) -> None:
    """click/werkzeug: env_run_base, a posargs replace table, {env_tmp_dir}; their uv.lock pins it all."""
    tree = write_tree(tmp_path, {
        "pyproject.toml": PYPROJECT + """
            [dependency-groups]
            dev = ["ruff", "tox"]
            tests = ["pytest"]

            [tool.tox]
            env_list = ["py3.14", "py3.13", "pypy3.11", "style"]

            [tool.tox.env_run_base]
            runner = "uv-venv-lock-runner"
            package = "wheel"
            dependency_groups = ["tests"]
            set_env = { LANG = "C.UTF-8" }
            commands = [[
                "pytest", "-v", "--tb=short", "--basetemp={env_tmp_dir}",
                {replace = "posargs", default = [], extend = true},
            ]]

            [tool.tox.env.style]
            commands = [["pre-commit", "run", "--all-files"]]
            """,
        "uv.lock": "version = 1\n",
    })
    plan = detect(tree)
    assert plan.setup == [
        *UV_STEPS,
        ["python", "-m", "uv", "export", "--frozen", "--no-hashes", "--no-emit-project", "--no-default-groups",
         "--group", "tests", "-o", "{tmp}/volt-requirements.txt"],
        [*PIP, "-r", "{tmp}/volt-requirements.txt"],
        [*PIP, "."],
    ]
    assert plan.pytest_args == ["-v", "--tb=short", "--basetemp={tmp}/envtmp"]
    assert plan.env == {"LANG": "C.UTF-8"}
    assert "uv.lock" in notes(plan)


def test_tox_toml_with_posargs_default_and_env_section(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, {
        "pyproject.toml": PYPROJECT,
        "tox.toml": """
            env_list = ["3.12", "lint"]

            [env_run_base]
            deps = ["pytest", "-r requirements-extra.txt"]
            commands = [["python", "-m", "pytest", {replace = "posargs", default = ["-x", "tests"], extend = true},
                         "{posargs:--strict-markers -ra}"]]

            [env."3.12"]
            use_develop = true
            set_env.MODE = "{env:MODE:strict}"
            """,
        "requirements-extra.txt": "hypothesis\n",
    })
    plan = detect(tree)
    assert plan.setup == [[*PIP, "pytest", "-r", "requirements-extra.txt"], [*PIP, "-e", "."]]
    assert plan.pytest_args == ["-x", "tests", "--strict-markers", "-ra"]
    assert plan.env == {"MODE": "strict"}
    assert "tox.toml: env '3.12'" in notes(plan)


def test_setup_cfg_tox_section(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, {
        "setup.py": "from setuptools import setup\nsetup()\n",
        "setup.cfg": """
            [metadata]
            name = sample

            [options.extras_require]
            testing =
                pytest
                mock

            [tox:tox]
            envlist = py39, py311

            [testenv]
            extras = testing
            commands = pytest -ra {posargs}
            """,
    })
    plan = detect(tree)
    assert plan.setup == [[*PIP, ".[testing]"]]
    assert plan.pytest_args == ["-ra"]
    assert "setup.cfg: env 'py39'" in notes(plan)


def test_tox_config_order_tox_ini_first(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, {
        "pyproject.toml": PYPROJECT + """
            [tool.tox]
            env_list = ["py3.12"]
            env_run_base = { deps = ["from-pyproject"], commands = [["pytest"]] }
            """,
        "tox.ini": "[testenv]\ndeps = from-tox-ini\ncommands = pytest\n",
    })
    assert detect(tree).setup[0] == [*PIP, "from-tox-ini", "pytest"]


# ---------------------------------------------------------------- PEP 735 groups, extras, requirements files


def test_dependency_group_with_include_group(tmp_path: Path) -> None:
    """Groups need pip >= 25.1; a group may include others; pytest found in the included one."""
    tree = write_tree(tmp_path, {
        "pyproject.toml": PYPROJECT + """
            [dependency-groups]
            docs = ["sphinx"]
            test-base = ["pytest>=8", "hypothesis"]
            Tests = [{include-group = "test-base"}, "pympler"]
            """,
        "tests/test_x.py": "def test_x():\n    pass\n",
    })
    plan = detect(tree)
    assert plan.runner == "pytest"
    assert plan.setup == [[*PIP, "-U", "pip>=25.1"], [*PIP, "--group", "Tests"], [*PIP, "."]]
    assert "runner: pytest, among the test dependencies" in notes(plan)


def test_dependency_group_order_prefers_test_over_dev(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, {
        "pyproject.toml": PYPROJECT + """
            [dependency-groups]
            dev = ["ruff", "tox"]
            testing = ["pytest"]
            """,
    })
    assert detect(tree).setup[1] == [*PIP, "--group", "testing"]


@pytest.mark.parametrize("groups, fault", [
    ('test = [{include-group = "test"}]', "dependency group 'test' includes itself (test -> test)"),
    ('test = [{include-group = "a"}]\na = [{include-group = "b"}]\nb = [{include-group = "test"}]',
     "dependency group 'test' includes itself (test -> a -> b -> test)"),
    ('test = [{include-group = "nope"}]', "includes 'nope', which does not exist"),
    ('test = [{include = "x"}]', "neither a requirement nor {include-group"),
])
def test_dependency_group_cycles_and_bad_includes(tmp_path: Path, groups: str, fault: str) -> None:
    tree = write_tree(tmp_path, {"pyproject.toml": PYPROJECT + "\n[dependency-groups]\n" + groups + "\n"})
    with pytest.raises(DetectError) as caught:
        detect(tree)
    assert str(caught.value).startswith("pyproject.toml: ") and fault in str(caught.value)


def test_uv_lock_is_honoured_for_a_dependency_group(tmp_path: Path) -> None:
    """iniconfig: a `dev` group and its uv.lock; the project (a pytest dependency) installed last."""
    tree = write_tree(tmp_path, {
        "pyproject.toml": PYPROJECT + """
            [dependency-groups]
            dev = ["pytest>=8.4.2", "pytest-xdist>=3.8"]
            [tool.pytest]
            ini_options.testpaths = "testing"
            """,
        "uv.lock": "version = 1\n",
        "src/sample/__init__.py": "",
    })
    plan = detect(tree)
    assert plan.setup[1][-4:] == ["--group", "dev", "-o", "{tmp}/volt-requirements.txt"]
    assert "--no-emit-project" in plan.setup[1] and "--no-default-groups" in plan.setup[1]
    assert plan.setup[-1] == [*PIP, "."]
    assert not any("pip>=25.1" in step for step in plan.setup)  # uv reads the groups, not pip


def test_extra_from_pyproject(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, {
        "pyproject.toml": PYPROJECT + """
            [project.optional-dependencies]
            docs = ["sphinx"]
            test = ["pytest", "pytest-cov"]
            """,
    })
    plan = detect(tree)
    assert plan.setup == [[*PIP, ".[test]"]]
    assert plan.runner == "pytest"
    assert "extra 'test' (pyproject.toml)" in notes(plan)


def test_a_group_or_extra_of_another_name_that_lists_pytest_comes_last(tmp_path: Path) -> None:
    """idna: its tests need hypothesis, found only in the `all` extra beside pytest and the linters."""
    tree = write_tree(tmp_path, {"pyproject.toml": PYPROJECT + """
        [project.optional-dependencies]
        cli = ["click"]
        all = ["ruff", "pytest >= 8.3.2", "hypothesis"]
        """})
    plan = detect(tree)
    assert plan.setup == [[*PIP, ".[all]"]] and plan.runner == "pytest"
    assert "extra 'all' (pyproject.toml), which lists pytest" in notes(plan)
    write_tree(tmp_path, {"requirements-dev.txt": "pytest\n"})
    assert detect(tree).setup == [[*PIP, "-r", "requirements-dev.txt"], [*PIP, "."]]


def test_extra_filled_only_by_egg_info_requires_txt(tmp_path: Path) -> None:
    """An sdist whose PKG-INFO names the extra without requirements; setup.py fills it (not run),
    *.egg-info/requires.txt says what is in it."""
    tree = write_tree(tmp_path, {
        "setup.py": "from setuptools import setup\nsetup(extras_require={'testing': ['pytest', 'coverage']})\n",
        "PKG-INFO": "Metadata-Version: 2.1\nName: sample\nVersion: 1.0\nProvides-Extra: testing\n\nA project.\n",
        "sample.egg-info/requires.txt": "six\n\n[testing]\npytest\ncoverage\n\n"
                                        "[docs:python_version >= '3.9']\nsphinx\n",
        "tox.ini": "[testenv]\nextras = testing\ncommands = python -m pytest\n",
    })
    plan = detect(tree)
    assert plan.setup == [[*PIP, ".[testing]"]]
    assert "pytest is not among" not in notes(plan)
    tree.joinpath("tox.ini").unlink()
    plan = detect(tree)
    assert plan.setup == [[*PIP, ".[testing]"]] and plan.runner == "pytest"
    assert "extra 'testing' (sample.egg-info/requires.txt)" in notes(plan)


def test_extra_of_a_setup_py_without_metadata_is_trusted(tmp_path: Path) -> None:
    """A plain setup.py may define any extra; Volt cannot know without running it, so it lets pip say."""
    tree = write_tree(tmp_path, {
        "setup.py": "from setuptools import setup\nsetup(extras_require={'test': ['pytest']})\n",
        "tox.ini": "[testenv]\nextras = test\ncommands = pytest\n",
    })
    assert detect(tree).setup == [[*PIP, "pytest"], [*PIP, ".[test]"]]


@pytest.mark.parametrize("files", [
    {"pyproject.toml": PYPROJECT + '[project.optional-dependencies]\ntest = ["pytest"]\n',
     "tox.ini": "[testenv]\nextras = tests\ncommands = pytest\n"},
    {"setup.py": "", "PKG-INFO": "Metadata-Version: 2.1\nName: sample\nProvides-Extra: test\n",
     "tox.ini": "[testenv]\nextras = testing\ncommands = pytest\n"},
])
def test_extra_that_does_not_exist(tmp_path: Path, files: dict[str, str]) -> None:
    with pytest.raises(DetectError, match=r"^tox.ini: extra '(tests|testing)' does not exist \("):
        detect(write_tree(tmp_path, files))


def test_group_named_by_tox_that_does_not_exist(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, {"pyproject.toml": PYPROJECT,
                                 "tox.ini": "[testenv]\ndependency_groups = test\ncommands = pytest\n"})
    with pytest.raises(DetectError, match=r"^tox.ini: dependency group 'test' does not exist in pyproject.toml$"):
        detect(tree)


@pytest.mark.parametrize("name", ["requirements-test.txt", "test-requirements.txt", "requirements/tests.txt",
                                  "tests/requirements.txt", "requirements-dev.txt"])
def test_requirements_files_of_the_usual_names(tmp_path: Path, name: str) -> None:
    """packaging: tests/requirements.txt and no other declaration of its test dependencies."""
    tree = write_tree(tmp_path, {"pyproject.toml": PYPROJECT, name: "pretend\npytest>=6.2.0\n",
                                 "src/sample/__init__.py": ""})
    plan = detect(tree)
    assert plan.setup == [[*PIP, "-r", name], [*PIP, "."]]
    assert plan.runner == "pytest"


def test_a_project_pytest_depends_on_is_installed_after_pytest(tmp_path: Path) -> None:
    """pluggy, packaging, iniconfig: pytest pulls the released version; the tree's must win."""
    tree = write_tree(tmp_path, {
        "pyproject.toml": PYPROJECT.replace('"sample"', '"pluggy"') + """
            [dependency-groups]
            testing = ["pytest>=8", "pluggy[dev]"]
            """,
        "tox.ini": "[tox]\nenvlist=py{310,311}\n[testenv]\ndependency_groups=testing\ncommands=pytest {posargs}\n",
    })
    setup = detect(tree).setup
    assert setup[-1] == [*PIP, "."] and setup.index([*PIP, "--group", "testing"]) < len(setup) - 1
    assert not any("--no-deps" in step for step in setup)


# ---------------------------------------------------------------- the runner


@pytest.mark.parametrize("files, source", [
    ({"pytest.ini": "[pytest]\naddopts = --doctest-modules\n"}, "pytest.ini"),
    ({"pyproject.toml": PYPROJECT + "[tool.pytest.ini_options]\ntestpaths = ['tests']\n"},
     "pyproject.toml [tool.pytest.ini_options]"),
    ({"setup.cfg": "[tool:pytest]\nminversion = 2.2.0\n", "setup.py": ""}, "setup.cfg [tool:pytest]"),
    ({"tox.ini": "[pytest]\ntestpaths = testing\n", "setup.py": ""}, "tox.ini [pytest]"),
    ({"conftest.py": "", "setup.py": ""}, "conftest.py"),
    ({"tests/conftest.py": "", "setup.py": ""}, "tests/conftest.py"),
])
def test_pytest_config_makes_it_a_pytest_project(tmp_path: Path, files: dict[str, str], source: str) -> None:
    """six: `[tool:pytest]` and nothing else; pytest is then installed for it. No paths are added:
    the config's own testpaths, doctests and deselections stay in force."""
    plan = detect(write_tree(tmp_path, files))
    assert plan.runner == "pytest" and plan.pytest_args == []
    assert f"configured in {source}" in notes(plan)
    assert [*PIP, "pytest"] in plan.setup


@pytest.mark.parametrize("command, start, pattern, top", [
    ("python -m unittest discover -s tests", "tests", "test*.py", None),
    ("python -m unittest discover {toxinidir}/tests", "tests", "test*.py", None),
    ("coverage run --source=sample -m unittest discover tests '*_test.py'", "tests", "*_test.py", None),
    ("python -m unittest discover -s src/tests -t src -p 'check_*.py'", "src/tests", "check_*.py", "src"),
    ("{envpython} -m unittest -v {posargs}", ".", "test*.py", None),
    ("python -W error -m unittest", ".", "test*.py", None),
])
def test_unittest_discovery_root_from_the_maintainers_command(tmp_path: Path, command: str, start: str,
                                                               pattern: str, top: str | None) -> None:
    """Markdown: `unittest discover tests` gives ids `test_x....`, not `tests.test_x....`; and a unittest
    project is run by unittest (pytest would lose the doctests its load_tests adds)."""
    tree = write_tree(tmp_path, {"setup.py": "", "conftest.py": "",
                                 "tox.ini": f"[tox]\nenvlist = py311\n[testenv]\ncommands =\n    {command}\n"
                                            "    coverage xml\n"})
    plan = detect(tree)
    assert (plan.runner, plan.start_dir, plan.pattern, plan.top_level_dir) == ("unittest", start, pattern, top)
    assert [*PIP, "pytest"] not in plan.setup


@pytest.mark.parametrize("command, names, patterns, left_out", [
    ("python -m unittest pkg.tests.test_x", ["pkg.tests.test_x"], [], []),
    ("python -m unittest -v pkg.tests.test_x pkg.tests.test_y.T.test_z",
     ["pkg.tests.test_x", "pkg.tests.test_y.T.test_z"], [], []),
    ("{envpython} -m unittest {toxinidir}/tests/test_x.py {posargs}", ["tests/test_x.py"], [], []),
    ("coverage run -m unittest -b -k slow pkg.tests", ["pkg.tests"], ["slow"], ["coverage run"]),
    ("python -m unittest -k fast pkg.tests", ["pkg.tests"], ["fast"], []),
    ("python -m unittest -k fast -k'*_quick' -kx", [], ["fast", "*_quick", "x"], []),
    ("python -m unittest discover -s tests -k fast", [], ["fast"], []),
])
def test_unittest_tests_named_in_the_command_are_those_tests(tmp_path: Path, command: str, names: list[str],
                                                             patterns: list[str], left_out: list[str]) -> None:
    """`python -m unittest NAMES` runs those tests, not discovery of all; `-k PATTERN` keeps the tests
    whose names match, as unittest keeps them, and is never taken for a test's name."""
    tree = write_tree(tmp_path, {"setup.py": "", "tox.ini": f"[testenv]\ncommands = {command}\n"})
    plan = detect(tree)
    assert (plan.runner, plan.names, plan.patterns) == ("unittest", names, patterns)
    assert ("left out: " + " ".join(left_out) in notes(plan)) if left_out else "left out" not in notes(plan)
    chosen = [word for pattern in patterns for word in ("-k", pattern)]
    if names:
        assert "tests: " + shlex.join(["python", "-m", "unittest", *chosen, *names]) in describe(plan)
    elif chosen:
        assert shlex.join(chosen) in describe(plan)


def test_named_unittest_tests_among_several_commands(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, {"setup.py": "", "tox.ini": "[testenv]\ncommands =\n    python -m unittest a.tests\n"
                                                             "    python -m unittest discover -s b\n"})
    plan = detect(tree)
    assert [(c.kind, c.names, c.start_dir) for c in plan.commands] == [("unittest", ["a.tests"], "."),
                                                                       ("unittest", [], "b")]


def test_pytest_node_ids_in_the_command_are_passed_to_pytest(tmp_path: Path) -> None:
    command = "pytest tests/test_a.py::test_b 'tests/test_c.py::T::test_d[1]'"
    tree = write_tree(tmp_path, {"setup.py": "", "tox.ini": f"[testenv]\ndeps = pytest\ncommands = {command}\n"})
    assert detect(tree).pytest_args == ["tests/test_a.py::test_b", "tests/test_c.py::T::test_d[1]"]


def test_no_config_at_all_is_unittest_discovery(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, {"setup.py": "", "sample.py": "", "tests/test_sample.py": ""})
    plan = detect(tree)
    assert (plan.runner, plan.start_dir, plan.top_level_dir) == ("unittest", "tests", None)
    assert plan.setup == [[*PIP, "."]]
    tree.joinpath("tests/__init__.py").write_text("")
    assert detect(tree).start_dir == "."


def test_every_command_runs_in_its_place_and_coverage_reports_go(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, {"setup.py": "", "tox.ini": """
        [testenv]
        deps = pytest
        commands_pre = pip uninstall --yes text-unidecode
        commands =
            - coverage erase
            pip install ./plugin
            python scripts/make_fixtures.py
            coverage run -m pytest {posargs:tests}
            coverage report
        """})
    plan = detect(tree)
    assert plan.setup == [[*PIP, "pytest"], [*PIP, "."],
                          ["python", "-m", "pip", "uninstall", "--yes", "text-unidecode"], [*PIP, "./plugin"]]
    assert plan.pytest_args == ["tests"]
    assert [(c.kind, c.argv, c.pytest_args) for c in plan.commands] == [
        ("step", ["python", "scripts/make_fixtures.py"], []),
        ("pytest", ["coverage", "run", "-m", "pytest", "tests"], ["tests"])]
    said = notes(plan)
    assert "command 1 of env 'py': `coverage erase` (`-`: its exit status ignored): left out" in said
    assert "command 2 of env 'py': `pip install ./plugin`: a setup step" in said
    assert "command 3 of env 'py': `python scripts/make_fixtures.py`: run as a step, in its place" in said


def test_one_test_run_in_the_tree_is_the_builds_suite_alone(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, {"setup.py": "", "tox.ini": "[testenv]\ncommands =\n    coverage erase\n"
                                                             "    pytest tests\n    coverage report\n"})
    plan = detect(tree)
    assert plan.commands == [] and plan.pytest_args == ["tests"]


def test_several_test_runs_placeholders_and_changedir_as_tox_has_them(tmp_path: Path) -> None:
    """A doctest of a document, pytest of two documents, the installed package's doctests, the suite —
    run from a changedir, with {toxinidir} then the tree's path and site-packages the environment's."""
    tree = write_tree(tmp_path, {"setup.py": "", "tox.ini": """
        [testenv]
        deps = pytest
        changedir = {toxinidir}/.tox
        ignore_errors = true
        commands =
            python -m doctest {toxinidir}/README.rst
            pytest {toxinidir}/docs/a.rst {tox_root}/docs/b.rst
            - pytest --doctest-modules {envsitepackagesdir}/sample {posargs}
            {envpython} -m unittest discover -s {toxinidir}/tests
            {envbindir}/sample-cli --check {env_dir}
        """})
    plan = detect(tree)
    assert [(c.kind, c.argv, c.cwd, c.ignore_exit) for c in plan.commands] == [
        ("step", ["python", "-m", "doctest", "{tree}/README.rst"], ".tox", False),
        ("pytest", ["pytest", "{tree}/docs/a.rst", "{tree}/docs/b.rst"], ".tox", False),
        ("pytest", ["pytest", "--doctest-modules", "{site}/sample"], ".tox", True),
        ("unittest", ["python", "-m", "unittest", "discover", "-s", "{tree}/tests"], ".tox", False),
        ("step", ["{venv}/bin/sample-cli", "--check", "{venv}"], ".tox", False)]
    assert plan.commands[2].pytest_args == ["--doctest-modules", "{site}/sample"]
    assert plan.commands[3].start_dir == "{tree}/tests"
    assert plan.ignore_errors and plan.runner == "pytest"
    assert "tox.ini: env 'py' runs its commands in {toxinidir}/.tox (changedir)" in plan.notes
    text = describe(plan)
    assert "command 3, tests (in .tox): pytest --doctest-modules '{site}/sample' (exit status ignored)" in text
    assert "[volt: {tree} is the tree's path; {site} is the build environment's site-packages; {venv} is the build " \
           "environment: filled in as the build runs]" in text


@pytest.mark.parametrize("changedir, where", [
    (".", "."), ("{toxinidir}", "."), ("tests/", "tests"), ("{tox_root}/a/../b", "b"), ("{envtmpdir}", "{tmp}/envtmp"),
    ("{toxworkdir}", "{tmp}"),
])
def test_changedir_inside_the_builds_directories(tmp_path: Path, changedir: str, where: str) -> None:
    tree = write_tree(tmp_path, {"setup.py": "", "tox.ini": f"[testenv]\nchangedir = {changedir}\ncommands = pytest\n"})
    plan = detect(tree)
    assert (plan.commands[0].cwd if plan.commands else ".") == where


@pytest.mark.parametrize("changedir", ["..", "../elsewhere", "/etc", "{toxinidir}/..", "{envtmpdir}/../..",
                                       "{envsitepackagesdir}", "{env_dir}", "~/x", "{homedir}"])
def test_changedir_out_of_the_builds_directories_is_refused(tmp_path: Path, changedir: str) -> None:
    tree = write_tree(tmp_path, {"setup.py": "", "tox.ini": f"[testenv]\nchangedir = {changedir}\ncommands = pytest\n"})
    with pytest.raises(DetectError, match=r"^tox.ini: (changedir of env 'py' is .*Volt runs commands only in the "
                                          r"project's tree or the build's temporary directory|env 'py' uses "
                                          r"\{homedir\}, which Volt cannot expand)$"):
        detect(tree)


def test_a_huge_number_of_commands_is_refused(tmp_path: Path) -> None:
    lines = "".join(f"    python -c pass{n}\n" for n in range(200))
    tree = write_tree(tmp_path, {"setup.py": "", "tox.ini": f"[testenv]\ncommands =\n    pytest\n{lines}"})
    with pytest.raises(DetectError, match=r"^tox.ini: commands of env 'py' has more than 64 commands"):
        detect(tree)
    toml = "[tool.tox.env_run_base]\ncommands = [" + ", ".join('["pytest"]' for _ in range(100)) + "]\n"
    write_tree(tmp_path, {"tox.ini": "", "pyproject.toml": PYPROJECT + toml})
    (tmp_path / "tox.ini").unlink()
    with pytest.raises(DetectError, match=r"'commands' of env 'py' has more than 64 commands"):
        detect(tree)


def test_tool_tox_in_pyproject_runs_its_commands_with_change_dir_and_dashes(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, {"pyproject.toml": PYPROJECT + """
        [tool.tox]
        env_list = ["3.13"]
        [tool.tox.env_run_base]
        change_dir = "{env_tmp_dir}"
        commands = [["-", "python", "-m", "doctest", "{tox_root}/README.md"],
                    ["pytest", "--pyargs", "sample", {replace = "posargs", default = ["-q"]}]]
        """})
    plan = detect(tree)
    assert [(c.kind, c.argv, c.cwd, c.ignore_exit) for c in plan.commands] == [
        ("step", ["python", "-m", "doctest", "{tree}/README.md"], "{tmp}/envtmp", True),
        ("pytest", ["pytest", "--pyargs", "sample", "-q"], "{tmp}/envtmp", False)]
    write_tree(tmp_path, {"pyproject.toml": PYPROJECT + '[tool.tox.env_run_base]\nchange_dir = "/etc"\n'
                                                        'commands = [["pytest"]]\n'})
    with pytest.raises(DetectError, match="changedir of env 'py' is /etc"):
        detect(tree)


# One environment in each of tox's two forms: one reading (tox.read) makes the same environment of both.
TWINS = [
    ("""
        [tox]
        env_list = py311, lint
        [testenv]
        deps = pytest
            -r requirements.txt
        extras = test, docs
        dependency_groups = dev
        usedevelop = true
        ignore_errors = true
        changedir = {toxinidir}/sub
        setenv =
            MODE = strict
            WHERE = {env:MODE}-{envname}
        commands_pre = python -c pass
        commands =
            - python -m doctest {toxinidir}/README.rst
            pytest --basetemp={envtmpdir} {posargs:-q}
        """, """
        [tool.tox]
        env_list = ["py311", "lint"]
        [tool.tox.env_run_base]
        deps = ["pytest", "-r requirements.txt"]
        extras = ["test", "docs"]
        dependency_groups = ["dev"]
        use_develop = true
        ignore_errors = true
        change_dir = "{tox_root}/sub"
        set_env = {MODE = "strict", WHERE = "{env:MODE}-{env_name}"}
        commands_pre = [["python", "-c", "pass"]]
        commands = [["-", "python", "-m", "doctest", "{tox_root}/README.rst"],
                    ["pytest", "--basetemp={env_tmp_dir}", {replace = "posargs", default = ["-q"]}]]
        """),
    ("""
        [tox]
        skipsdist = true
        [testenv]
        runner = uv-venv-lock-runner
        commands = python -m unittest discover -s tests
        """, """
        [tool.tox]
        no_package = true
        [tool.tox.env_run_base]
        runner = "uv-venv-lock-runner"
        commands = [["python", "-m", "unittest", "discover", "-s", "tests"]]
        """),
    ("""
        [testenv]
        package = editable
        commands = pytest
        """, """
        [tool.tox.env_run_base]
        package = "editable"
        commands = [["pytest"]]
        """),
]


@pytest.mark.parametrize("ini, toml", TWINS)
def test_both_forms_of_tox_read_as_one_environment(tmp_path: Path, ini: str, toml: str) -> None:
    from voltci.runner.detect import tox

    ini_tree = write_tree(tmp_path / "ini", {"tox.ini": ini})
    toml_tree = write_tree(tmp_path / "toml", {"pyproject.toml": PYPROJECT + toml})
    from_ini, from_toml = tox.load(ini_tree, "{tmp}", "3.11"), tox.load(toml_tree, "{tmp}", "3.11")
    assert from_ini is not None and from_toml is not None
    same = ("name", "deps", "extras", "groups", "commands", "ignored", "ignore_errors", "change_dir", "commands_pre",
            "set_env", "install", "uv_lock")
    assert {k: getattr(from_ini, k) for k in same} == {k: getattr(from_toml, k) for k in same}
    assert len(from_ini.notes) == len(from_toml.notes)


SETUP_PY_TEST_SUITE = """
    from setuptools import setup
    setup(name='sample', package_dir={'': 'src'}, packages=['sample', 'sample.tests'],
          test_suite='sample.tests.test_suite')
    """


def test_setup_py_test_suite_is_discovery_of_the_package_it_names(tmp_path: Path) -> None:
    """The `setup.py test` era: setup.py read as data (ast, never run) for its test_suite."""
    tree = write_tree(tmp_path, {"setup.py": SETUP_PY_TEST_SUITE, "src/sample/__init__.py": "",
                                 "src/sample/tests/__init__.py": "", "tests/test_other.py": ""})
    plan = detect(tree)
    assert (plan.runner, plan.start_dir, plan.top_level_dir, plan.pattern) == \
        ("unittest", "src/sample/tests", "src", "test*.py")
    assert "the test_suite 'sample.tests.test_suite' of setup.py (what `setup.py test` ran)" in notes(plan)
    write_tree(tree, {"setup.py": "import setuptools\nsetuptools.setup(test_suite='tests')\n", "tests.py": ""})
    assert (detect(tree).start_dir, detect(tree).pattern, detect(tree).top_level_dir) == (".", "tests.py", ".")


@pytest.mark.parametrize("setup_py", [
    "setup(test_suite='nowhere.tests')\n",            # names nothing of the tree
    "setup(test_suite=SUITE)\n",                      # not a literal: Volt does not run setup.py to know
    "setup(test_suite='a; import os')\n",             # not a dotted name
    "def broken(:\n",                                 # does not parse
    "(" * 200_000 + ")" * 200_000 + "\n",             # parses into too deep a tree
])
def test_a_setup_py_test_suite_volt_cannot_read_leaves_plain_discovery(tmp_path: Path, setup_py: str) -> None:
    tree = write_tree(tmp_path, {"setup.py": setup_py, "tests/test_a.py": ""}, dedent=False)
    assert (detect(tree).runner, detect(tree).start_dir) == ("unittest", "tests")
    tree.joinpath("setup.py").write_bytes(b"# caf\xe9\nsetup(test_suite='tests')\n")  # not UTF-8
    assert detect(tree).start_dir == "tests"


def test_src_layout_is_installed_and_skip_install_is_honoured(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, {"pyproject.toml": PYPROJECT, "src/sample/__init__.py": "",
                                 "tests/test_a.py": "", "requirements-test.txt": "pytest\n"})
    assert detect(tree).setup[-1] == [*PIP, "."]
    write_tree(tmp_path, {"tox.ini": "[testenv]\nskip_install = true\ndeps = pytest\ncommands = pytest\n"})
    assert detect(tree).setup == [[*PIP, "pytest"]]


# ---------------------------------------------------------------- bad input: one line naming file and fault


@pytest.mark.parametrize("files, message", [
    ({"tox.ini": "[testenv\ndeps = x\n"}, r"^tox.ini: not a valid ini file \("),
    ({"tox.ini": "deps = pytest\n"}, r"^tox.ini: not a valid ini file \(File contains no section headers"),
    ({"pyproject.toml": "[project\nname = 'x'\n"}, r"^pyproject.toml: not valid TOML \("),
    ({"tox.toml": "env_list = [\n"}, r"^tox.toml: not valid TOML \("),
    ({"setup.py": "", "tox.ini": "[testenv]\ncommands = make test\n"},
     r"^tox.ini: the test command of env 'py' names no runner Volt knows \(pytest, python -m unittest\): "
     r"make test$"),
    ({"setup.py": "", "tox.ini": "[testenv]\ncommands = python setup.py test\n"}, r"names no runner Volt knows"),
    ({"setup.py": "", "tox.ini": "[testenv]\ncommands = pytest 'unclosed\n"},
     r"^tox.ini: commands of env 'py' cannot be split into words"),
    ({"setup.py": "", "tox.ini": "[testenv]\ndeps = -r ../outside.txt\ncommands = pytest\n"},
     r"^tox.ini: names '../outside.txt', which is not a file inside the repository$"),
    ({"setup.py": "", "tox.ini": "[testenv]\ndeps = -i 'https://x\ncommands = pytest\n"},
     r"^tox.ini: deps line cannot be split into words \(No closing quotation\): -i 'https://x$"),
    ({"setup.py": "", "tox.ini": "[testenv]\ndeps = -r missing.txt\ncommands = pytest\n"},
     r"^tox.ini: names missing.txt, which does not exist$"),
    ({"pyproject.toml": "[tool.tox]\nenv_list = 'py'\n"}, r"^pyproject.toml \[tool.tox\]: env_list must be a list"),
    ({"pyproject.toml": "[tool.tox.env_run_base]\ncommands = ['pytest']\n"},
     r"^pyproject.toml \[tool.tox\]: 'commands' of env 'py' must be a list of commands"),
])
def test_bad_input_is_one_line_naming_the_file(tmp_path: Path, files: dict[str, str], message: str) -> None:
    with pytest.raises(DetectError, match=message) as caught:
        detect(write_tree(tmp_path, files))
    assert "\n" not in str(caught.value)


def test_files_are_read_bounded_and_never_through_a_link(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("pytest\n")
    tree = write_tree(tmp_path / "tree",
                      {"setup.py": "", "tox.ini": "[testenv]\ndeps = -r reqs.txt\ncommands = pytest\n"})
    os.symlink(outside, tree / "reqs.txt")
    with pytest.raises(DetectError, match=r"^reqs.txt: cannot be read"):
        detect(tree)
    (tree / "reqs.txt").unlink()
    os.symlink(outside, tree / "requirements-test.txt")
    (tree / "tox.ini").unlink()
    with pytest.raises(DetectError, match=r"^requirements-test.txt: cannot be read"):
        detect(tree)
    (tree / "requirements-test.txt").unlink()
    (tree / "pyproject.toml").write_text("# " + "x" * MAX_BYTES + "\n")
    with pytest.raises(DetectError, match=rf"^pyproject.toml: larger than {MAX_BYTES} bytes$"):
        detect(tree)


def test_plan_as_json_and_as_text(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, {"setup.py": "", "tox.ini": "[testenv]\ndeps = pytest\nsetenv = A=1\n"
                                                             "commands = pytest -x {posargs}\n"})
    plan = detect(tree)
    assert json.loads(json.dumps(plan.to_json())) == {
        "runner": "pytest", "setup": [[*PIP, "pytest"], [*PIP, "."]], "pytest_args": ["-x"], "installs": 1,
        "start_dir": ".",
        "pattern": "test*.py", "top_level_dir": None, "names": [], "patterns": [], "env": {"A": "1"},
        "notes": plan.notes,
        "commands": [],
        "ignore_errors": False,
        "project": {"step": 1, "editable": False, "extras": [],
                    "build": {"requires": ["setuptools>=40.8.0"], "backend": "setuptools.build_meta:__legacy__",
                              "backend_path": []}}}
    text = describe(plan)
    assert text.splitlines()[-1] == "tests: pytest -x" and "setup: python -m pip install pytest" in text
    assert "the project's wheel: setuptools.build_meta:__legacy__, with setuptools>=40.8.0" in text
    assert all(line.startswith("[volt: ") for line in text.splitlines()[:len(plan.notes)])


# ---------------------------------------------------------------- volt detect


def volt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voltci", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env=child_env(), stdin=subprocess.DEVNULL)


@pytest.mark.e2e
def test_volt_detect_prints_the_plan(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, {
        "pyproject.toml": PYPROJECT + "[project.optional-dependencies]\ntesting = ['pytest']\n",
        "tox.ini": "[tox]\nenvlist = py311\n[testenv]\nextras = testing\n"
                   "commands = coverage run -m unittest discover -s tests\n"})
    proc = volt("detect", str(tree), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["runner"] == "unittest" and data["start_dir"] == "tests"
    assert data["setup"] == [[*PIP, ".[testing]"]]
    proc = volt("detect", str(tree), "--python", "3.11")
    assert proc.returncode == 0
    assert proc.stdout.splitlines()[:2] == ["[volt: the plan for Python 3.11, as --python asks]",
                                            "[volt: tox.ini: env 'py311', the one for Python 3.11 in env_list]"]
    assert "tests: python -m unittest discover -s tests -p 'test*.py'" in proc.stdout


@pytest.mark.e2e
def test_volt_detect_shows_the_plan_for_this_hosts_python_and_why_that_env(tmp_path: Path) -> None:
    """Not the newest Python the tox config names: the one a build on this host runs, and the env for it."""
    own = f"{sys.version_info.major}.{sys.version_info.minor}"
    tree = write_tree(tmp_path, {"setup.py": "", "tox.ini": f"[tox]\nenvlist = py3.15, py37, py{own.replace('.', '')}\n"
                                                             "[testenv]\ncommands = pytest\n"
                                                             "[testenv:py3.15]\ncommands = pytest -x\n"})
    proc = volt("detect", str(tree))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == (f"[volt: the plan for Python {own}, this host's own, as a build here without a .volt.toml "
                        "has it]")
    assert lines[1] == f"[volt: tox.ini: env 'py{own.replace('.', '')}', the one for Python {own} in env_list]"
    assert json.loads(volt("detect", str(tree), "--json").stdout)["python"] == own
    proc = volt("detect", str(tree), "--python", "3.9")
    assert "env 'py3.15', the first CPython env of env_list (none is for Python 3.9)" in proc.stdout


@pytest.mark.parametrize("files, args, fragment", [
    ({"setup.py": "", "tox.ini": "[testenv]\ncommands = nosetests\n"}, [], "tox.ini: the test command of env 'py'"),
    ({"pyproject.toml": "[dependency-groups]\ntest = [{include-group = 'test'}]\n"}, [],
     "pyproject.toml: dependency group 'test' includes itself"),
    ({}, ["--python", "three"], "--python must be a version like 3.12"),
])
@pytest.mark.e2e
def test_volt_detect_bad_input_is_one_line_and_exit_2(tmp_path: Path, files: dict[str, str], args: list[str],
                                                      fragment: str) -> None:
    proc = volt("detect", str(write_tree(tmp_path, files)), "--json", *args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout == "" and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("volt: ") and fragment in proc.stderr


@pytest.mark.e2e
def test_volt_detect_of_a_missing_directory(tmp_path: Path) -> None:
    proc = volt("detect", str(tmp_path / "nope"))
    assert proc.returncode == 2 and proc.stderr == f"volt: {tmp_path / 'nope'}: not a directory\n"
