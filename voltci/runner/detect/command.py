"""A maintainers' test command, read as argv: which runner it names and the arguments that matter.

Wrappers that only measure (`coverage run -m pytest`, `--cov=...`) are taken off: Volt records tests,
not coverage, and a coverage threshold must not fail a build whose tests passed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

PYTHON = re.compile(r"(.*/)?python(3(\.\d+)?)?$")
COVERAGE_RUN_VALUE_OPTIONS = {"--source", "--rcfile", "--concurrency", "--context", "--omit", "--include",
                              "--data-file"}
COVERAGE_TOOLS = {"erase", "combine", "report", "xml", "html", "json", "lcov", "annotate", "debug"}
PYTEST_DROPPED = ("--cov", "--no-cov", "--junitxml", "--junit-xml")
PYTEST_VALUE_OPTIONS = {"--cov", "--cov-report", "--cov-config", "--cov-fail-under", "--cov-context", "--junitxml",
                        "--junit-xml"}
UNITTEST_VALUE_OPTIONS = {"-k", "--durations"}


@dataclass(frozen=True)
class RunnerCommand:
    runner: str | None  # "pytest", "unittest", "coverage" (a report step, ignored), or None: not a test runner
    pytest_args: list[str] = field(default_factory=list)
    start_dir: str = "."
    pattern: str = "test*.py"
    top_level_dir: str | None = None
    names: list[str] = field(default_factory=list)  # unittest: the tests named (`python -m unittest a.b a.c`)
    patterns: list[str] = field(default_factory=list)  # unittest: `-k PATTERN`, the tests it keeps by name
    dropped: list[str] = field(default_factory=list)  # arguments left out, for the build log


def classify(argv: list[str]) -> RunnerCommand:
    """What `argv` runs; RunnerCommand(None) for anything that is not pytest, unittest or coverage."""
    if not argv:
        return RunnerCommand(None)
    head, rest = argv[0], argv[1:]
    if head in ("pytest", "py.test") or head.endswith(("/pytest", "/py.test")):
        return _pytest(rest)
    if head == "coverage" or head.endswith("/coverage"):
        return _coverage(rest)
    if PYTHON.fullmatch(head):
        module, args = _python_module(rest)
        if module in ("pytest", "py.test"):
            return _pytest(args)
        if module == "unittest":
            return _unittest(args)
        if module == "coverage":
            return _coverage(args)
    return RunnerCommand(None)


def _python_module(args: list[str]) -> tuple[str | None, list[str]]:
    """`python [-X dev] [-W error] -m module args...` -> (module, args)."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-m" and i + 1 < len(args):
            return args[i + 1], args[i + 2:]
        if arg.startswith("-m") and len(arg) > 2:
            return arg[2:], args[i + 1:]
        if arg in ("-X", "-W"):
            i += 2
        elif arg.startswith("-") and arg not in ("-c", "-"):
            i += 1
        else:
            return None, []
    return None, []


def _coverage(args: list[str]) -> RunnerCommand:
    if not args:
        return RunnerCommand(None)
    if args[0] in COVERAGE_TOOLS:
        return RunnerCommand("coverage")
    if args[0] != "run":
        return RunnerCommand(None)
    i = 1
    while i < len(args):
        arg = args[i]
        if arg == "-m" and i + 1 < len(args):
            inner = classify(["python", "-m", *args[i + 1:]])
            dropped = ["coverage run"] if inner.runner else []
            return replace(inner, dropped=dropped + inner.dropped)
        i += 2 if arg in COVERAGE_RUN_VALUE_OPTIONS else 1
        if not arg.startswith("-"):
            return RunnerCommand(None)  # `coverage run script.py`
    return RunnerCommand(None)


def _pytest(args: list[str]) -> RunnerCommand:
    kept: list[str] = []
    dropped: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name = arg.split("=", 1)[0]
        if name.startswith(PYTEST_DROPPED):
            dropped.append(arg)
            # `--cov src`, `--cov-report term`: these take the next word as their value
            if "=" not in arg and name in PYTEST_VALUE_OPTIONS and i + 1 < len(args) \
                    and not args[i + 1].startswith("-"):
                dropped.append(args[i + 1])
                i += 1
        else:
            kept.append(arg)
        i += 1
    return RunnerCommand("pytest", kept, dropped=dropped)


def _unittest(args: list[str]) -> RunnerCommand:
    """`python -m unittest [discover] ...`: the discovery root decides the test ids, so keep it; tests
    named (`python -m unittest pkg.tests.test_x pkg.tests.test_y.T.test_z`, or a file's path) are those
    tests alone, loaded by name as unittest loads them; with none named, unittest discovers from `.`."""
    if args and args[0] == "discover":
        return _discover(args[1:])
    names: list[str] = []
    patterns: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in UNITTEST_VALUE_OPTIONS:
            patterns += args[i + 1:i + 2] if arg == "-k" else []
            i += 2
            continue
        if arg.startswith("-k") and len(arg) > 2:
            patterns.append(arg[2:])
        elif not arg.startswith("-"):
            names.append(arg)
        i += 1
    return RunnerCommand("unittest", names=names, patterns=patterns)


def _discover(args: list[str]) -> RunnerCommand:
    values = {"-s": ".", "-p": "test*.py", "-t": None}
    long_names = {"--start-directory": "-s", "--pattern": "-p", "--top-level-directory": "-t"}
    positional: list[str] = []
    patterns: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name, _, inline = arg.partition("=")
        name = long_names.get(name, name)
        if name in values:
            if inline:
                values[name] = inline
            elif i + 1 < len(args):
                values[name] = args[i + 1]
                i += 1
        elif arg.startswith(tuple(values)) and len(arg) > 2:
            values[arg[:2]] = arg[2:]
        elif arg in UNITTEST_VALUE_OPTIONS:
            patterns += args[i + 1:i + 2] if arg == "-k" else []
            i += 1
        elif arg.startswith("-k") and len(arg) > 2:
            patterns.append(arg[2:])
        elif not arg.startswith("-"):
            positional.append(arg)
        i += 1
    for key, value in zip(("-s", "-p", "-t"), positional, strict=False):
        values[key] = value
    return RunnerCommand("unittest", start_dir=_clean(values["-s"] or "."), pattern=values["-p"] or "test*.py",
                         top_level_dir=_clean(values["-t"]) if values["-t"] else None, patterns=patterns)


def _clean(path: str) -> str:
    """`./tests/` -> `tests`; `.` stays."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    return "/".join(parts) or "."
