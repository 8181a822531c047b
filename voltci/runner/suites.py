"""How a build's test suite is started: unittest discovery (through collector.py) or pytest with the
maintainers' own arguments (through pytest_collector.py).

Both kinds do the same four things, so the steps of a build (run, list for a split, run a shard,
run failed tests again) never ask which kind they hold: each writes one JSON line per test to a
result file, and a summary line at the end — after the runs before it, with `append`, so that a build
of several test runs keeps one file its progress is read from.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from voltci.runner import collector, pytest_collector

COLLECTORS = (Path(collector.__file__), Path(pytest_collector.__file__))


@dataclass(frozen=True)
class Selection:
    """Which of the collected tests to run: all; only those listed in `only`; all but those listed in
    `others`; or the `ids` named (failed tests run again). `list_only`: collect, write ids, run none."""

    only: Path | None = None
    others: Path | None = None
    ids: tuple[str, ...] = ()
    ids_file: Path | None = None  # where `ids` are written for a kind that selects from a file
    list_only: bool = False


ALL = Selection()  # every collected test


@dataclass(frozen=True)
class Discovery:
    """unittest discovery's three arguments, as the maintainers give them; or the tests their command
    names (`python -m unittest pkg.tests.test_x`), loaded by name instead: those, not all."""

    start_dir: str = "."
    pattern: str = "test*.py"
    top_level_dir: str | None = None
    names: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()  # `-k`: only the tests whose names match one of these, as unittest keeps them
    kind = "unittest"

    def command(self, python: str, results: Path, selection: Selection = ALL, append: bool = False) -> list[str]:
        command = [python, collector.__file__, "--out", str(results), "--start-dir", self.start_dir,
                   "--pattern", self.pattern, *(["--append"] if append else [])]
        if self.top_level_dir:
            command += ["--top-level-dir", self.top_level_dir]
        if self.names and not selection.ids:
            command += ["--names", *self.names]
        command += [f"-k{pattern}" for pattern in self.patterns]  # attached: a pattern may begin with "-"
        if selection.ids:  # loaded by name: no second discovery for a few failed tests
            command += ["--tests", *selection.ids]
        if selection.only is not None:
            command += ["--only-file", str(selection.only)]
        if selection.others is not None:
            command += ["--except-file", str(selection.others)]
        if selection.list_only:
            command += ["--list"]
        return command

    def describe(self) -> str:
        chosen = [word for pattern in self.patterns for word in ("-k", pattern)]
        if self.names:
            return shlex.join(["python", "-m", "unittest", *chosen, *self.names])
        return f"python -m unittest discover -s {self.start_dir} -p '{self.pattern}'" + (
            f" -t {self.top_level_dir}" if self.top_level_dir else "") + (f" {shlex.join(chosen)}" if chosen else "")


@dataclass(frozen=True)
class Pytest:
    """pytest with the maintainers' arguments; tests are chosen after pytest's own collection, so its
    configuration (testpaths, doctests, deselected markers) holds for shards and re-runs too."""

    args: tuple[str, ...] = ()
    kind = "pytest"

    def command(self, python: str, results: Path, selection: Selection = ALL, append: bool = False) -> list[str]:
        command = [python, pytest_collector.__file__, "--out", str(results), *(["--append"] if append else [])]
        only = selection.only
        if selection.ids:
            if selection.ids_file is None:
                raise ValueError("pytest selects tests to run again from a file: give ids_file")
            selection.ids_file.write_text("\n".join(selection.ids) + "\n", encoding="utf-8")
            only = selection.ids_file
        if only is not None:
            command += ["--only-file", str(only)]
        if selection.others is not None:
            command += ["--except-file", str(selection.others)]
        if selection.list_only:
            command += ["--list"]
        return [*command, "--", *self.args]

    def describe(self) -> str:
        return shlex.join(["python", "-m", "pytest", *self.args])


Suite = Discovery | Pytest
