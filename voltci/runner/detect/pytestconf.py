"""Where a project configures pytest: a project that does wants its tests run by pytest.

pytest reads its own configuration, so Volt only needs to know whether there is one (and which, for
the build log); it never passes test paths of its own, which would lose the doctests a config collects
(`--doctest-modules`) and the markers it deselects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from voltci.runner.detect.files import exists, read_ini, table

CONFTEST_DIRS = (".", "tests", "test", "testing")


def config_source(tree: Path, pyproject: dict[str, Any]) -> str | None:
    """The file (and section) that configures pytest, or None."""
    for name in ("pytest.ini", ".pytest.ini"):
        if exists(tree, name):
            return name
    if table(pyproject, "tool.pytest.ini_options") is not None:
        return "pyproject.toml [tool.pytest.ini_options]"
    if table(pyproject, "tool.pytest") is not None:
        return "pyproject.toml [tool.pytest]"
    for name, section in (("tox.ini", "pytest"), ("setup.cfg", "tool:pytest")):
        if exists(tree, name):
            parser = read_ini(tree, name)
            if parser is not None and parser.has_section(section):
                return f"{name} [{section}]"
    for folder in CONFTEST_DIRS:
        if exists(tree, f"{folder}/conftest.py"):
            return "conftest.py" if folder == "." else f"{folder}/conftest.py"
    return None
