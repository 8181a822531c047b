"""A repository's own `.volt.toml`: how its tests run. Read from the commit being built, so changing
it is part of the commit. Every mistake in it is a ProjectConfigError that names the key, which
the runner turns into a build `error` — never a crash of the runner.

    python = "3.11"                     # optional: an interpreter the runner host has
    [matrix]                            # optional: one leg per interpreter and variable set (matrix.py)
    python = ["3.11", "3.12"]
    env = [{DJANGO = "4.2"}, {DJANGO = "5.1"}]
    [tests]
    timeout = 600                       # seconds, whole build (setup included)
    setup = [["python", "-m", "pip", "install", "-e", "."]]
    command = ["python", "-m", "pytest", "-q", "--junitxml", "report.xml"]
    junit = "report.xml"                # where `command` writes per-test results
    runner = "pytest"                   # or "unittest" (discovery, below)
    args = ["-q", "tests"]              # pytest's arguments, as the maintainers give them
    # or unittest discovery (the default when there is no command):
    start_dir = "tests"
    top_level_dir = "."
    pattern = "test*.py"
    retries = 1                         # runs of a failed test on its own (unittest discovery)
    prepass = true                      # likely failures first, then the suite (default: the runner's)
    network = false                     # tests get only a loopback of their own
    [setup]
    network = false                     # setup steps too (default true: pip needs it)
    memory = "2G"                       # what the build may use, within the runner's build_memory
    processes = 512                     # processes and threads at once, within build_processes
    disk = "10G"                        # tree, environment and temporary files, within build_disk
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from voltci.models import Leg
from voltci.runner import untrusted
from voltci.runner.matrix import PYTHON_VERSION, MatrixError, parse_matrix
from voltci.sizes import BadLimit, parse_disk, parse_processes, parse_size

FILE_NAME = ".volt.toml"
MAX_SIZE = 64 * 1024
TOP_KEYS = {"python", "tests", "matrix", "setup"}
SETUP_KEYS = {"network"}
TEST_KEYS = {"timeout", "setup", "command", "junit", "start_dir", "top_level_dir", "pattern", "retries", "network",
             "memory", "prepass", "processes", "disk", "runner", "args"}
RUNNERS = ("pytest", "unittest")
MAX_RETRIES = 5


class ProjectConfigError(Exception):
    """What is wrong with a repository's .volt.toml, in one line."""


@dataclass(frozen=True)
class ProjectConfig:
    python: str | None = None
    timeout: float | None = None
    setup: list[list[str]] = field(default_factory=list)
    command: list[str] | None = None
    junit: str | None = None
    start_dir: str = "."
    top_level_dir: str | None = None
    pattern: str = "test*.py"
    retries: int | None = None  # None: the runner's setting
    prepass: bool | None = None  # None: the runner's setting
    network: bool = True  # for the tests
    setup_network: bool = True  # for the setup steps ([setup] network)
    memory_bytes: int | None = None  # None: the runner's build_memory
    processes: int | None = None  # None: the runner's build_processes
    disk_bytes: int | None = None  # None: the runner's build_disk
    runner: str | None = None  # "pytest" or "unittest"; None: as detected
    args: list[str] = field(default_factory=list)  # pytest's arguments
    given: frozenset[str] = frozenset()  # the [tests] keys the file sets: the rest is detected
    matrix: tuple[Leg, ...] = ()  # the legs of its [matrix]; none: the build is one run, as without it


def load(tree: Path) -> ProjectConfig:
    """The config of the checked-out commit in `tree` (the defaults when it has no .volt.toml)."""
    path = tree / FILE_NAME
    if untrusted.kind(path, tree) is None:
        return ProjectConfig()
    try:
        raw = untrusted.read_capped(path, tree, MAX_SIZE)
    except untrusted.TooLarge:
        raise ProjectConfigError(f"{FILE_NAME} is larger than {MAX_SIZE} bytes") from None
    except OSError as exc:
        raise ProjectConfigError(f"{FILE_NAME} cannot be read: {exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProjectConfigError(f"{FILE_NAME} is not valid TOML: {exc}") from None
    return parse(data)


def parse(data: dict[str, Any]) -> ProjectConfig:
    _no_unknown(data, TOP_KEYS, "")
    tests = data.get("tests", {})
    if not isinstance(tests, dict):
        raise ProjectConfigError(f"{FILE_NAME}: 'tests' must be a table ([tests])")
    _no_unknown(tests, TEST_KEYS, "tests.")
    setup_table = data.get("setup", {})
    if not isinstance(setup_table, dict):
        raise ProjectConfigError(f"{FILE_NAME}: 'setup' must be a table ([setup]); the setup steps are 'tests.setup'")
    _no_unknown(setup_table, SETUP_KEYS, "setup.")
    setup_network = setup_table.get("network", True)
    if not isinstance(setup_network, bool):
        raise ProjectConfigError(f"{FILE_NAME}: 'setup.network' must be true or false, got {setup_network!r}")
    python = data.get("python")
    if python is not None and not (isinstance(python, str) and PYTHON_VERSION.fullmatch(python)):
        raise ProjectConfigError(f"{FILE_NAME}: 'python' must be a version like \"3.11\", got {python!r}")
    matrix: tuple[Leg, ...] = ()
    if "matrix" in data:
        if python is not None:
            raise ProjectConfigError(f"{FILE_NAME}: 'python' and 'matrix.python' exclude each other: list every "
                                     "version in 'matrix.python'")
        try:
            matrix = parse_matrix(data["matrix"])
        except MatrixError as exc:
            raise ProjectConfigError(f"{FILE_NAME}: {exc}") from None
    command = tests.get("command")
    if command is not None:
        command = _argv(command, "tests.command")
    junit = _relative_path(tests, "junit")
    if command is not None and junit is None:
        raise ProjectConfigError(f"{FILE_NAME}: 'tests.command' needs 'tests.junit', the JUnit XML file it writes")
    if junit is not None and command is None:
        raise ProjectConfigError(f"{FILE_NAME}: 'tests.junit' needs 'tests.command', the command that writes it")
    setup = tests.get("setup", [])
    if not isinstance(setup, list):
        raise ProjectConfigError(f"{FILE_NAME}: 'tests.setup' must be a list of commands (lists of strings)")
    timeout = tests.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ProjectConfigError(f"{FILE_NAME}: 'tests.timeout' must be a positive number of seconds, got {timeout!r}")
    retries = tests.get("retries")
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int)
                                or not 0 <= retries <= MAX_RETRIES):
        raise ProjectConfigError(f"{FILE_NAME}: 'tests.retries' must be a whole number from 0 to {MAX_RETRIES}")
    prepass = tests.get("prepass")
    if prepass is not None and not isinstance(prepass, bool):
        raise ProjectConfigError(f"{FILE_NAME}: 'tests.prepass' must be true or false, got {prepass!r}")
    network = tests.get("network", True)
    if not isinstance(network, bool):
        raise ProjectConfigError(f"{FILE_NAME}: 'tests.network' must be true or false, got {network!r}")
    memory_bytes, processes = _limit(tests, "memory", parse_size), _limit(tests, "processes", parse_processes)
    disk_bytes = _limit(tests, "disk", parse_disk)
    runner = tests.get("runner")
    if runner is not None and runner not in RUNNERS:
        raise ProjectConfigError(f"{FILE_NAME}: 'tests.runner' must be one of {', '.join(RUNNERS)}, got {runner!r}")
    args = tests.get("args", [])
    if not (isinstance(args, list) and all(isinstance(a, str) for a in args)):
        raise ProjectConfigError(f"{FILE_NAME}: 'tests.args' must be a list of strings, got {args!r}")
    if args and runner != "pytest":
        raise ProjectConfigError(f"{FILE_NAME}: 'tests.args' are pytest's arguments: it needs runner = \"pytest\"")
    if runner is not None and command is not None:
        raise ProjectConfigError(f"{FILE_NAME}: 'tests.runner' and 'tests.command' exclude each other")
    pattern = tests.get("pattern", "test*.py")
    if not isinstance(pattern, str) or not pattern or "/" in pattern:
        raise ProjectConfigError(f"{FILE_NAME}: 'tests.pattern' must be a file name pattern, got {pattern!r}")
    return ProjectConfig(
        python=python, timeout=float(timeout) if timeout is not None else None,
        setup=[_argv(step, f"tests.setup[{n}]") for n, step in enumerate(setup)],
        command=command, junit=junit,
        start_dir=_relative_path(tests, "start_dir") or ".", top_level_dir=_relative_path(tests, "top_level_dir"),
        pattern=pattern, retries=retries, prepass=prepass, network=network, setup_network=setup_network,
        memory_bytes=memory_bytes,
        processes=processes, disk_bytes=disk_bytes,
        runner=runner, args=list(args), given=frozenset(tests), matrix=matrix,
    )


def _limit(tests: dict[str, Any], key: str, parse: Callable[[Any], int]) -> int | None:
    if key not in tests:
        return None
    try:
        return parse(tests[key])
    except BadLimit as exc:
        raise ProjectConfigError(f"{FILE_NAME}: 'tests.{key}' {exc}") from None


def _no_unknown(table: dict[str, Any], known: set[str], prefix: str) -> None:
    for key in table:
        if key not in known:
            raise ProjectConfigError(f"{FILE_NAME}: unknown key '{prefix}{key}' (known: {', '.join(sorted(known))})")


def _argv(value: Any, name: str) -> list[str]:
    if not (isinstance(value, list) and value and all(isinstance(part, str) for part in value) and value[0]):
        raise ProjectConfigError(f"{FILE_NAME}: '{name}' must be a command as a list of strings, "
                                 f"like [\"python\", \"-m\", \"pytest\"], got {value!r}")
    return list(value)


def _relative_path(tests: dict[str, Any], key: str) -> str | None:
    value = tests.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ProjectConfigError(f"{FILE_NAME}: 'tests.{key}' must be a path, got {value!r}")
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts:
        raise ProjectConfigError(f"{FILE_NAME}: 'tests.{key}' must be a path inside the repository, got {value!r}")
    if any(part.lower() == ".git" for part in path.parts) or "\0" in value:
        raise ProjectConfigError(f"{FILE_NAME}: 'tests.{key}' may not name the repository's .git, got {value!r}")
    return value
