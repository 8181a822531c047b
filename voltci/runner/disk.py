"""A build's disk limit: what its tree, its virtual environment and its temporary files (HOME, /tmp and
`out`, under its scratch directory) hold on the runner host, counted while it runs; and the removal
of what it wrote when it goes past the limit.

Counting (Pass) reads every directory below those roots through directory descriptors, never following
a link. Each inode counts the blocks it has allocated (st_blocks: a sparse file counts what it holds, not
its length) and at least BLOCK, what its inode and entry cost the host, so that a million empty files
cost 4 GiB; a file with several names counts once. Files that the build's processes keep open after
deleting them count too (found through /proc). A pass is resumable: the Watch (build.py) advances it
once a second by at most TICK_ENTRIES entries or TICK_S seconds, whichever comes first, so watching
costs a few percent of one core however many files the build makes, and a pass that has counted past
the limit stops the build at once, unfinished. So does one that has counted more than MAX_INODES files
and directories (whatever the limit, a pass stays under a hundred slices), and one that meets a
directory deeper than MAX_DEPTH below its root, which it does not enter (each level holds two
descriptors).

What a pass cannot see while the build runs: inside a directory the build made unreadable (counted when
its steps end, by `DiskWatch.final`, which gives its owner the right to read it back), and what was
written behind the pass; so a build is stopped about one pass after it crossed its limit, and at the
latest when its steps end.

Removing (remove_tree) copes with whatever depth, width and modes the build left, holding at most three
descriptors: every directory met below the top is first moved up into the top, so none is ever
emptied deeper than one level down.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
import sys
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from voltci.runner.procs import descendants
from voltci.sizes import human_size

BLOCK = 4096  # the least an inode counts
MAX_DEPTH = 128  # levels of directories below a root that a pass enters
MAX_INODES = 1_000_000  # files and directories a build may hold, whatever its limit: a pass over them is 100 slices
TICK_ENTRIES = 10_000  # entries a tick visits at most...
TICK_S = 0.05  # ... for at most this long (5% of a one-second tick)
FINAL_S = 30.0  # the count when the steps end, at most
MAX_LINKED = 100_000  # files with several names remembered per pass, some 10 MB (beyond, each name counts)
BATCH = 256  # entries a pass visits between two looks at the clock
SWEEPS = 10  # rounds of removal over a directory whose listing missed entries
WHAT = "tree, environment and temporary files"
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OWNER_ALL = stat.S_IRWXU


@dataclass
class Usage:
    """What a pass has counted so far."""

    bytes: int = 0
    inodes: int = 0
    too_deep: bool = False  # a directory below MAX_DEPTH was met (and not entered)
    unread: int = 0  # directories it could not read
    changed: bool = False  # an inode below a root changed at or after the pass's `since`


def build_processes() -> list[int]:
    """The processes of this runner's build: every process below this one (its work-horse)."""
    return descendants(os.getpid())


def no_processes() -> list[int]:
    return []


class Pass:
    """One count of the roots, entry by entry, that `advance` moves on by slices; `close` ends it early.

    With `readable`, a directory whose owner may not read or search it is given that right back first
    (only when the build's processes are gone: a test of unreadable directories must not see it). With
    `since` (a time.time()), `usage.changed` says whether any inode below a root changed since then,
    by its change time, which no process can set back."""

    def __init__(self, roots: Sequence[Path], *, pids: Callable[[], list[int]] = no_processes,
                 readable: bool = False, since: float | None = None, max_depth: int = MAX_DEPTH):
        self.usage = Usage()
        self.done = False
        self.visited = 0  # entries so far
        self._batch = BATCH
        self.readable, self.since, self.max_depth = readable, since, max_depth
        self._linked: set[tuple[int, int]] = set()
        self._devices: set[int] = set()
        self._steps = self._walk(list(roots), pids)

    def advance(self, entries: int, seconds: float) -> bool:
        """Visit at most `entries` more entries, for about `seconds` at most (the clock is read every
        BATCH entries); True once the pass is complete."""
        deadline = time.monotonic() + seconds
        visited = 0
        while visited < entries and not self.done:
            self._batch = min(BATCH, entries - visited)
            batch = next(self._steps, None)
            if batch is None:
                self.done = True
            else:
                visited += batch
                if time.monotonic() > deadline:
                    break
        self.visited += visited
        return self.done

    def close(self) -> None:
        """Release the directories the pass holds open."""
        self._steps.close()

    def _walk(self, roots: list[Path], pids: Callable[[], list[int]]) -> Generator[int, None, None]:
        """The pass, yielding how many entries it visited since it last yielded (at most BATCH)."""
        for root in roots:
            yield from self._tree(root)
        for pid in pids():
            yield from self._open_files(pid)

    def _tree(self, root: Path) -> Generator[int, None, None]:
        """Depth first, one directory descriptor and its listing per level."""
        try:
            top = os.open(root, _DIRECTORY)
        except OSError:
            return  # not there: an environment not taken yet
        frames = [(top, _listing(top))]
        try:
            found = os.fstat(top)
            self._devices.add(found.st_dev)
            self._count(found, is_root=True)
            visited = 1
            while frames:
                parent, listing = frames[-1]
                try:
                    entry = next(listing, None)
                except OSError:
                    entry = None  # the directory was removed under the listing
                if entry is None:
                    frames.pop()
                    _close(parent, listing)
                    continue
                try:
                    found = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # removed meanwhile
                self._count(found)
                visited += 1
                if stat.S_ISDIR(found.st_mode):
                    below = self._enter(parent, entry.name, found, depth=len(frames))
                    if below is not None:
                        frames.append((below, _listing(below)))
                if visited >= self._batch:
                    yield visited
                    visited = 0
            if visited:
                yield visited
        finally:
            for parent, listing in frames:
                _close(parent, listing)

    def _enter(self, parent: int, name: str, found: os.stat_result, depth: int) -> int | None:
        """A descriptor of directory `name` in `parent`, or None when it is not to be read (too deep,
        unreadable)."""
        if depth > self.max_depth:
            self.usage.too_deep = True
            return None
        locked = found.st_mode & 0o500 != 0o500 and os.geteuid() != 0  # the build took its owner's rights away
        if locked and not (self.readable and give_back(parent, name, found.st_mode)):
            self.usage.unread += 1
            return None
        try:
            return os.open(name, _DIRECTORY, dir_fd=parent)
        except OSError:
            self.usage.unread += 1
            return None

    def _count(self, found: os.stat_result, is_root: bool = False, shared: bool = False) -> None:
        """Add an inode, once however many names (or, `shared`, open descriptors) it has."""
        usage = self.usage
        if shared or found.st_nlink > 1 and not stat.S_ISDIR(found.st_mode):
            key = (found.st_dev, found.st_ino)
            if key in self._linked:
                return
            if len(self._linked) < MAX_LINKED:
                self._linked.add(key)
        usage.bytes += max(found.st_blocks * 512, BLOCK)
        usage.inodes += 1
        if self.since is not None and not is_root and found.st_ctime >= self.since:
            usage.changed = True

    def _open_files(self, pid: int) -> Generator[int, None, None]:
        """Files process `pid` holds open after they were deleted, on the roots' filesystems."""
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            return  # gone
        for name in names:
            try:
                found = os.stat(f"/proc/{pid}/fd/{name}")
            except OSError:
                continue
            if found.st_nlink == 0 and stat.S_ISREG(found.st_mode) and found.st_dev in self._devices:
                self._count(found, shared=True)
            yield 1


def _listing(directory: int) -> Iterator[os.DirEntry[str]]:
    """The entries of an open directory (os.scandir duplicates the descriptor; the entries' stat() uses
    the one given); none when it cannot be listed (no descriptor left)."""
    try:
        return os.scandir(directory)
    except OSError:
        return iter(())


def _close(directory: int, listing: Iterator[os.DirEntry[str]]) -> None:
    close = getattr(listing, "close", None)
    if close is not None:
        close()
    try:
        os.close(directory)
    except OSError:
        pass


def give_back(parent: int, name: str, mode: int) -> bool:
    """Give the owner of directory `name` in `parent` every right on it again, never through a link."""
    try:
        handle = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    except OSError:
        return False
    try:
        if not stat.S_ISDIR(os.fstat(handle).st_mode):
            return False
        os.chmod(f"/proc/self/fd/{handle}", stat.S_IMODE(mode) | _OWNER_ALL)
        return True
    except OSError:
        return False
    finally:
        os.close(handle)


class DiskWatch:
    """A build's disk limit over `roots()` (read again at each pass: the environment comes later),
    counted a slice at a time by `tick` while the steps run, and once more in full by `final` when
    they end. `exceeded`: why the build must stop, once it must."""

    def __init__(self, limit: int, roots: Callable[[], Sequence[Path]], *, entries: int = TICK_ENTRIES,
                 seconds: float = TICK_S, pids: Callable[[], list[int]] = build_processes, inodes: int = MAX_INODES):
        self.limit, self.roots, self.entries, self.seconds, self.pids = limit, roots, entries, seconds, pids
        self.inodes = inodes
        self.exceeded: str | None = None
        self.counted: Usage | None = None  # the last complete pass
        self._pass: Pass | None = None

    def tick(self) -> str | None:
        """Count one more slice; why the build must stop, once it has gone past its limit."""
        if self.exceeded is not None:
            return self.exceeded
        if self._pass is None:
            self._pass = Pass(self.roots(), pids=self.pids)
        done = self._pass.advance(self.entries, self.seconds)
        self.exceeded = self._judge(self._pass.usage)
        if done:
            self.counted = self._pass.usage
        if done or self.exceeded is not None:
            self.close()
        return self.exceeded

    def final(self, seconds: float = FINAL_S) -> str | None:
        """Count everything once more, the build's processes gone: what it wrote behind the last pass,
        and inside directories it made unreadable (made readable again, to be counted and removed).
        A count that does not end within `seconds` is past the limit too."""
        self.close()
        if self.exceeded is None:
            whole = Pass(self.roots(), readable=True)
            try:
                done = whole.advance(sys.maxsize, seconds)
            finally:
                whole.close()
            self.exceeded = self._judge(whole.usage) or (None if done else self._reason(
                f"left more files than the runner can count for its disk limit of {human_size(self.limit)} in "
                f"{seconds:g} s"))
            if done:
                self.counted = whole.usage
        return self.exceeded

    def close(self) -> None:
        if self._pass is not None:
            self._pass.close()
            self._pass = None

    def _judge(self, usage: Usage) -> str | None:
        if usage.bytes > self.limit:
            return self._reason(f"wrote more than its disk limit of {human_size(self.limit)}")
        if usage.inodes > self.inodes:
            return self._reason(f"made more than {self.inodes:,} files and directories, more than its disk limit "
                                f"of {human_size(self.limit)} allows")
        if usage.too_deep:
            return self._reason(f"made directories more than {MAX_DEPTH} levels deep, more than its disk limit "
                                f"of {human_size(self.limit)} lets the runner count")
        return None

    @staticmethod
    def _reason(what: str) -> str:
        return f"the build {what} ({WHAT})"


def changed_since(root: Path, since: float, seconds: float = FINAL_S) -> bool:
    """Whether anything below `root` was changed (written, made, renamed, linked) at or after `since`,
    by the inodes' change times; True when that cannot be told within `seconds`."""
    check = Pass([root], since=since)
    deadline = time.monotonic() + seconds
    try:
        while not check.advance(TICK_ENTRIES, seconds):
            if check.usage.changed or time.monotonic() > deadline:
                return True
        return check.usage.changed
    finally:
        check.close()


def remove_tree(path: Path) -> None:
    """Remove `path` and everything below it, never following a link, whatever depth, width or modes
    the build left it with."""
    try:
        parent = os.open(path.parent, _DIRECTORY)
    except FileNotFoundError:
        return
    try:
        try:
            found = os.stat(path.name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(found.st_mode):
            os.unlink(path.name, dir_fd=parent)
            return
        if found.st_mode & _OWNER_ALL != _OWNER_ALL:
            give_back(parent, path.name, found.st_mode)
        top = os.open(path.name, _DIRECTORY, dir_fd=parent)
        try:
            _empty(top)
        finally:
            os.close(top)
        os.rmdir(path.name, dir_fd=parent)
    finally:
        os.close(parent)


def _empty(top: int) -> None:
    """Empty directory `top`: its files are unlinked and its directories emptied one by one, each
    directory found inside them moved up into `top` first, under a name of its own. A listing may miss
    entries removed under it, so the sweep is done again until `top` lists nothing (a few rounds)."""
    in_top: set[str] = set()
    fresh = (f".volt-removing-{n}" for n in itertools.count())
    for _ in range(SWEEPS):
        pending, seen = _sweep(top, top, in_top, None)
        if not seen:
            return
        while pending:
            name = pending.pop()
            directory = os.open(name, _DIRECTORY, dir_fd=top)
            try:
                pending += _sweep(directory, top, in_top, fresh)[0]
            finally:
                os.close(directory)
            try:
                os.rmdir(name, dir_fd=top)
                in_top.discard(name)
            except OSError as exc:
                if exc.errno != errno.ENOTEMPTY:
                    raise  # else left in `top`, for the next round


def _sweep(directory: int, top: int, in_top: set[str], fresh: Iterator[str] | None) -> tuple[list[str], int]:
    """Unlink what is not a directory in `directory`; give its directories every right back and move
    them into `top` under a `fresh` name (`fresh` None: `directory` is `top`, where they stay). Returns
    their names in `top`, and how many entries were seen."""
    found: list[str] = []
    seen = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            seen += 1
            mode = entry.stat(follow_symlinks=False).st_mode
            if not stat.S_ISDIR(mode):
                os.unlink(entry.name, dir_fd=directory)
                continue
            if mode & _OWNER_ALL != _OWNER_ALL:
                give_back(directory, entry.name, mode)
            name = entry.name
            if fresh is not None:
                name = next(name for name in fresh if name not in in_top)
                os.rename(entry.name, name, src_dir_fd=directory, dst_dir_fd=top)
            in_top.add(name)
            found.append(name)
    return found, seen
