"""A build's workspace: the commit checked out from this host's mirror into a tree of its own.

The runner calls `checkout()` around a build. The mirror cache lives under the workspace dir and is
shared by every runner of this host. Each repository has a small pool of persistent worktrees of
its mirror, each held by one build at a time under a file lock: a build takes a free one and
switches it to its commit with `git checkout -f` and `git clean -ffdx`, which writes only the
files that differ and leaves nothing of the previous build — the tree is exactly the commit's. A
worktree that git cannot switch (damaged, or its mirror was re-made) is made again. Results and
the log go to a scratch directory beside it, removed afterwards.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from voltci.config import host_dir
from voltci.errors import WorkspaceBusy
from voltci.git import GitError, Mirror, git
from voltci.locks import AllBusy, all_held, first_free
from voltci.models import PullRequest
from voltci.runner import untrusted
from voltci.runner.merge import merged
from voltci.runner.scopes import Scope, scope_of

POOL_SLOTS = 8
SCOPE_UNUSED_S = 3 * 24 * 3600  # a branch scope's worktrees and environments go after three days unused
SLOT_WAIT_S = 600.0
SLOT_POLL_S = 0.2


@dataclass(frozen=True)
class Workspace:
    tree: Path  # the checked-out commit
    scratch: Path  # results and log of the build, outside the tree
    scope: Scope  # whose worktrees and environments the build may write (scopes.py)
    base: str = ""  # a pull request's build: the base commit its head was merged into
    git_dir: Path | None = None  # the mirror the tree was checked out from (its objects, read as data)
    commit: str = ""  # what the tree is: the build's commit, or a pull request's merge


@contextmanager
def checkout(workspace_dir: str, repo: str, url: str, sha: str, stale_after_s: float = 24 * 3600,
             branch: str = "", protected: str = "", pull: PullRequest | None = None) -> Iterator[Workspace]:
    """Check `sha` (of `branch`) out into a worktree of this host's pool for `repo` and the build's trust
    scope (`protected`: the protected_branches setting), held for the `with` block. A pull request's
    build (`pull`) checks out its head merged into its base branch (merge.py) in its own scope; the
    workspace's `base` is the base commit it merged into.

    Scratch directories older than `stale_after_s` (longer than any build may run) were left by a
    runner that was killed mid-build, and are removed on the way; so are the worktrees of scopes no
    build used for SCOPE_UNUSED_S.
    """
    base = host_dir(workspace_dir)
    mirror = Mirror(base / "mirrors", repo, url)
    builds = base / "builds"
    builds.mkdir(parents=True, exist_ok=True)
    remove_stale(builds, stale_after_s)
    if mirror.default_branch() is None:  # no mirror yet: it names the default branch
        with mirror.lock():
            mirror.ensure_commit(sha)
    scope = scope_of(branch, protected, mirror.default_branch(), sha, pull.number if pull else 0)
    merged_into = ""
    if pull is not None:
        sha, merged_into = merged(mirror, pull.number, pull.head, pull.base_branch or branch or
                                  mirror.default_branch() or "", pull.base)
    pool = base / "pool" / mirror.path.stem
    remove_unused_scopes(pool / "scopes", mirror)
    if not scope.protected:
        pool = pool / "scopes" / scope.name
    try:
        with first_free([pool / f"{slot}.lock" for slot in range(POOL_SLOTS)], SLOT_WAIT_S, SLOT_POLL_S) as slot:
            scratch = Path(tempfile.mkdtemp(prefix=f"{repo}-{sha[:10]}-", dir=builds))
            try:
                switch(mirror, pool / str(slot), sha)
                os.utime(pool)  # the scope is in use: its worktrees stay
                yield Workspace(pool / str(slot), scratch, scope, merged_into, mirror.path, sha)
            finally:
                untrusted.remove_tree(scratch)
    except AllBusy:
        raise WorkspaceBusy(f"all {POOL_SLOTS} workspaces of {pool.name} on this host stayed busy") from None


def switch(mirror: Mirror, tree: Path, sha: str) -> None:
    """Make `tree` exactly commit `sha`: reuse the worktree when git can; fetch the commit into the mirror
    only when the switch fails for want of it; make the worktree again when it is damaged."""
    if _switch_in_place(mirror, tree, sha):
        return
    with mirror.lock():
        if not mirror.has_commit(sha):
            mirror.ensure_commit(sha)  # fetches it, or makes a missing or broken mirror again
    if _switch_in_place(mirror, tree, sha):
        return
    with mirror.lock():
        untrusted.remove_tree(tree)
        git(["worktree", "prune"], cwd=mirror.path, timeout=60)
        git([*UNTRUSTED_TREE, "worktree", "add", "--force", "--detach", "--quiet", str(tree), sha], cwd=mirror.path,
            env_extra=NO_USER_CONFIG)


# git on the host, in a tree the last build wrote: no hook, no fsmonitor, and none of the runner user's
# own config (a filter or a credential helper it keeps for its own clones), whatever the tree holds.
UNTRUSTED_TREE = ["-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false"]
NO_USER_CONFIG = {"GIT_CONFIG_GLOBAL": "/dev/null"}


def _switch_in_place(mirror: Mirror, tree: Path, sha: str) -> bool:
    """Switch the worktree `tree` to `sha` through the mirror's own record of it (its admin directory),
    never through what the tree's `.git` says: that is rewritten first, whatever the last build left."""
    admin = _admin_dir(mirror, tree)
    if admin is None or not _restore_link(tree, admin):
        return False
    where = [*UNTRUSTED_TREE, f"--git-dir={admin}", f"--work-tree={tree}"]
    try:
        git([*where, "checkout", "--force", "--detach", "--quiet", sha], cwd=tree, env_extra=NO_USER_CONFIG)
        git([*where, "clean", "-ffdxq"], cwd=tree, env_extra=NO_USER_CONFIG)
        return True
    except GitError:
        return False  # the commit is not in the mirror, a killed checkout's lock, or a re-made mirror


def _admin_dir(mirror: Mirror, tree: Path) -> Path | None:
    """The mirror's directory for the worktree at `tree` (mirror/worktrees/NAME, whose `gitdir` names the
    tree's .git), or None when the mirror has none: the worktree is made again."""
    expected = {str(tree / ".git"), os.path.join(os.path.realpath(tree), ".git")}  # as git wrote it
    try:
        admins = list((mirror.path / "worktrees").iterdir())
    except OSError:
        return None
    for admin in admins:
        try:
            if (admin / "gitdir").read_text(encoding="utf-8", errors="replace").strip() in expected:
                return admin
        except OSError:
            continue
    return None


def _restore_link(tree: Path, admin: Path) -> bool:
    """Write the tree's `.git` link to its admin directory anew, after removing whatever stands there (a
    file, a link, a directory a build made)."""
    link = tree / ".git"
    found = untrusted.kind(link, tree)
    try:
        if found == "dir":
            untrusted.remove_tree(link)
        elif found is not None:
            untrusted.remove(link, tree)
        fd = os.open(link, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(f"gitdir: {admin}\n")
    return True


def remove_unused_scopes(scopes: Path, mirror: Mirror, unused_s: float = SCOPE_UNUSED_S) -> None:
    """Remove the worktrees of branch scopes no build used for `unused_s` (a branch merged or deleted),
    each only when none of its slots is held."""
    try:
        entries = list(scopes.iterdir()) if scopes.is_dir() else []
    except OSError:
        return
    now = time.time()
    removed = 0
    for pool in entries:
        try:
            if not pool.is_dir() or now - pool.stat().st_mtime < unused_s:
                continue
        except OSError:
            continue
        try:
            with all_held([pool / f"{slot}.lock" for slot in range(POOL_SLOTS)]):
                untrusted.remove_tree(pool)
                removed += 1
        except AllBusy:
            continue
    if removed:  # the mirror forgets the worktrees that went
        with mirror.lock():
            try:
                git(["worktree", "prune"], cwd=mirror.path, timeout=60)
            except GitError:
                pass


def remove_stale(builds: Path, stale_after_s: float) -> None:
    now = time.time()
    for entry in builds.iterdir():
        try:
            if now - entry.stat().st_mtime > stale_after_s:
                untrusted.remove_tree(entry)
        except OSError:
            continue  # removed by another runner meanwhile
