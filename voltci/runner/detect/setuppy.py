"""setup.py read as data, never run: the `test_suite` its `setup()` call names — what `python setup.py
test` ran, before setuptools removed that command — and the unittest discovery that runs the same tests.

A project of that era says where its tests are nowhere else (`test_suite='pkg.tests.test_suite'`, the
tests inside the package, each module's `load_tests` building its suite). Discovery of the package it
names, from the directory that holds the top package (`.` or `src`), loads the same modules under the
same names: their `load_tests` decide what runs, as they do for unittest's own loader.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from voltci.runner import untrusted
from voltci.runner.detect.files import DetectError, exists, read_text

ROOTS = (".", "src", "lib")  # where a setup.py's top packages lie (package_dir={'': 'src'})


@dataclass(frozen=True)
class Suite:
    named: str            # as setup.py names it
    start_dir: str        # unittest discovery of it
    top_level_dir: str
    pattern: str = "test*.py"


def test_suite(tree: Path) -> Suite | None:
    """The suite setup.py's `setup(test_suite=...)` names, as discovery finds it; None without one."""
    named = _named(tree)
    return _found(tree, named) if named else None


def _named(tree: Path) -> str | None:
    if not exists(tree, "setup.py"):
        return None
    try:
        module = ast.parse(read_text(tree, "setup.py") or "", "setup.py")
    except (DetectError, SyntaxError, ValueError, RecursionError, MemoryError):
        return None  # setup.py is no file Volt reads for anything else: a fault here only means no suite
    for node in ast.walk(module):
        if isinstance(node, ast.Call) and _callee(node.func) == "setup":
            for keyword in node.keywords:
                value = keyword.value
                if keyword.arg == "test_suite" and isinstance(value, ast.Constant) and isinstance(value.value, str):
                    return value.value.strip() or None
    return None


def _callee(func: ast.expr) -> str:
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _found(tree: Path, named: str) -> Suite | None:
    """The package or module of `named` (a dotted name, maybe ending in a function) below one of ROOTS."""
    parts = named.split(".")
    if not all(part.isidentifier() for part in parts):
        return None
    for root in ROOTS:
        base = tree if root == "." else tree / root
        for end in range(len(parts), 0, -1):
            where = "/".join(parts[:end])
            if untrusted.kind(base / where / "__init__.py", tree) == "file":
                return Suite(named, _join(root, where), root)
            if untrusted.kind(base / f"{where}.py", tree) == "file":
                parent = "/".join(parts[:end - 1])
                return Suite(named, _join(root, parent) if parent else root, root, f"{parts[end - 1]}.py")
    return None


def _join(root: str, relative: str) -> str:
    return relative if root == "." else f"{root}/{relative}"
