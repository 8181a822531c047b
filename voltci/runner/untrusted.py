"""The one gate between a build and its runner, for files: everything the runner reads, lists, hashes or
removes in a directory a build can write goes through here.

A commit may hold symbolic links, and a build's steps may replace any file they can write with a
link, a FIFO or a directory — at any moment, also while the runner reads (its tests run beside it).
So a path below such a directory is never handed to the kernel whole: it is walked one component
at a time from a descriptor of the directory, each component opened with `O_NOFOLLOW`, so that a
link anywhere on the way is refused rather than followed, and no later swap can redirect a walk
already under way. The last component must be a regular file (a FIFO could block the runner, a
device could be anything). Reads take a byte cap; removal unlinks a name in the directory it was
found in, never a path resolved again.

Files the runner writes for a build (the ids to run again, a shard's share) are not written here:
they go to the build's inbox (sandbox.py), a directory the build can read and not write.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

MAX_ENTRIES = 10_000  # names listed in one directory of a build's: far more than any dependency folder holds
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_REFUSED = (errno.ELOOP, errno.ENOTDIR, errno.EMLINK)  # a link where a directory or file was expected


class NotInside(OSError):
    """The file is a link, lies behind one, is not a regular file, or lies outside its directory."""


class TooLarge(OSError):
    """The file is larger than whoever reads it takes."""


def _parts(path: Path, inside: Path) -> list[str]:
    """The components of `path` below `inside`, checked lexically: no `..`, nothing outside."""
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(inside))
    if relative == os.curdir:
        return []
    parts = relative.split(os.sep)
    if os.pardir in parts:
        raise NotInside(errno.EPERM, f"{relative} is not inside the directory it belongs to")
    return parts


@contextmanager
def _walk(parts: list[str], path: Path, inside: Path, *, make: bool = False) -> Iterator[int]:
    """A descriptor of the directory `parts` names below `inside`, opened one component at a time with
    O_NOFOLLOW from the one above it: a link, or anything but a directory, on the way raises NotInside
    (naming `path`), a missing part FileNotFoundError. With `make`, each missing directory is made
    first. The one walk every function here takes, so none can follow a link another refuses."""
    fd = os.open(inside, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            if make:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                below = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in _REFUSED:
                    raise NotInside(errno.ELOOP, f"{os.path.relpath(path, inside)} is a link, lies behind one "
                                                 "or is no directory") from None
                raise
            os.close(fd)
            fd = below
        yield fd
    finally:
        os.close(fd)


@contextmanager
def _parent(path: Path, inside: Path) -> Iterator[tuple[int, str]]:
    """(a descriptor of the directory holding `path`, its last name), walked from `inside` without
    following any link; raises NotInside for a link on the way, FileNotFoundError when a part is missing."""
    parts = _parts(path, inside)
    if not parts:
        raise NotInside(errno.EPERM, "the directory itself is no file of it")
    with _walk(parts[:-1], path, inside) as fd:
        yield fd, parts[-1]


def _open_regular(path: Path, inside: Path) -> int:
    """An open descriptor of `path`: a regular file below `inside`, reached through no link."""
    relative = os.path.relpath(path, inside)
    with _parent(path, inside) as (parent, name):
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno in _REFUSED:
                raise NotInside(errno.ELOOP, f"{relative} is a link, or lies behind one") from None
            raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotInside(errno.EPERM, f"{relative} is not a regular file")
    return fd


def open_binary(path: Path, inside: Path) -> BinaryIO:
    """The file, open for reading; raises OSError (NotInside for a link or a path out of `inside`)."""
    return os.fdopen(_open_regular(path, inside), "rb")


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
        raise TooLarge(errno.EFBIG, f"{os.path.relpath(path, inside)} is larger than {max_bytes} bytes")
    return data


def read_text(path: Path, inside: Path, max_bytes: int | None = None) -> str:
    return read_bytes(path, inside, max_bytes).decode("utf-8", errors="replace")


def size(path: Path, inside: Path) -> int:
    fd = _open_regular(path, inside)
    try:
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def kind(path: Path, inside: Path) -> str | None:
    """What is at `path` without following it: "file", "dir", "link", "other", or None when nothing is
    (or a link on the way hides it)."""
    try:
        with _parent(path, inside) as (parent, name):
            mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
    except (NotInside, FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISLNK(mode):
        return "link"
    return "file" if stat.S_ISREG(mode) else "dir" if stat.S_ISDIR(mode) else "other"


def make_dirs(path: Path, inside: Path) -> None:
    """Make `path` and every missing directory above it below `inside` (tox makes its changedir), walked
    one component at a time: a link or a file on the way is refused (NotInside), never followed."""
    with _walk(_parts(path, inside), path, inside, make=True):
        pass


def link_target(path: Path, inside: Path) -> str:
    """What the link at `path` points to, as text (never followed); raises OSError when it is none."""
    with _parent(path, inside) as (parent, name):
        return os.readlink(name, dir_fd=parent)


def names(directory: Path, inside: Path, limit: int = MAX_ENTRIES) -> list[str]:
    """The names in `directory` (itself reached through no link), sorted; at most `limit`, a directory
    with more raises TooLarge. Nothing is followed: callers ask kind() what each one is."""
    with _walk(_parts(directory, inside), directory, inside) as fd:
        found: list[str] = []
        with os.scandir(fd) as entries:
            for entry in entries:
                if len(found) >= limit:
                    raise TooLarge(errno.EFBIG, f"{os.path.relpath(directory, inside)} holds more than {limit} "
                                                "entries")
                found.append(entry.name)
        return sorted(found)


def remove(path: Path, inside: Path) -> None:
    """Remove the file (or link: never what it points to) at `path`, if there is one; a link on the way
    is refused (NotInside), a directory is left alone (IsADirectoryError)."""
    try:
        with _parent(path, inside) as (parent, name):
            os.unlink(name, dir_fd=parent)
    except FileNotFoundError:
        pass


def matching(inside: Path, pattern: str) -> list[Path]:
    """What `pattern` ("requirements*.txt", "*/requirements*.txt": fnmatch per component) names below
    `inside`, as glob would, but descending only into real directories (a linked one is not entered),
    sorted. The last component may be anything: reading it is what refuses a link."""
    found = [inside]
    parts = pattern.split("/")
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        below = []
        for directory in found:
            try:
                entries = names(directory, inside)
            except OSError:
                continue
            shown = entries if part.startswith(".") else [name for name in entries if not name.startswith(".")]
            below += [directory / name for name in fnmatch.filter(shown, part)
                      if last or kind(directory / name, inside) == "dir"]
        found = below
    return sorted(found)


# ---------------------------------------------------------------- variables a commit sets

# Variables that make a program load or run code, or read files, other than what it was asked to run:
# the dynamic linker's (every LD_*); the rest of the list glibc itself ignores in setuid programs for
# that reason (iconv modules, locale and message catalogues, malloc tracing, tunables, resolver files),
# but TMPDIR, which Volt sets; the shells' start-up files and exported functions (bash reads BASH_ENV,
# sh reads ENV, and imports BASH_FUNC_*); Python's start-up hooks and home. A commit's variables reach
# only processes inside its sandbox, never the bwrap process the runner starts (which gets a fixed
# environment of its own): refusing these also keeps them from the programs Volt runs in there for
# itself (the result collector, the wheel builder), and from every process of a runner started with
# sandbox = false.
LOADER_PREFIXES = ("LD_", "BASH_FUNC_")
LOADER_VARIABLES = frozenset({
    "GCONV_PATH", "GETCONF_DIR", "GLIBC_TUNABLES", "HOSTALIASES", "LOCALDOMAIN", "LOCPATH", "MALLOC_TRACE",
    "NIS_PATH", "NLSPATH", "RESOLV_HOST_CONF", "RES_OPTIONS", "TZDIR",
    "BASH_ENV", "ENV", "PYTHONSTARTUP", "PYTHONINSPECT", "PYTHONHOME", "PYTHONEXECUTABLE",
})
MAX_VARIABLE_BYTES = 32 * 1024  # one value: a long PYTHONPATH fits, a payload does not
MAX_VARIABLES = 256


class RefusedVariable(ValueError):
    """A variable a commit asks for that Volt will not set, in one line naming it and where it is."""


def is_loader_variable(name: str) -> bool:
    """Whether `name` changes how programs are loaded or started (see LOADER_VARIABLES)."""
    upper = name.upper()
    return upper in LOADER_VARIABLES or upper.startswith(LOADER_PREFIXES)


def check_variables(variables: dict[str, str], where: str) -> dict[str, str]:
    """`variables` as a commit gives them (tox's set_env, a [matrix] env), if Volt may set every one of
    them in its build; raises RefusedVariable naming the key and `where` (the file) otherwise."""
    if len(variables) > MAX_VARIABLES:
        raise RefusedVariable(f"{where}: more than {MAX_VARIABLES} variables")
    for name, value in variables.items():
        if not name or "=" in name or "\0" in name or not name.isprintable():
            raise RefusedVariable(f"{where}: {name!r} is not a variable name")
        if is_loader_variable(name):
            raise RefusedVariable(f"{where}: {name} changes how programs are loaded or started; a build may not "
                                  "set it")
        if "\0" in value or len(value.encode("utf-8", "surrogatepass")) > MAX_VARIABLE_BYTES:
            raise RefusedVariable(f"{where}: the value of {name} holds a NUL byte or is longer than "
                                  f"{MAX_VARIABLE_BYTES} bytes")
    return variables


# ---------------------------------------------------------------- removing what a build left

def remove_tree(path: Path) -> None:
    """Remove the directory `path` and everything below it, as a build left it, once no process of the
    build runs: no link is followed (a link goes, never what it points to), no recursion (a build can
    nest directories deeper than any stack: shutil.rmtree raises RecursionError there), a directory the
    build made unreadable is made readable first, and at most two descriptors are open at once. What
    cannot be removed stays, each directory tried once; nothing raises."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        try:
            os.unlink(path)  # a file or a link where the directory was
        except OSError:
            pass
        return
    names: list[str] = []  # the way down from `path`
    skipped: list[set[str]] = [set()]  # per level: directories that would not go
    while True:
        below = _empty_files_and_first_directory(fd, skipped[-1])
        if below is not None:
            try:
                child = _open_below(fd, below)
            except OSError:
                skipped[-1].add(below)
                continue
            os.close(fd)
            fd = child
            names.append(below)
            skipped.append(set())
            continue
        if not names:
            os.close(fd)
            break
        try:
            parent = os.open("..", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
        except OSError:
            os.close(fd)
            return
        os.close(fd)
        fd, name = parent, names.pop()
        skipped.pop()
        try:
            os.rmdir(name, dir_fd=fd)
        except OSError:
            skipped[-1].add(name)
    try:
        os.rmdir(path)
    except OSError:
        pass


def _empty_files_and_first_directory(fd: int, skipped: set[str]) -> str | None:
    """Unlink every entry of the directory `fd` that is no directory; the name of a directory in it not in
    `skipped`, or None when none is left."""
    found = None
    with os.scandir(fd) as entries:
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                if found is None and entry.name not in skipped:
                    found = entry.name
                continue
            try:
                os.unlink(entry.name, dir_fd=fd)
            except OSError:
                pass
    return found


def _open_below(fd: int, name: str) -> int:
    """The directory `name` in `fd`, opened without following a link; made searchable first if the build
    took that away."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, flags, dir_fd=fd)
    except PermissionError:
        os.chmod(name, 0o700, dir_fd=fd, follow_symlinks=False)
        return os.open(name, flags, dir_fd=fd)
