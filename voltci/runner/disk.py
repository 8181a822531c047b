"""A build's disk limit: what its tree, its virtual environment and its temporary files (HOME, /tmp and
`out`, under its scratch directory) hold on the runner host, counted while it runs (build.py stops it,
and has what it wrote removed by the gate, untrusted.remove_tree, when it goes past the limit).

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
its steps end, by `DiskWatch.final`, which gives its owner every right back, to read it and for the
gate to remove what is in it), and what was
written behind the pass; so a build is stopped about one pass after it crossed its limit, and at the
latest when its steps end.
"""

from __future__ import annotations

import os
import stat
import sys
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
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
    changed: set[Path] = field(default_factory=set)  # roots with an inode below changed since the pass's `since`


def build_processes() -> list[int]:
    """The processes of this runner's build: every process below this one (its work-horse)."""
    return descendants(os.getpid())


def no_processes() -> list[int]:
    return []


class Pass:
    """One count of the roots, entry by entry, that `advance` moves on by slices; `close` ends it early.

    With `readable`, a directory whose owner may not read, write or search it is given those rights back
    first, so that it is counted and can be removed (only when the build's processes are gone: a test of
    unreadable directories must not see it). With
    `since` (a time.time()), `usage.changed` names the roots below which an inode changed since then, by
    its change time, which no process can set back (read before the pass gives any right back)."""

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
        """Depth first, one directory descriptor and its listing per level. The root is entered as any
        directory below it: the build may have taken its rights on it away too."""
        try:
            holder = os.open(root.parent, _DIRECTORY)  # the runner's own directory
        except OSError:
            return
        try:
            found = os.stat(root.name, dir_fd=holder, follow_symlinks=False)
            top = self._enter(holder, root.name, found, depth=0) if stat.S_ISDIR(found.st_mode) else None
        except OSError:
            return  # not there: an environment not taken yet
        finally:
            os.close(holder)
        self._devices.add(found.st_dev)
        self._count(found, root=root, below=False)
        if top is None:
            yield 1
            return
        frames = [(top, _listing(top))]
        try:
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
                self._count(found, root)
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
        if os.geteuid() != 0 and found.st_mode & _OWNER_ALL != _OWNER_ALL:  # the build took rights away
            restored = self.readable and give_back(parent, name, found.st_mode)
            if not restored and found.st_mode & 0o500 != 0o500:
                self.usage.unread += 1
                return None
        try:
            return os.open(name, _DIRECTORY, dir_fd=parent)
        except OSError:
            self.usage.unread += 1
            return None

    def _count(self, found: os.stat_result, root: Path | None = None, below: bool = True,
               shared: bool = False) -> None:
        """Add an inode, once however many names (or, `shared`, open descriptors) it has; with `root`, the
        root it is below (or, not `below`, is)."""
        usage = self.usage
        if shared or found.st_nlink > 1 and not stat.S_ISDIR(found.st_mode):
            key = (found.st_dev, found.st_ino)
            if key in self._linked:
                return
            if len(self._linked) < MAX_LINKED:
                self._linked.add(key)
        usage.bytes += max(found.st_blocks * 512, BLOCK)
        usage.inodes += 1
        if root is not None and below and self.since is not None and found.st_ctime >= self.since:
            usage.changed.add(root)

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

    def final(self, since: float | None = None, seconds: float = FINAL_S) -> str | None:
        """Count everything once more, the build's processes gone: what it wrote behind the last pass,
        and inside directories it took its rights on away (given back, to be counted, and for what is in
        them to be removed: done even for a build already stopped); with `since`, what changed after it
        (`changed`). A count that does not end within `seconds` is past the limit too."""
        self.close()
        whole = Pass(self.roots(), readable=True, since=since)
        try:
            done = whole.advance(sys.maxsize, seconds)
        finally:
            whole.close()
        if self.exceeded is None:
            self.exceeded = self._judge(whole.usage) or (None if done else self._reason(
                f"left more files than the runner can count for its disk limit of {human_size(self.limit)} in "
                f"{seconds:g} s"))
        if done:
            self.counted = whole.usage
        return self.exceeded

    def changed(self, root: Path) -> bool:
        """Whether anything below `root` changed after the `since` of the final count; True when that
        count did not end."""
        return self.counted is None or root in self.counted.changed

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
