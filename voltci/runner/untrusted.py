"""Reading files that a commit could have planted or a build could have written.

A commit may hold symbolic links, and a build's steps may replace any file they can write with one;
the runner then reads result files, JUnit reports and `.volt.toml` with its own rights, outside the
sandbox. Each read here refuses a link, or a path that leads out of the directory it belongs to, so
that no file of the host ends up in a build's results or log.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO


class NotInside(OSError):
    """The file is a link, or lies outside the directory it must be in."""


class TooLarge(OSError):
    """The file is larger than whoever reads it takes."""


def _checked(path: Path, inside: Path) -> int:
    """An open descriptor of `path`: a regular file below `inside`, reached through no link."""
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(inside))
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        raise NotInside(f"{relative} is not inside the directory it belongs to")
    if os.path.realpath(path) != os.path.join(os.path.realpath(inside), relative):
        raise NotInside(f"{relative} is a link, or lies behind one")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotInside(f"{relative} is not a regular file")
    return fd


def open_binary(path: Path, inside: Path) -> BinaryIO:
    """The file, open for reading; raises OSError (NotInside for a link or a path out of `inside`)."""
    return os.fdopen(_checked(path, inside), "rb")


def read_bytes(path: Path, inside: Path, max_bytes: int | None = None, offset: int = 0) -> bytes:
    """The file's bytes from `offset` (at most `max_bytes`); raises OSError (NotInside for a link or a
    path out of `inside`)."""
    with open_binary(path, inside) as fh:
        fh.seek(offset)
        return fh.read() if max_bytes is None else fh.read(max_bytes)


def read_capped(path: Path, inside: Path, max_bytes: int) -> bytes:
    """The whole file, which must be at most `max_bytes`: a project's config read as data (TooLarge
    past it, NotInside for a link)."""
    data = read_bytes(path, inside, max_bytes + 1)
    if len(data) > max_bytes:
        raise TooLarge(f"{os.path.relpath(path, inside)} is larger than {max_bytes} bytes")
    return data


def read_text(path: Path, inside: Path, max_bytes: int | None = None) -> str:
    return read_bytes(path, inside, max_bytes).decode("utf-8", errors="replace")


def size(path: Path, inside: Path) -> int:
    fd = _checked(path, inside)
    try:
        return os.fstat(fd).st_size
    finally:
        os.close(fd)
