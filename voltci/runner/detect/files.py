"""Reading a project's own files as data: bounded in size, never through a link, never executed.

Every file a commit holds is untrusted: a link could lead to a file of the host, and a huge file could
exhaust the runner. Each read here goes through untrusted.py and a size cap, and every fault is a
DetectError naming the file.
"""

from __future__ import annotations

import configparser
import tomllib
from pathlib import Path
from typing import Any

from voltci.runner import untrusted

MAX_BYTES = 1024 * 1024  # pyproject.toml, tox.ini, requirements files: far larger than any real one


class DetectError(Exception):
    """What cannot be read or makes no sense, in one line naming the file and the fault."""


def exists(tree: Path, name: str) -> bool:
    """Whether `name` is there (a link counts: reading it is what gets refused; one on the way hides it)."""
    return untrusted.kind(tree / name, tree) is not None


def read_text(tree: Path, name: str) -> str | None:
    """The text of `name` in `tree`, or None when there is no such file."""
    path = tree / name
    if not exists(tree, name):
        return None
    try:
        raw = untrusted.read_capped(path, tree, MAX_BYTES)
    except untrusted.TooLarge:
        raise DetectError(f"{name}: larger than {MAX_BYTES} bytes") from None
    except OSError as exc:
        raise DetectError(f"{name}: cannot be read ({exc.strerror or exc})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DetectError(f"{name}: not UTF-8 text") from None


def read_toml(tree: Path, name: str) -> dict[str, Any] | None:
    """The parsed TOML file, or None when there is none."""
    text = read_text(tree, name)
    if text is None:
        return None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DetectError(f"{name}: not valid TOML ({exc})") from None


def parse_ini(text: str, name: str) -> configparser.ConfigParser:
    """An ini file as tox and setuptools read it: no interpolation (tox uses its own `{}`)."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text, source=name)
    except configparser.Error as exc:
        first = str(exc).strip().splitlines()[0]
        raise DetectError(f"{name}: not a valid ini file ({first})") from None
    return parser


def read_ini(tree: Path, name: str) -> configparser.ConfigParser | None:
    text = read_text(tree, name)
    return None if text is None else parse_ini(text, name)


def table(data: dict[str, Any], dotted: str) -> dict[str, Any] | None:
    """`data["a"]["b"]` for "a.b", or None when any part is missing or not a table."""
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, dict) else None
