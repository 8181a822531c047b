"""Test dependencies installed once per environment, not again by every build that reuses it.

Detection's first setup steps install the test dependencies alone (requirements files, tox deps,
dependency groups); the project itself is installed after them, by every build, since its code is
what changes from commit to commit. Those first steps are skipped in a reused environment where they
already succeeded with the same words and the same files: the key is a hash of the steps' words and
of every file they read — the project's configuration files (pyproject.toml, setup.cfg, setup.py,
tox.ini, tox.toml) and each requirements file a step names, following their `-r`/`-c` lines.

Nothing is cached that the key cannot see: steps that install a path of the tree (`./plugin`,
`-e sub`, a `file:` URL), in a step's words or in a requirements file, or that run anything but pip,
are run by every build. pip installs nothing new for a requirement it finds satisfied, so skipping
these steps changes no version: an environment keeps what it first installed until a file of the key
changes (then the steps run again) or its dependency files change (then it is a new environment).

The stamp lives beside the environment, not in it: the build can write into its environment, not
into its parent directory.
"""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

from voltci.runner.detect import PIP
from voltci.runner.detect.files import DetectError, read_text
from voltci.runner.detect.requirements import file_option, inside, requirement_lines
from voltci.runner.environments import stamp

CONFIG_FILES = ("pyproject.toml", "setup.cfg", "setup.py", "tox.ini", "tox.toml")
MAX_FILES = 50
_FILE_FLAGS = {"-r", "--requirement", "-c", "--constraint"}
_VALUED_FLAGS = {"-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--group"}


class NotCacheable(Exception):
    """The steps install something the key cannot see."""


def installs_key(tree: Path, steps: list[list[str]]) -> str | None:
    """The key of dependency steps run in `tree`; None when they must run in every build."""
    if not steps:
        return None
    digest = hashlib.sha256()
    try:
        files = [*CONFIG_FILES]
        for step in steps:
            digest.update("\0".join(step).encode() + b"\n")
            files += _named_files(step)
        seen: set[str] = set()
        while files:
            name = files.pop(0)
            if name in seen:
                continue
            seen.add(name)
            if len(seen) > MAX_FILES:
                raise NotCacheable(name)
            text = _read(tree, name)
            digest.update(name.encode() + b"\0" + (text or "\0missing").encode() + b"\0")
            if text is not None and name not in CONFIG_FILES:
                files += _requirements_lines(text, name)
    except NotCacheable:
        return None
    return digest.hexdigest()[:32]


def _named_files(step: list[str]) -> list[str]:
    """The requirements files a pip step names; NotCacheable for a step that is not pip's or installs a path."""
    if tuple(step[:4]) != PIP:
        raise NotCacheable(step[0] if step else "")
    files, words = [], step[4:]
    taken_by_flag = False
    for number, word in enumerate(words):
        if taken_by_flag:
            taken_by_flag = False
            continue
        flag, _, value = word.partition("=")
        if flag in _FILE_FLAGS or flag in _VALUED_FLAGS:
            taken_by_flag = not value
            argument = value or (words[number + 1] if number + 1 < len(words) else "")
            if flag in _FILE_FLAGS:
                files.append(_inside(argument, "a setup step"))
            elif _is_path(argument):
                raise NotCacheable(word)  # --find-links ./wheels: a directory of the tree
        elif word in ("-e", "--editable") or _is_path(word):
            raise NotCacheable(word)
    return files


def _requirements_lines(text: str, named_in: str) -> list[str]:
    """The files a requirements file names; NotCacheable for a line that installs a path."""
    files = []
    base = PurePosixPath(named_in).parent
    for line in requirement_lines(text):
        option = file_option(line)
        if option is not None:
            files.append(_inside(str(base / option[1]), named_in))
        elif line.startswith(("-e", "--editable")) or any(_is_path(word) for word in line.split()):
            raise NotCacheable(line)
    return files


def _is_path(word: str) -> bool:
    if word.startswith("-"):
        return False
    return word.startswith((".", "/", "~", "file:")) or ("/" in word.split(";")[0] and "://" not in word
                                                           and "@" not in word)


def _inside(name: str, named_in: str) -> str:
    try:
        return inside(name, named_in)
    except DetectError as exc:
        raise NotCacheable(name) from exc


def _read(tree: Path, name: str) -> str | None:
    try:
        return read_text(tree, name)
    except DetectError as exc:  # a link, a directory, too large, not UTF-8: nothing the key could stand for
        raise NotCacheable(name) from exc


def already_installed(env_path: Path, key: str | None) -> bool:
    """Whether the steps of `key` already succeeded in this environment."""
    return key is not None and read_stamp(env_path, "installed") == key


def forget(env_path: Path) -> None:
    """Before the steps run again: a failure half-way must not leave the old key standing."""
    stamp(env_path, "installed").unlink(missing_ok=True)


def remember(env_path: Path, key: str | None) -> None:
    if key is not None:
        write_stamp(env_path, "installed", key)


def read_stamp(env_path: Path, kind: str) -> str | None:
    """What the stamp of `kind` beside the environment says, or None."""
    try:
        return stamp(env_path, kind).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


def write_stamp(env_path: Path, kind: str, text: str) -> None:
    stamp(env_path, kind).write_text(text + "\n", encoding="utf-8")
