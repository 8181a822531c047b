"""A build's workspace: the commit checked out from this host's mirror into a directory of its own.

The runner calls `checkout()` around a build. The mirror cache lives under the workspace dir and is
shared by every runner of this host; each build gets a fresh detached worktree of the commit and a
scratch directory beside it (results and log, outside the tree), both removed afterwards.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from voltci.git import GitError, Mirror, git


@dataclass(frozen=True)
class Workspace:
    tree: Path  # the checked-out commit
    scratch: Path  # results and log of the build, outside the tree


def host_dir(workspace_dir: str) -> Path:
    """Per-host part of the workspace dir, so a shared (network) cache dir never mixes hosts."""
    return Path(workspace_dir) / socket.gethostname()


@contextmanager
def checkout(workspace_dir: str, repo: str, url: str, sha: str,
             stale_after_s: float = 24 * 3600) -> Iterator[Workspace]:
    """Check `sha` out into a fresh worktree of this host's mirror of `url`; remove it afterwards.

    Build directories older than `stale_after_s` (longer than any build may run) were left by a
    runner that was killed mid-build, and are removed on the way.
    """
    base = host_dir(workspace_dir)
    mirror = Mirror(base / "mirrors", repo, url)
    builds = base / "builds"
    builds.mkdir(parents=True, exist_ok=True)
    remove_stale(builds, stale_after_s)
    root = Path(tempfile.mkdtemp(prefix=f"{repo}-{sha[:10]}-", dir=builds))
    tree, scratch = root / "tree", root / "scratch"
    scratch.mkdir()
    try:
        with mirror.lock():
            mirror.ensure_commit(sha)
            git(["worktree", "add", "--detach", "--quiet", str(tree), sha], cwd=mirror.path)
        yield Workspace(tree, scratch)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if mirror.path.exists():
            with mirror.lock():
                try:
                    git(["worktree", "prune"], cwd=mirror.path, timeout=60)
                except GitError:
                    pass  # pruning is housekeeping; the next build prunes again



def remove_stale(builds: Path, stale_after_s: float) -> None:
    now = time.time()
    for entry in builds.iterdir():
        try:
            if now - entry.stat().st_mtime > stale_after_s:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            continue  # removed by another runner meanwhile
