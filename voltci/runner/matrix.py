"""A `.volt.toml`'s `[matrix]`: the interpreters and variable sets a commit is built with, one leg per
combination, checked as strictly as the rest of the file (each mistake names its key).

    [matrix]
    python = ["3.10", "3.11", "3.12"]                 # required: at least one version
    env = [{DJANGO = "4.2"}, {DJANGO = "5.1"}]        # optional: variables each leg's processes get
    exclude = [{python = "3.10", DJANGO = "5.1"}]     # optional: combinations to drop (all keys must match)

The legs are the product of `python` and `env`, in that order (`py3.10-DJANGO=4.2`,
`py3.10-DJANGO=5.1`, …), less the excluded ones.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from voltci.models import Leg
from voltci.runner import untrusted

KEYS = {"python", "env", "exclude"}
PYTHON_VERSION = re.compile(r"3\.\d{1,2}")  # a Python as .volt.toml names one: its `python`, and the matrix's
VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
VALUE = re.compile(r"[^\s:]{0,100}")  # a leg's name carries its values: no spaces, no colons, short
MAX_LEGS = 64
# What the sandbox sets itself, and Volt's own: a leg's variables never replace them.
RESERVED = {"PATH", "HOME", "TMPDIR", "VIRTUAL_ENV", "PYTHONUNBUFFERED", "PYTHONHOME", "PYTHONPATH"}
RESERVED_PREFIXES = ("VOLT", "REDIS", "RQ_")


class MatrixError(ValueError):
    """What is wrong with `[matrix]`, in one line that names the key."""


def parse_matrix(table: Any) -> tuple[Leg, ...]:
    """The legs of a `[matrix]` table, in order; MatrixError names the key that is wrong."""
    if not isinstance(table, dict):
        raise MatrixError("'matrix' must be a table ([matrix])")
    for key in table:
        if key not in KEYS:
            raise MatrixError(f"unknown key 'matrix.{key}' (known: {', '.join(sorted(KEYS))})")
    if "python" not in table:
        raise MatrixError("'matrix.python' is required: the versions to build with, like [\"3.11\", \"3.12\"]")
    pythons = _versions(table["python"])
    envs = _envs(table["env"]) if "env" in table else [{}]
    names = sorted({name for env in envs for name in env})
    excludes = _excludes(table.get("exclude", []), names)
    legs = [Leg.of(python, env) for python, env in itertools.product(pythons, envs)
            if not any(_matches(rule, python, env) for rule in excludes)]
    if not legs:
        raise MatrixError("'matrix.exclude' removes every combination: nothing would be built")
    if len(legs) > MAX_LEGS:
        raise MatrixError(f"'matrix' makes {len(legs)} legs; at most {MAX_LEGS}")
    return tuple(legs)


def _versions(value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        raise MatrixError(f"'matrix.python' must be a non-empty list of versions like [\"3.11\", \"3.12\"], "
                          f"got {value!r}")
    for version in value:
        if not isinstance(version, str) or not PYTHON_VERSION.fullmatch(version):
            raise MatrixError(f"'matrix.python' must list versions as strings like \"3.12\", got {version!r}")
    if len(set(value)) != len(value):
        raise MatrixError(f"'matrix.python' lists a version twice: {value!r}")
    return list(value)


def _envs(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise MatrixError(f"'matrix.env' must be a non-empty list of tables like [{{DJANGO = \"5.1\"}}], "
                          f"got {value!r}")
    envs = []
    for n, env in enumerate(value):
        if not isinstance(env, dict):
            raise MatrixError(f"'matrix.env[{n}]' must be a table of variables like {{DJANGO = \"5.1\"}}, "
                              f"got {env!r}")
        envs.append({name: _variable(name, val, f"matrix.env[{n}]") for name, val in env.items()})
    if len({tuple(env.items()) for env in envs}) != len(envs):
        raise MatrixError("'matrix.env' lists the same variables twice")
    return envs


def _variable(name: Any, value: Any, where: str) -> str:
    if not isinstance(name, str) or not VARIABLE.fullmatch(name):
        raise MatrixError(f"'{where}': {name!r} is not a variable name (letters, digits and _, not first a digit)")
    if name in RESERVED or name.upper().startswith(RESERVED_PREFIXES):
        raise MatrixError(f"'{where}': {name} is set by Volt itself and cannot be a leg's variable")
    if untrusted.is_loader_variable(name):
        raise MatrixError(f"'{where}': {name} changes how programs are loaded or started; a build may not set it")
    if not isinstance(value, str) or not VALUE.fullmatch(value):
        raise MatrixError(f"'{where}.{name}' must be a string of at most 100 characters without spaces or "
                          f"colons, got {value!r}")
    return value


def _excludes(value: Any, names: list[str]) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise MatrixError(f"'matrix.exclude' must be a list of tables like [{{python = \"3.10\"}}], got {value!r}")
    rules = []
    for n, rule in enumerate(value):
        if not isinstance(rule, dict) or not rule:
            raise MatrixError(f"'matrix.exclude[{n}]' must be a table like {{python = \"3.10\"}}, got {rule!r}")
        for key, val in rule.items():
            if key != "python" and key not in names:
                raise MatrixError(f"'matrix.exclude[{n}]' names {key!r}, which is neither 'python' nor a "
                                  f"variable of 'matrix.env'")
            if not isinstance(val, str):
                raise MatrixError(f"'matrix.exclude[{n}].{key}' must be a string, got {val!r}")
        rules.append(dict(rule))
    return rules


def _matches(rule: dict[str, str], python: str, env: dict[str, str]) -> bool:
    return all((python if key == "python" else env.get(key)) == value for key, value in rule.items())
