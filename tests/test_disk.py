"""The disk limit's count and removal on real files: allocated blocks, not lengths; a file with several
names once; links never followed; every entry at least a block; a slice of a pass bounded by its cap
however many entries there are; what a build hides (deep trees, unreadable directories, deleted files
it keeps open) counted or refused; and removal whatever depth and modes were left."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from support import wait_until

from voltci.config import Settings, load_settings
from voltci.errors import BadInput
from voltci.runner import disk, project
from voltci.runner.build import Watch
from voltci.runner.disk import BLOCK, DiskWatch, Pass, Usage
from voltci.runner.untrusted import remove_tree

MIB = 1 << 20
NOBODY = 65534


@pytest.fixture
def unprivileged(tmp_path):
    """Runs `check(base)` as a user without root's rights (which read and write any directory), the way
    a runner runs: in a forked child that gives them up, where the suite runs as root."""
    def run(check: Callable[[Path], None]) -> None:
        if os.geteuid() != 0:
            check(tmp_path)
            return
        base = Path(tempfile.mkdtemp(prefix="volt-disk-test-"))
        os.chown(base, NOBODY, NOBODY)
        try:
            child = os.fork()
            if child == 0:  # pragma: no cover - the child reports through its exit status
                status = 1
                try:
                    os.setgroups([])
                    os.setgid(NOBODY)
                    os.setuid(NOBODY)
                    check(base)
                    status = 0
                except BaseException:
                    traceback.print_exc()
                finally:
                    os._exit(status)
            _, status = os.waitpid(child, 0)
            assert os.waitstatus_to_exitcode(status) == 0, "the check failed as an unprivileged user (see stderr)"
        finally:
            remove_tree(base)
    return run


def count(*roots: Path, **options) -> Usage:
    """A whole pass over `roots`."""
    counting = Pass(list(roots), **options)
    try:
        assert counting.advance(sys.maxsize, 60)
    finally:
        counting.close()
    return counting.usage


def fill(path: Path, size: int) -> None:
    """A file of `size` bytes, every block written (no holes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        for _ in range(size // MIB):
            out.write(b"\1" * MIB)
        out.write(b"\1" * (size % MIB))


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_file_counts_the_blocks_it_holds(tmp_path) -> None:
    empty = count(tmp_path)
    fill(tmp_path / "data.bin", 10 * MIB)
    usage = count(tmp_path)
    assert 10 * MIB <= usage.bytes - empty.bytes <= 10 * MIB + 64 * 1024
    assert usage.inodes == empty.inodes + 1


def test_a_sparse_file_counts_what_it_holds_not_its_length(tmp_path) -> None:
    empty = count(tmp_path)
    with open(tmp_path / "sparse.bin", "wb") as out:
        out.truncate(8 << 30)  # 8 GiB long
        out.seek(4 << 30)
        out.write(b"\1" * 4096)
    assert (tmp_path / "sparse.bin").stat().st_size == 8 << 30
    assert count(tmp_path).bytes - empty.bytes < MIB


def test_space_reserved_without_writing_counts(tmp_path) -> None:
    empty = count(tmp_path)
    with open(tmp_path / "reserved.bin", "wb") as out:
        try:
            os.posix_fallocate(out.fileno(), 0, 20 * MIB)
        except OSError:
            pytest.skip("this filesystem reserves no space ahead")
    assert count(tmp_path).bytes - empty.bytes >= 20 * MIB


def test_a_file_with_many_names_counts_once(tmp_path) -> None:
    fill(tmp_path / "one" / "data.bin", 10 * MIB)
    (tmp_path / "other").mkdir()
    single = count(tmp_path)
    for n in range(200):
        os.link(tmp_path / "one" / "data.bin", tmp_path / ("one" if n % 2 else "other") / f"link{n}")
    linked = count(tmp_path)
    assert linked.inodes == single.inodes
    assert linked.bytes - single.bytes < MIB  # the directories' entries, not 200 × 10 MiB


def test_links_across_two_roots_count_once(tmp_path) -> None:
    fill(tmp_path / "tree" / "data.bin", 10 * MIB)
    (tmp_path / "env").mkdir()
    os.link(tmp_path / "tree" / "data.bin", tmp_path / "env" / "data.bin")
    assert count(tmp_path / "tree", tmp_path / "env").bytes < 11 * MIB


def test_links_are_never_followed(tmp_path) -> None:
    outside = tmp_path / "outside"
    fill(outside / "big.bin", 20 * MIB)
    root = tmp_path / "root"
    root.mkdir()
    before = count(root)
    (root / "to-file").symlink_to(outside / "big.bin")
    (root / "to-dir").symlink_to(outside)
    (root / "to-root").symlink_to("/")
    (root / "loop").symlink_to(root / "loop")
    usage = count(root)
    assert usage.inodes == before.inodes + 4
    assert usage.bytes - before.bytes == 4 * BLOCK


def test_a_root_that_is_a_link_is_not_followed(tmp_path) -> None:
    fill(tmp_path / "outside" / "big.bin", 20 * MIB)
    (tmp_path / "root").symlink_to(tmp_path / "outside")
    assert count(tmp_path / "root") == Usage(bytes=BLOCK, inodes=1)  # the link itself


def test_every_entry_counts_at_least_a_block(tmp_path) -> None:
    before = count(tmp_path)
    for n in range(300):
        (tmp_path / f"empty{n}").touch()
    usage = count(tmp_path)
    assert usage.inodes - before.inodes == 300
    assert usage.bytes - before.bytes >= 300 * BLOCK


def test_a_missing_root_counts_nothing(tmp_path) -> None:
    assert count(tmp_path / "not-yet") == Usage()


def test_a_slice_visits_no_more_entries_than_its_cap(tmp_path) -> None:
    """However many entries the roots hold (a million empty files, scaled down here with the cap), a
    slice visits at most its cap; the pass goes on at the next one where it stopped, and ends with the
    count a pass in one go makes."""
    for n in range(1000):
        (tmp_path / f"f{n}").touch()
    whole = count(tmp_path)
    counting = Pass([tmp_path])
    slices = 0
    while not counting.advance(100, 60):
        slices += 1
        assert counting.visited == 100 * slices
    assert counting.usage == whole and slices == whole.inodes // 100
    watch = DiskWatch(1 << 40, lambda: [tmp_path], entries=100, pids=disk.no_processes)
    ticks = 0
    while watch.counted is None and ticks < 1000:
        assert watch.tick() is None
        ticks += 1
    assert ticks == whole.inodes // 100 + 1 and watch.counted == whole


def test_a_slice_stops_when_its_time_is_up(tmp_path) -> None:
    for n in range(600):
        (tmp_path / f"f{n}").touch()
    counting = Pass([tmp_path])
    try:
        assert not counting.advance(sys.maxsize, 0)
        assert counting.visited == disk.BATCH
    finally:
        counting.close()


def test_a_pass_past_the_limit_stops_the_build_before_it_ends(tmp_path) -> None:
    for n in range(50):
        fill(tmp_path / f"part{n}.bin", MIB)
    watch = DiskWatch(16 * MIB, lambda: [tmp_path], entries=30, pids=disk.no_processes)
    reason = watch.tick()
    assert reason == "the build wrote more than its disk limit of 16M (tree, environment and temporary files)"
    assert watch.counted is None  # it did not need the whole pass
    assert watch.tick() == reason and watch.final() == reason


def test_what_is_written_behind_the_last_pass_is_found_when_the_steps_end(tmp_path) -> None:
    watch = DiskWatch(16 * MIB, lambda: [tmp_path], pids=disk.no_processes)
    while watch.counted is None:
        assert watch.tick() is None
    fill(tmp_path / "late.bin", 20 * MIB)
    assert watch.final() == "the build wrote more than its disk limit of 16M (tree, environment and temporary files)"


def test_more_files_than_the_runner_counts_is_a_reason_to_stop(tmp_path) -> None:
    """Whatever the limit in bytes, a build holds at most so many files and directories: a pass over
    them stays bounded (scaled down here)."""
    for n in range(600):
        (tmp_path / f"f{n}").touch()
    watch = DiskWatch(1 << 30, lambda: [tmp_path], pids=disk.no_processes, inodes=500)
    assert watch.final() == ("the build made more than 500 files and directories, more than its disk limit of 1G "
                             "allows (tree, environment and temporary files)")
    assert DiskWatch(1 << 30, lambda: [tmp_path], pids=disk.no_processes, inodes=700).final() is None


def test_a_tree_too_deep_to_count_is_a_reason_to_stop(tmp_path) -> None:
    held = open_descriptors()
    make_deep(tmp_path / "deep", disk.MAX_DEPTH + 5)
    usage = count(tmp_path)
    assert usage.too_deep
    watch = DiskWatch(1 << 40, lambda: [tmp_path], pids=disk.no_processes)
    assert "more than 128 levels deep" in watch.final() and "disk limit" in watch.final()
    assert open_descriptors() == held
    assert not count(tmp_path, max_depth=disk.MAX_DEPTH + 10).too_deep


def test_a_pass_closed_half_way_holds_no_descriptor(tmp_path) -> None:
    held = open_descriptors()
    make_deep(tmp_path / "deep", 60)
    counting = Pass([tmp_path])
    counting.advance(40, 10)
    assert open_descriptors() > held
    counting.close()
    assert open_descriptors() == held


def test_an_unreadable_directory_is_counted_when_the_build_has_ended(unprivileged) -> None:
    """While the build runs its directory of mode 000 stays as it made it (a test of unreadable
    directories must see it so); when its steps end it is given back to its owner and counted."""
    def check(base: Path) -> None:
        hidden = base / "hidden"
        fill(hidden / "inner" / "big.bin", 20 * MIB)
        (hidden / "inner").chmod(0o100)
        hidden.chmod(0)
        live = count(base)
        assert live.unread == 1 and live.bytes < MIB
        watch = DiskWatch(16 * MIB, lambda: [base], pids=disk.no_processes)
        assert watch.tick() is None and hidden.stat().st_mode & 0o777 == 0
        reason = watch.final()
        assert reason is not None and "disk limit of 16M" in reason
        assert hidden.stat().st_mode & 0o700 == 0o700
    unprivileged(check)


def test_a_file_deleted_but_kept_open_by_the_build_counts(tmp_path) -> None:
    """A process of the build writes a file, deletes it and keeps it open: the space stays taken, and the
    pass finds it through the process's descriptors (once, however many it has)."""
    marker = tmp_path / "written"
    code = ("import os, sys, time\n"
            f"path = {str(tmp_path / 'gone.bin')!r}\n"
            "out = open(path, 'wb')\n"
            "out.write(b'\\1' * (20 << 20)); out.flush()\n"
            "os.unlink(path)\n"
            "again = os.open('/proc/self/fd/%d' % out.fileno(), os.O_RDONLY)\n"
            f"open({str(marker)!r}, 'w').close()\n"
            "time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        wait_until(marker.exists, "the file to be written and deleted", timeout=30)
        usage = count(tmp_path, pids=lambda: [child.pid])
        assert 20 * MIB <= usage.bytes < 21 * MIB + 64 * 1024
        assert count(tmp_path).bytes < MIB
    finally:
        child.kill()
        child.wait(timeout=10)


def changes(roots: list[Path], since: float) -> set[Path]:
    """The roots the final count finds changed since `since` (the runner asks it of the environment)."""
    watch = DiskWatch(1 << 40, lambda: roots, pids=disk.no_processes)
    assert watch.final(since=since) is None
    return {root for root in roots if watch.changed(root)}


def test_changes_are_told_by_their_change_time(unprivileged) -> None:
    def check(base: Path) -> None:
        env, tree = base / "env", base / "tree"
        fill(env / "lib" / "site" / "mod.py", 100)
        (env / "lib" / "site" / "other.py").touch()
        tree.mkdir()
        (env / "lib" / "site").chmod(0o500)  # locked by an earlier build: the count gives it back, no change
        time.sleep(0.05)
        since = time.time()
        time.sleep(0.05)
        os.utime(env)  # the runner marks the environment used
        fill(tree / "new.py", 10)  # the tree changes, the environment does not
        assert changes([tree, env], since) == {tree}
        assert (env / "lib" / "site").stat().st_mode & 0o700 == 0o700
        since = time.time()
        time.sleep(0.05)
        (env / "lib" / "site" / "other.py").unlink()
        assert changes([tree, env], since) == {env}
    unprivileged(check)


def test_a_written_file_is_a_change_even_with_its_old_time_put_back(tmp_path) -> None:
    env = tmp_path / "env"
    fill(env / "lib" / "mod.py", 100)
    old = (env / "lib" / "mod.py").stat()
    time.sleep(0.05)
    since = time.time()
    time.sleep(0.05)
    fill(env / "lib" / "mod.py", 200)
    os.utime(env / "lib" / "mod.py", ns=(old.st_atime_ns, old.st_mtime_ns))
    assert changes([env], since) == {env}


def make_deep(path: Path, depth: int) -> None:
    """`depth` directories one in the other, below `path`, made through descriptors (the path of the
    deepest may be longer than the kernel takes at once)."""
    path.mkdir(parents=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d" * 100, dir_fd=fd)
            below = os.open("d" * 100, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = below
        with open(os.open("last.bin", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd), "wb") as out:
            out.write(b"\1" * 4096)
    finally:
        os.close(fd)


def test_removal_copes_with_any_depth_width_and_modes(unprivileged) -> None:
    """As the runner does it when a build ends: the final count gives owners their rights back (a
    directory left without write permission keeps what is in it from removal), then the gate removes."""
    def check(base: Path) -> None:
        held = open_descriptors()
        outside = base / "outside"
        fill(outside / "keep.bin", 4096)
        top = base / "top"
        make_deep(top / "deep", 1200)  # deeper than a path the kernel takes, and than Python's recursion
        wide = top / "wide"
        wide.mkdir()
        for n in range(500):
            (wide / f"f{n}").touch()
        locked = top / "locked" / "inner"
        fill(locked / "data.bin", 4096)
        (locked / "more").mkdir()
        (locked / "more").chmod(0)
        locked.chmod(0o100)
        (top / "locked").chmod(0o500)
        (top / "link-to-outside").symlink_to(outside)
        (top / "file-link").symlink_to(outside / "keep.bin")
        os.link(outside / "keep.bin", top / "hard-link")
        (top / ".volt-removing-0").mkdir()  # a name the removal itself uses for what it moves up
        fill(top / ".volt-removing-0" / "x", 10)
        top.chmod(0o500)
        assert DiskWatch(1 << 40, lambda: [top], pids=disk.no_processes).final() is not None  # too deep
        remove_tree(top)
        assert not top.exists() and not top.is_symlink()
        assert (outside / "keep.bin").read_bytes() == b"\1" * 4096
        assert open_descriptors() == held
    unprivileged(check)


def test_removing_what_is_not_there_or_not_a_directory(tmp_path) -> None:
    remove_tree(tmp_path / "missing")
    (tmp_path / "file").touch()
    remove_tree(tmp_path / "file")
    fill(tmp_path / "outside" / "keep", 10)
    (tmp_path / "link").symlink_to(tmp_path / "outside")
    remove_tree(tmp_path / "link")
    assert not (tmp_path / "link").is_symlink() and (tmp_path / "outside" / "keep").exists()


def test_the_runner_limit_is_a_setting_flags_beat_environment_beat_file(tmp_path) -> None:
    config = tmp_path / "volt.toml"
    config.write_text('build_disk = "30G"\n')
    assert Settings().build_disk == "20G"
    assert load_settings(str(config), environ={}).build_disk == "30G"
    assert load_settings(str(config), environ={"VOLT_BUILD_DISK": "40G"}).build_disk == "40G"
    assert load_settings(str(config), {"build_disk": "50G"}, environ={"VOLT_BUILD_DISK": "40G"}).build_disk == "50G"


@pytest.mark.parametrize("value, message", [
    ("lots", "VOLT_BUILD_DISK: setting 'build_disk' must be a size like \"10G\" or \"500M\", got 'lots'"),
    ("1M", "setting 'build_disk' must be at least 16M"),
    ("50%", "setting 'build_disk' must be a size like"),
])
def test_a_wrong_runner_limit_is_one_line_naming_it(value, message) -> None:
    with pytest.raises(BadInput) as raised:
        load_settings(environ={"VOLT_BUILD_DISK": value})
    assert message in str(raised.value)


@pytest.mark.parametrize("value, size", [
    ("10G", 10 << 30), ("512M", 512 * MIB), ("1.5GiB", 3 << 29), (1 << 30, 1 << 30)])
def test_volt_toml_asks_for_a_disk_limit(value, size) -> None:
    assert project.parse({"tests": {"disk": value}}).disk_bytes == size
    assert project.parse({}).disk_bytes is None


@pytest.mark.parametrize("value, message", [
    ("ten gigs", "'tests.disk' must be a size like \"10G\" or \"500M\", got 'ten gigs'"),
    (True, "'tests.disk' must be a size like"),
    (["10G"], "'tests.disk' must be a size like"),
    ("-1G", "'tests.disk' must be a size like"),
    ("1K", "'tests.disk' must be at least 16M"),
])
def test_a_wrong_disk_value_names_the_key(value, message) -> None:
    with pytest.raises(project.ProjectConfigError) as raised:
        project.parse({"tests": {"disk": value}})
    assert message in str(raised.value)


class AwayStore:
    """An Ownership whose Redis is away: the Watch must go on counting the disk all the same."""

    def owns(self) -> bool:
        raise redis.ConnectionError("Redis is away")


def test_the_watch_counts_while_redis_is_away_and_its_stop_holds(tmp_path) -> None:
    fill(tmp_path / "big.bin", 20 * MIB)
    watch = Watch(AwayStore(), None, None)  # type: ignore[arg-type]
    assert watch() is None  # no disk limit before the build's .volt.toml is read
    watch.disk = DiskWatch(16 * MIB, lambda: [tmp_path], pids=disk.no_processes)
    watch._last = 0.0
    reason = watch()
    assert reason is not None and "disk limit of 16M" in reason
    assert [watch() for _ in range(3)] == [reason] * 3  # at once, every step after it too


def test_a_root_the_build_locked_is_counted_and_removable_when_it_ends(unprivileged) -> None:
    """The tree and the environment are the build's own directories: it may take its rights on them
    away (mode 000, or 500: nothing in it can be removed)."""
    def check(base: Path) -> None:
        for mode in (0, 0o500):
            root = base / f"root{mode:o}"
            fill(root / "inner" / "big.bin", 20 * MIB)
            root.chmod(mode)
            watch = DiskWatch(16 * MIB, lambda: [root], pids=disk.no_processes)  # noqa: B023
            assert (watch.tick() is None) == (mode == 0)  # unreadable while the build runs
            assert watch.final() is not None and "disk limit of 16M" in watch.final()
            remove_tree(root)
            assert not root.exists()
    unprivileged(check)
