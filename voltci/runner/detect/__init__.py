"""Zero configuration: a Python project's tests found, set up and run as its maintainers run them.

Reads the project's own files as data (never runs setup.py or noxfile.py): the test environment its
maintainers defined in tox, else a PEP 735 dependency group, else an extra, else requirements files of
the usual names; the project itself installed last (so a project pytest depends on, like pluggy, is
tested in its own version); a uv.lock honoured through `uv export --frozen`; and the runner — pytest when
the project configures or depends on it, else unittest discovery from the root its command names.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from voltci.runner import untrusted
from voltci.runner.detect import command, pyproject, pytestconf, requirements, setuppy, tox
from voltci.runner.detect.files import DetectError
from voltci.runner.detect.requirements import canonical

__all__ = ["DetectError", "TestPlan", "describe", "detect"]

# The build environment's pip install: the setup steps written here start with it, installs.py knows them by it.
PIP = ("python", "-m", "pip", "install")
LOCKED_REQUIREMENTS = "volt-requirements.txt"
# What the plan's words may hold of the build's own directories, known only as it runs (buildplan.py).
PLACES = {"{tmp}": "the build's temporary directory", "{tree}": "the tree's path",
          "{site}": "the build environment's site-packages", "{venv}": "the build environment"}


@dataclass(frozen=True)
class ProjectInstall:
    """The setup step that installs the project itself (`pip install .[extras]`, or `-e`), and what its
    wheel is built with: the runner builds it with the project's own backend (wheel_builder.py)."""

    step: int                        # its index among the setup steps
    editable: bool
    extras: tuple[str, ...]
    build: pyproject.BuildSystem


@dataclass(frozen=True)
class PlanCommand:
    """One command of the maintainers' test environment, in its place: a test run (`pytest`,
    `unittest`: its tests are the build's) or a `step` (any other command, run in the tests' sandbox).
    `cwd` is where it runs: a directory of the tree, or `{tmp}/...` (tox's changedir)."""

    kind: str                        # "pytest", "unittest" or "step"
    argv: list[str]                  # as the maintainers wrote it (in the build venv's words), for the log
    pytest_args: list[str] = field(default_factory=list)
    start_dir: str = "."
    pattern: str = "test*.py"
    top_level_dir: str | None = None
    cwd: str = "."
    ignore_exit: bool = False        # tox's `- cmd`: its exit status stops nothing
    names: list[str] = field(default_factory=list)  # unittest: the tests it names, instead of discovery
    patterns: list[str] = field(default_factory=list)  # unittest: `-k`, the tests it keeps by name


@dataclass(frozen=True)
class TestPlan:
    """How to set up and run one project's tests, and why (notes, shown as `[volt: ...]` lines)."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    runner: str                      # "pytest" or "unittest"
    setup: list[list[str]]           # argv lists run in order in the build's venv: installers, then commands_pre
    pytest_args: list[str]           # the maintainers' pytest arguments, without "pytest" and {posargs}
    installs: int = 0                # how many of the first setup steps install the test dependencies alone
    start_dir: str = "."             # unittest discovery, from the maintainers' command
    pattern: str = "test*.py"
    top_level_dir: str | None = None
    names: list[str] = field(default_factory=list)       # unittest: the tests the command names, not discovery
    patterns: list[str] = field(default_factory=list)    # unittest: its `-k` patterns, the tests kept by name
    env: dict[str, str] = field(default_factory=dict)    # set_env of the tox env, placeholders resolved
    notes: list[str] = field(default_factory=list)       # what was detected and why, one short line each
    project: ProjectInstall | None = None                # the step that installs the project, if one does
    # every command of the tox environment, in order, when there is more to run than the one test run
    # above (several commands, a changedir, a `-`): empty otherwise
    commands: list[PlanCommand] = field(default_factory=list)
    ignore_errors: bool = False                          # tox's ignore_errors: each command runs whatever happened

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class _Needs:
    """What the test environment installs, gathered from whichever source declares it."""

    pip_args: list[str] = field(default_factory=list)  # requirements and -r/-c options for one pip install
    groups: list[str] = field(default_factory=list)
    extras: list[str] = field(default_factory=list)
    names: set[str] = field(default_factory=set)       # projects these bring in
    install: str = "wheel"                             # the project: "wheel", "editable" or "skip"
    said: list[str] = field(default_factory=list)      # for the note


def detect(tree: Path, tmp_dir: str = "{tmp}", *, python: str | None = None) -> TestPlan:
    """The plan for the project in `tree`; `python` ("3.12") picks that tox env when listed."""
    tree = Path(tree).resolve()
    if not tree.is_dir():
        raise DetectError(f"{tree}: not a directory")
    project = pyproject.load(tree)
    env = tox.load(tree, tmp_dir, python)
    notes: list[str] = []
    needs = _from_tox(tree, project, env) if env else _from_declarations(tree, project)
    notes.append(env.why if env else "no tox config: " + (", ".join(needs.said) or "no test dependencies declared"))
    if env:
        notes.append("test dependencies: " + (", ".join(needs.said) or "none"))
    runner, pre, commands = _runner(tree, project, env, needs, notes)
    installers, installs, installed = _installers(project, needs, tmp_dir, notes)
    if env:
        notes.extend(env.notes)
    return TestPlan(runner=runner.runner or "pytest", setup=installers + pre, installs=installs, project=installed,
                    pytest_args=runner.pytest_args, names=runner.names, patterns=runner.patterns,
                    start_dir=runner.start_dir, pattern=runner.pattern, top_level_dir=runner.top_level_dir,
                    env=_environment(env.set_env, env.source) if env else {}, notes=notes, commands=commands,
                    ignore_errors=bool(env and env.ignore_errors and commands))


# ---------------------------------------------------------------- what to install

def _from_tox(tree: Path, project: pyproject.Project, env: tox.ToxEnv) -> _Needs:
    needs = _Needs(install=env.install)
    for dep in env.deps:
        _add_dep(tree, project, needs, dep, env.source)
    for group in env.groups:
        needs.names |= project.names(project.group(group, env.source))
        needs.groups.append(group)
    for extra in env.extras:
        needs.names |= project.names(project.extra(extra, env.source))
        needs.extras.append(extra)
    needs.said = ([f"deps {', '.join(env.deps)}"] if env.deps else []) + \
                 ([f"dependency groups {', '.join(needs.groups)}"] if needs.groups else []) + \
                 ([f"extras {', '.join(needs.extras)}"] if needs.extras else [])
    return needs


def _add_dep(tree: Path, project: pyproject.Project, needs: _Needs, dep: str, source: str) -> None:
    option = requirements.file_option(dep)
    if option is not None:
        path = requirements.inside(_relative(option[1]), source)
        if option[0] == "-r":
            needs.names |= requirements.names_in_file(tree, path, source)
        needs.pip_args += [option[0], path]
        return
    # a requirement is one word for pip, markers and all; an option line (-e, --pre, -i URL) is words
    try:
        words = shlex.split(dep) if dep.startswith("-") else [dep]
    except ValueError as exc:
        raise DetectError(f"{source}: deps line cannot be split into words ({exc}): {dep}") from None
    spec = words[-1] if words else ""
    if spec == "." or spec.startswith(".["):  # the project itself: installed last
        for extra in requirements.extras_of("x" + spec[1:]):
            needs.names |= project.names(project.extra(extra, source))
            needs.extras += [] if extra in needs.extras else [extra]
        if "-e" in words and needs.install == "wheel":
            needs.install = "editable"
        return
    needs.pip_args += words
    needs.names |= project.names([dep])


def _relative(path: str) -> str:
    return path[2:] if path.startswith("./") else path


def _from_declarations(tree: Path, project: pyproject.Project) -> _Needs:
    """No tox: a test group, else a test extra, else requirements files of the usual names, else a group
    or extra that lists pytest."""
    needs = _Needs(install="wheel" if project.installable else "skip")
    for name in pyproject.TEST_NAMES:
        if canonical(name) in project.groups:
            written = project.group_names[canonical(name)]
            needs.groups.append(written)
            needs.names |= project.names(project.groups[canonical(name)])
            needs.said.append(f"dependency group '{written}' of pyproject.toml")
            return needs
    for name in pyproject.TEST_NAMES:
        if canonical(name) in project.extras:
            needs.extras.append(name)
            needs.names |= project.names(project.extras[canonical(name)])
            needs.said.append(f"extra '{name}' ({project.extras_from})")
            return needs
    files = requirements.usual_files(tree)
    for path in files:
        needs.pip_args += ["-r", path]
        needs.names |= requirements.names_in_file(tree, path, path)
    if files:
        needs.said.append(f"requirements {', '.join(files)}")
        return needs
    # last: a group or extra of another name that lists pytest (idna's `all`)
    for key, reqs in project.groups.items():
        if "pytest" in project.names(reqs):
            needs.groups.append(project.group_names[key])
            needs.names |= project.names(reqs)
            needs.said.append(f"dependency group '{project.group_names[key]}' of pyproject.toml, which lists pytest")
            return needs
    for key, reqs in project.extras.items():
        if "pytest" in project.names(reqs):
            needs.extras.append(key)
            needs.names |= project.names(reqs)
            needs.said.append(f"extra '{key}' ({project.extras_from}), which lists pytest")
            return needs
    return needs


def _installers(project: pyproject.Project, needs: _Needs, tmp: str,
                notes: list[str]) -> tuple[list[list[str]], int, ProjectInstall | None]:
    """pip (and uv for a lock) commands: the test dependencies, then the project itself, last; how
    many of them install the dependencies alone; and the one that installs the project."""
    setup: list[list[str]] = []
    groups = needs.groups
    if project.has_uv_lock:
        locked = f"{tmp}/{LOCKED_REQUIREMENTS}"
        export = ["python", "-m", "uv", "export", "--frozen", "--no-hashes", "--no-emit-project",
                  "--no-default-groups"]
        export += [word for g in groups for word in ("--group", g)]
        export += [word for e in needs.extras for word in ("--extra", e)]
        setup += [[*PIP, "uv"], [*export, "-o", locked], [*PIP, "-r", locked]]
        notes.append("uv.lock: the versions it pins, through `uv export --frozen`")
        groups = []
    elif groups:
        setup.append([*PIP, "-U", "pip>=25.1"])  # the first pip that installs dependency groups
    pip_args = needs.pip_args + [word for g in groups for word in ("--group", g)]
    if pip_args:
        setup.append([*PIP, *pip_args])
    installs = len(setup)
    installed = None
    if needs.install != "skip":
        spec = "." + (f"[{','.join(needs.extras)}]" if needs.extras else "")
        editable = needs.install == "editable"
        installed = ProjectInstall(len(setup), editable, tuple(needs.extras), pyproject.build_system(project))
        setup.append([*PIP, "-e", spec] if editable else [*PIP, spec])
        notes.append(f"the project: pip install {'-e ' if editable else ''}{spec}, last, "
                     "so its own version is the one tested")
    elif project.src_layout:
        notes.append("the project is not installed (the tox env skips it), although its code is under src/")
    return setup, installs, installed


# ---------------------------------------------------------------- how to run

def _runner(tree: Path, project: pyproject.Project, env: tox.ToxEnv | None, needs: _Needs,
            notes: list[str]) -> tuple[command.RunnerCommand, list[list[str]], list[PlanCommand]]:
    """The runner and its arguments, the steps to run before the tests (commands_pre...), and every
    command of the tox environment in order when there is more than one test run to do."""
    pre = [_in_venv(argv) for argv in (env.commands_pre if env else [])]
    if env and env.commands:
        return _tox_commands(env, needs, notes, pre)

    config = pytestconf.config_source(tree, project.pyproject)
    in_deps = any(n == "pytest" or n.startswith("pytest-") for n in needs.names)
    if config or in_deps:
        found = command.RunnerCommand("pytest")
        notes.append(f"runner: pytest, configured in {config}" if config else
                     "runner: pytest, among the test dependencies")
        _need_pytest(found, needs, notes)
        return found, pre, []
    named = setuppy.test_suite(tree)
    if named is not None:
        notes.append(f"runner: unittest discovery of {named.start_dir}, the test_suite '{named.named}' of setup.py "
                     "(what `setup.py test` ran)")
        return command.RunnerCommand("unittest", start_dir=named.start_dir, pattern=named.pattern,
                                     top_level_dir=named.top_level_dir), pre, []
    start = next((d for d in ("tests", "test") if untrusted.kind(tree / d, tree) == "dir"
                  and untrusted.kind(tree / d / "__init__.py", tree) is None), ".")
    notes.append("runner: unittest discovery (no pytest config or dependency)"
                 + (f", from {start}/ (not a package)" if start != "." else ""))
    return command.RunnerCommand("unittest", start_dir=start), pre, []


def _tox_commands(env: tox.ToxEnv, needs: _Needs, notes: list[str],
                  pre: list[list[str]]) -> tuple[command.RunnerCommand, list[list[str]], list[PlanCommand]]:
    """Every command of the environment in its place, as tox runs them: test runs (their tests are the
    build's), coverage's own commands left out (Volt records tests, not coverage), installs before the
    first test run done as setup steps (the environment is read-only while the tests run), and any
    other command a step in the tests' sandbox. The first test run is the build's runner."""
    classified = [(argv, command.classify(argv)) for argv in env.commands]
    runs = [n for n, (_, found) in enumerate(classified) if found.runner in ("pytest", "unittest")]
    if not runs:
        shown = next((a for a, found in classified if found.runner != "coverage"), env.commands[0])
        raise DetectError(f"{env.source}: the test command of env '{env.name}' names no runner Volt knows "
                          f"(pytest, python -m unittest): {shlex.join(shown)}")
    first = classified[runs[0]][1]
    notes.append(f"runner: {first.runner}, from the test command `{shlex.join(classified[runs[0]][0])}`"
                 + (f" (left out: {' '.join(first.dropped)})" if first.dropped else ""))
    _need_pytest(first, needs, notes)
    setup: list[list[str]] = []
    commands: list[PlanCommand] = []
    said: list[str] = []
    for number, (argv, found) in enumerate(classified):
        ignore = number in env.ignored
        written = f"`{shlex.join(argv)}`" + (" (`-`: its exit status ignored)" if ignore else "")
        if found.runner == "coverage":
            said.append(f"{written}: left out (coverage's own; Volt records tests, not coverage)")
        elif number < runs[0] and _installs(argv):
            setup.append(_in_venv(argv))
            said.append(f"{written}: a setup step (it installs, before the tests)")
        elif found.runner in ("pytest", "unittest"):
            _need_pytest(found, needs, notes)
            commands.append(PlanCommand(found.runner, _in_venv(argv), found.pytest_args, found.start_dir,
                                        found.pattern, found.top_level_dir, env.change_dir, ignore, found.names,
                                        found.patterns))
            said.append(f"{written}: {found.runner}, its tests are the build's"
                        + (f" (left out: {' '.join(found.dropped)})" if found.dropped else ""))
        else:
            commands.append(PlanCommand("step", _in_venv(argv), cwd=env.change_dir, ignore_exit=ignore))
            said.append(f"{written}: run as a step, in its place, in the tests' sandbox")
    if len(commands) == 1 and commands[0].cwd == "." and not commands[0].ignore_exit:
        commands = []  # one test run in the tree: the build's suite, which can be split and run again by id
        if len(env.commands) > 1:
            notes.extend(f"{env.source}: command {n} of env '{env.name}': {line}" for n, line in enumerate(said, 1))
    else:
        notes.extend(f"{env.source}: command {n} of env '{env.name}': {line}" for n, line in enumerate(said, 1))
        if env.ignore_errors:
            notes.append(f"{env.source}: env '{env.name}' sets ignore_errors: every command runs, whatever the "
                         "ones before it did")
    return first, pre + setup, commands


def _installs(argv: list[str]) -> bool:
    """`pip install ...`, `python -m pip install ...`, `uv pip install ...`: a command that installs."""
    words = _in_venv(argv)
    return words[:4] == ["python", "-m", "pip", "install"] or words[:3] == ["uv", "pip", "install"]


def _need_pytest(found: command.RunnerCommand, needs: _Needs, notes: list[str]) -> None:
    """A pytest project that lists no pytest gets it installed with its test dependencies."""
    if found.runner == "pytest" and not any(n == "pytest" or n.startswith("pytest-") for n in needs.names):
        needs.pip_args.append("pytest")
        needs.names.add("pytest")
        notes.append("pytest is not among the test dependencies: installed with them")


def _environment(set_env: dict[str, str], source: str) -> dict[str, str]:
    """set_env as the tests get it: `{env:PYTHONPATH}{:}.` with no PYTHONPATH of its own is just `.`. A
    variable no build may set (untrusted.LOADER_VARIABLES) is a DetectError naming it and the file."""
    try:
        untrusted.check_variables(set_env, f"{source}: set_env")
    except untrusted.RefusedVariable as exc:
        raise DetectError(str(exc)) from None
    out = {}
    for key, value in set_env.items():
        value = value.strip()
        if key.endswith("PATH") and ":" in value:
            value = ":".join(part for part in value.split(":") if part)
        out[key] = value
    return out


def _in_venv(argv: list[str]) -> list[str]:
    """`pip ...` -> `python -m pip ...`, `python3.12` -> `python`: the build venv's own."""
    head = argv[0].rsplit("/", 1)[-1]
    if head in ("pip", "pip3"):
        return ["python", "-m", "pip", *argv[1:]]
    if command.PYTHON.fullmatch(head):
        return ["python", *argv[1:]]
    return list(argv)


def describe(plan: TestPlan) -> str:
    """The plan in a few lines a person reads: the notes, the setup steps, the test command."""
    lines = [f"[volt: {note}]" for note in plan.notes]
    words = " ".join(word for argv in [*plan.setup, *(c.argv for c in plan.commands), plan.pytest_args]
                     for word in argv)
    named = [f"{name} is {what}" for name, what in PLACES.items() if name in words]
    if named:
        lines.append(f"[volt: {'; '.join(named)}: filled in as the build runs]")
    lines += [f"setup: {shlex.join(step)}" for step in plan.setup]
    if plan.project is not None:
        build = plan.project.build
        lines.append(f"the project's wheel: {build.backend}, with {', '.join(build.requires) or 'nothing installed'}")
    lines += [f"env: {key}={value}" for key, value in plan.env.items()]
    if plan.commands:
        for number, step in enumerate(plan.commands, 1):
            where = f" (in {step.cwd})" if step.cwd != "." else ""
            kind = "tests" if step.kind != "step" else "step"
            lines.append(f"command {number}, {kind}{where}: {shlex.join(step.argv)}"
                         + (" (exit status ignored)" if step.ignore_exit else ""))
        if plan.ignore_errors:
            lines.append("every command runs, whatever the ones before it did (ignore_errors)")
    elif plan.runner == "pytest":
        lines.append("tests: " + shlex.join(["pytest", *plan.pytest_args]))
    elif plan.names:
        lines.append("tests: " + shlex.join(["python", "-m", "unittest", *_k(plan.patterns), *plan.names]))
    else:
        top = ["-t", plan.top_level_dir] if plan.top_level_dir else []
        lines.append("tests: " + shlex.join(["python", "-m", "unittest", "discover", "-s", plan.start_dir,
                                             "-p", plan.pattern, *top, *_k(plan.patterns)]))
    return "\n".join(lines)


def _k(patterns: list[str]) -> list[str]:
    """unittest's `-k` options for `patterns`."""
    return [word for pattern in patterns for word in ("-k", pattern)]
