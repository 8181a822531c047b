"""What a build runs: the commit's `.volt.toml` where it speaks, and where it is silent, what detection
reads from the project's own files (its tox environment, dependency groups, extras, requirements
files, pytest configuration).

Each part is decided on its own: the setup steps, the runner and its arguments (or unittest
discovery's), and the environment variables the tests need. A `.volt.toml` that gives the setup and
the runner leaves nothing to detect, so a project's unreadable tox.ini cannot fail a build that
does not use it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from voltci.runner.detect import PlanCommand, ProjectInstall, TestPlan, detect
from voltci.runner.installs import installs_key
from voltci.runner.project import FILE_NAME, ProjectConfig
from voltci.runner.suites import Discovery, Pytest, Suite

DISCOVERY_KEYS = {"start_dir", "pattern", "top_level_dir"}
TMP = "{tmp}"  # detection's name for the build's temporary directory
TREE = "{tree}"  # ... for the tree's path (tox's {toxinidir} when a changedir moves the commands)
VENV = "{venv}"  # ... for the environment's directory, known once the runner has it
SITE = "{site}"  # ... for its site-packages


@dataclass(frozen=True)
class Run:
    """One command of the build's test phase, in its place among the maintainers' commands: a test run
    (`suite`) or a step (`suite` None: `argv` runs as written). `cwd` is a directory of the tree, or of
    the build's temporary directory (`{tmp}/...`), tox's changedir."""

    argv: list[str]
    suite: Suite | None
    cwd: str = "."
    ignore_exit: bool = False  # tox's `- cmd`: its exit status stops nothing


@dataclass(frozen=True)
class BuildPlan:
    setup: list[list[str]]
    suite: Suite | None  # None: the project's own test command, results from its JUnit file
    env: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was detected and why
    installs: int = 0  # the first setup steps install the test dependencies alone (installs.py) ...
    installs_key: str | None = None  # ... and this stands for what they install
    project: ProjectInstall | None = None  # the step that installs the project, built as wheel_builder.py does
    runs: tuple[Run, ...] = ()  # the maintainers' commands in order, when there is more than `suite` to run
    keep_going: bool = False  # tox's ignore_errors: every run, whatever the ones before it did


def plan_build(config: ProjectConfig, tree: Path, tmp: str) -> BuildPlan:
    """The build's plan for `tree`; `tmp` is the build's temporary directory as its steps see it.
    Raises detect.DetectError when detection is needed and the project's files are wrong. The tox
    environment chosen is the one for the build's Python, when the project lists one."""
    given = config.given
    runner_given = config.command is not None or "runner" in given or bool(DISCOVERY_KEYS & given)
    found: TestPlan | None = None
    if "setup" not in given or not runner_given:
        python = config.python or f"{sys.version_info.major}.{sys.version_info.minor}"
        found = detect(tree, tmp_dir=TMP, python=python)
    setup = config.setup if "setup" in given or found is None else found.setup
    plan = BuildPlan(setup=setup, suite=_suite(config, found), env=dict(found.env) if found else {},
                     notes=list(found.notes) if found else [])
    if found is not None and found.commands and not runner_given:
        plan = replace(plan, runs=tuple(_run(command) for command in found.commands), keep_going=found.ignore_errors)
    if found is not None and "setup" not in given:
        key = installs_key(tree, found.setup[:found.installs])
        plan = replace(plan, installs=found.installs if key else 0, installs_key=key, project=found.project)
    if found is not None and "setup" in given:
        plan = replace(plan, notes=[*plan.notes, f"setup: as {FILE_NAME} says, instead"])
    return _filled(plan, tmp, tree)


def _suite(config: ProjectConfig, found: TestPlan | None) -> Suite | None:
    if config.command is not None:
        return None
    runner = config.runner or ("unittest" if DISCOVERY_KEYS & config.given else None) or \
        (found.runner if found else "unittest")
    if runner == "pytest":
        if "args" in config.given or found is None or found.runner != "pytest":
            return Pytest(tuple(config.args))
        return Pytest(tuple(found.pytest_args))
    if found is not None and found.runner == "unittest" and not DISCOVERY_KEYS & config.given:
        return Discovery(found.start_dir, found.pattern, found.top_level_dir, tuple(found.names),
                         tuple(found.patterns))
    return Discovery(config.start_dir, config.pattern, config.top_level_dir)


def _run(command: PlanCommand) -> Run:
    suite: Suite | None = None
    if command.kind == "pytest":
        suite = Pytest(tuple(command.pytest_args))
    elif command.kind == "unittest":
        suite = Discovery(command.start_dir, command.pattern, command.top_level_dir, tuple(command.names),
                          tuple(command.patterns))
    return Run(command.argv, suite, command.cwd, command.ignore_exit)


def _filled(plan: BuildPlan, tmp: str, tree: Path) -> BuildPlan:
    """Detection's `{tmp}` replaced with the build's temporary directory, `{tree}` with the tree's path."""
    return filled(plan, {TMP: tmp, TREE: str(tree)})


def with_environment(plan: BuildPlan, venv: Path, python: str) -> BuildPlan:
    """The plan with the environment's directories in (tox's {envdir}, {envsitepackagesdir}...): `venv`
    as the build's steps see it, `python` ("3.12") the version it was made with."""
    return filled(plan, {SITE: f"{venv}/lib/python{python}/site-packages", VENV: str(venv)})


def filled(plan: BuildPlan, values: dict[str, str]) -> BuildPlan:
    """Each of `values`' names replaced with its value, in every word a step or a test run is given."""
    def fill(text: str) -> str:
        for name, value in values.items():
            text = text.replace(name, value)
        return text

    def suite_of(suite: Suite | None) -> Suite | None:
        if isinstance(suite, Pytest):
            return Pytest(tuple(fill(arg) for arg in suite.args))
        if isinstance(suite, Discovery):
            return Discovery(fill(suite.start_dir), suite.pattern,
                             fill(suite.top_level_dir) if suite.top_level_dir else None,
                             tuple(fill(name) for name in suite.names), suite.patterns)
        return suite

    runs = tuple(replace(run, argv=[fill(word) for word in run.argv], suite=suite_of(run.suite)) for run in plan.runs)
    return replace(plan, setup=[[fill(word) for word in step] for step in plan.setup], suite=suite_of(plan.suite),
                   env={key: fill(value) for key, value in plan.env.items()}, runs=runs)
