"""The gate between a build and its runner (voltci/runner/untrusted.py), on real files: links anywhere on
a path are refused, never followed; FIFOs and devices are not read; removal never reaches through a
link; listing and matching never descend into one; commit variables that change how programs load are
refused; and which builds share what (trust scopes)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from voltci.config import BadInput, load_settings
from voltci.models import PROTECTED_SCOPE
from voltci.runner import untrusted
from voltci.runner.scopes import scope_of


@pytest.fixture
def build_dir(tmp_path: Path) -> tuple[Path, Path]:
    """(a directory a build could write, a directory of the host beside it holding a secret)."""
    inside, host = tmp_path / "tree", tmp_path / "host"
    (inside / "sub").mkdir(parents=True)
    host.mkdir()
    (host / "secret").write_text("host secret")
    (inside / "sub" / "real.txt").write_text("ok")
    return inside, host


def test_a_link_anywhere_on_the_way_is_refused(build_dir: tuple[Path, Path]) -> None:
    inside, host = build_dir
    (inside / "final").symlink_to(host / "secret")
    (inside / "middle").symlink_to(host)
    (inside / "sub" / "up").symlink_to("..")  # a link inside, to inside: still a link
    assert untrusted.read_text(inside / "sub" / "real.txt", inside) == "ok"
    for path in (inside / "final", inside / "middle" / "secret", inside / "sub" / "up" / "sub" / "real.txt"):
        with pytest.raises(untrusted.NotInside):
            untrusted.read_bytes(path, inside, 100)
    with pytest.raises(untrusted.NotInside):
        untrusted.read_bytes(inside / ".." / "host" / "secret", inside, 100)


def test_a_fifo_or_a_device_is_refused_without_blocking(build_dir: tuple[Path, Path]) -> None:
    inside, _ = build_dir
    os.mkfifo(inside / "fifo")
    done = threading.Event()

    def read() -> None:
        with pytest.raises(untrusted.NotInside, match="not a regular file"):
            untrusted.read_bytes(inside / "fifo", inside, 10)
        done.set()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=30)
    assert done.is_set(), "reading a FIFO blocked"


def test_reads_take_a_cap(build_dir: tuple[Path, Path]) -> None:
    inside, _ = build_dir
    (inside / "big").write_bytes(b"x" * 5000)
    assert len(untrusted.read_bytes(inside / "big", inside, 100)) == 100
    with pytest.raises(untrusted.TooLarge):
        untrusted.read_capped(inside / "big", inside, 4999)


def test_removal_never_reaches_through_a_link(build_dir: tuple[Path, Path]) -> None:
    inside, host = build_dir
    (inside / "hostdir").symlink_to(host)
    with pytest.raises(untrusted.NotInside):
        untrusted.remove(inside / "hostdir" / "secret", inside)
    (inside / "link").symlink_to(host / "secret")
    untrusted.remove(inside / "link", inside)  # the link goes, never what it points to
    untrusted.remove(inside / "missing", inside)
    assert (host / "secret").read_text() == "host secret" and not os.path.lexists(inside / "link")


def test_kinds_names_and_matching_do_not_look_behind_links(build_dir: tuple[Path, Path]) -> None:
    inside, host = build_dir
    (host / "requirements-host.txt").write_text("x")
    (inside / "hostdir").symlink_to(host)
    (inside / "requirements.txt").symlink_to(host / "secret")
    (inside / "sub" / "requirements-dev.txt").write_text("y")
    assert untrusted.kind(inside / "hostdir", inside) == "link"
    assert untrusted.kind(inside / "hostdir" / "secret", inside) is None
    assert untrusted.kind(inside / "sub", inside) == "dir"
    assert untrusted.link_target(inside / "requirements.txt", inside) == str(host / "secret")
    with pytest.raises(untrusted.NotInside):
        untrusted.names(inside / "hostdir", inside)
    found = untrusted.matching(inside, "*/requirements*.txt") + untrusted.matching(inside, "requirements*.txt")
    assert found == [inside / "sub" / "requirements-dev.txt", inside / "requirements.txt"]


def test_a_directory_with_too_many_entries_is_refused(tmp_path: Path) -> None:
    for n in range(30):
        (tmp_path / f"f{n}").touch()
    with pytest.raises(untrusted.TooLarge):
        untrusted.names(tmp_path, tmp_path, limit=20)


@pytest.mark.parametrize("name", ["LD_PRELOAD", "ld_preload", "LD_AUDIT", "GCONV_PATH", "GLIBC_TUNABLES", "BASH_ENV",
                                  "ENV", "BASH_FUNC_ls%%", "PYTHONSTARTUP", "PYTHONINSPECT", "PYTHONHOME", "NLSPATH"])
def test_variables_that_change_how_programs_load_are_refused(name: str) -> None:
    with pytest.raises(untrusted.RefusedVariable, match=f"tox.ini: set_env: {name}"):
        untrusted.check_variables({"OK": "1", name: "x"}, "tox.ini: set_env")


@pytest.mark.parametrize(("variables", "fragment"), [
    ({"A=B": "x"}, "not a variable name"), ({"": "x"}, "not a variable name"), ({"A": "x\0y"}, "NUL"),
    ({"A": "x" * (untrusted.MAX_VARIABLE_BYTES + 1)}, "longer than"),
    ({f"V{n}": "x" for n in range(untrusted.MAX_VARIABLES + 1)}, "more than"),
])
def test_variables_that_are_no_variables_are_refused(variables: dict[str, str], fragment: str) -> None:
    with pytest.raises(untrusted.RefusedVariable, match=fragment):
        untrusted.check_variables(variables, "tox.ini")


def test_ordinary_variables_pass() -> None:
    variables = {"PYTHONPATH": "src", "DJANGO_SETTINGS_MODULE": "app.settings", "TMPDIR": "/tmp/x"}
    assert untrusted.check_variables(variables, "tox.ini") == variables


@pytest.mark.parametrize(("setting", "fragment"), [
    ("pass_env = 'GITHUB_TOKEN'", "holds a credential"), ("pass_env = 'DB_PASSWORD'", "holds a credential"),
    ("pass_env = 'LD_PRELOAD'", "how programs are loaded"), ("build_network = 'open'", "build_network"),
    ("build_network_allow = 'db.lan'", "host:port"), ("build_network_allow = 'db.lan:99999'", "host:port"),
])
def test_runner_settings_that_would_open_the_wall_are_one_line_errors(tmp_path: Path, setting: str,
                                                                      fragment: str) -> None:
    config = tmp_path / "volt.toml"
    config.write_text(setting + "\n")
    with pytest.raises(BadInput, match=fragment):
        load_settings(str(config), environ={})


def test_scopes_protected_branches_share_one_every_other_branch_has_its_own() -> None:
    assert scope_of("main", "", "main").name == PROTECTED_SCOPE
    assert scope_of("release/1.2", "main release/*", "main").protected
    assert not scope_of("main", "release/*", "main").protected  # the setting, when given, is the list
    evil, other = scope_of("evil", "", "main"), scope_of("evil/../main", "", "main")
    assert not evil.protected and evil.name != other.name and "/" not in other.name and ".." not in other.name
    assert scope_of("evil", "", "main") == evil  # stable: the same branch finds its own again
    assert not scope_of("", "", "main", "a" * 40).protected  # a commit of no branch
    assert not scope_of("main", "", None).protected  # no default branch known: nothing is protected


def test_a_branch_scope_unused_for_days_is_removed_unless_a_build_holds_it(tmp_path: Path) -> None:
    import fcntl
    import time

    from voltci.git import Mirror
    from voltci.runner import environments, workspace

    scopes = tmp_path / "pool" / "scopes"
    old, held, fresh = (scopes / name for name in ("branch-old-1", "branch-held-2", "branch-new-3"))
    for pool in (old, held, fresh):
        (pool / "0").mkdir(parents=True)
        (pool / "0.lock").touch()
    long_ago = time.time() - workspace.SCOPE_UNUSED_S - 60
    for pool in (old, held):
        os.utime(pool, (long_ago, long_ago))
    mirror = Mirror(tmp_path / "mirrors", "proj", str(tmp_path / "nowhere"))
    with open(held / "0.lock") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        workspace.remove_unused_scopes(scopes, mirror)
    assert not old.exists() and held.exists() and fresh.exists()

    envs = tmp_path / "envs" / environments.SCOPES
    stale, used = envs / "branch-old-1" / "abc-0", envs / "branch-new-3" / "abc-0"
    for env in (stale, used):
        env.mkdir(parents=True)
    os.utime(stale, (long_ago, long_ago))
    environments._remove_unused_scopes(envs)
    assert not (envs / "branch-old-1").exists() and used.exists()


def test_what_a_build_left_is_removed_however_deep_locked_or_linked(tmp_path: Path) -> None:
    """Deeper than Python's stack, directories made unreadable, links to the host: all of it goes, and
    nothing the links point to."""
    import sys

    left, host = tmp_path / "scratch", tmp_path / "host"
    host.mkdir()
    (host / "keep").write_text("host file")
    left.mkdir()
    fd = os.open(left, os.O_RDONLY)
    for _ in range(sys.getrecursionlimit() + 500):  # made a level at a time: os.makedirs recurses too
        os.mkdir("d", dir_fd=fd)
        below = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = below
    os.close(os.open("bottom", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
    os.close(fd)
    (left / "locked" / "inner").mkdir(parents=True)
    (left / "locked" / "inner" / "f").write_text("x")
    os.chmod(left / "locked" / "inner", 0)
    os.chmod(left / "locked", 0)
    (left / "to-host").symlink_to(host)
    (left / "file-to-host").symlink_to(host / "keep")
    untrusted.remove_tree(left)
    assert not os.path.lexists(left)
    assert (host / "keep").read_text() == "host file"
    untrusted.remove_tree(left)  # nothing there: nothing happens


def test_make_dirs_makes_what_is_missing_and_never_follows_a_link(tmp_path: Path) -> None:
    """tox's changedir, made as tox makes it, in a tree whoever pushed to it wrote: a link or a file on the
    way is refused, and nothing is made behind it."""
    tree, host = tmp_path / "tree", tmp_path / "host"
    tree.mkdir()
    host.mkdir()
    untrusted.make_dirs(tree / "a" / "b", tree)
    untrusted.make_dirs(tree / "a" / "b", tree)  # already there: nothing to do
    assert (tree / "a" / "b").is_dir()
    (tree / "link").symlink_to(host)
    (tree / "file").write_text("x")
    for where in ("link", "link/deeper", "file/deeper"):
        with pytest.raises(untrusted.NotInside):
            untrusted.make_dirs(tree / where, tree)
    with pytest.raises(untrusted.NotInside):
        untrusted.make_dirs(tree / ".." / "outside", tree)
    assert list(host.iterdir()) == [] and not (tmp_path / "outside").exists()
