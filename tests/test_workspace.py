"""The per-host workspace pool: a reused worktree is exactly the commit (nothing left of the last
build), damage to a worktree or to the mirror is repaired, and concurrent builds get their own."""

from __future__ import annotations

import shutil
import subprocess

from voltci.config import host_dir
from voltci.git import Mirror
from voltci.runner.workspace import checkout


def files(tree) -> dict[str, str]:
    return {str(p.relative_to(tree)): p.read_text() for p in sorted(tree.rglob("*"))
            if p.is_file() and ".git" not in p.relative_to(tree).parts}


def test_a_reused_worktree_is_exactly_the_commit(settings, make_repo) -> None:
    repo = make_repo()
    first = repo.commit({"a.txt": "1", "keep.txt": "k", ".gitignore": "*.pyc\n"}, "one")
    second = repo.commit({"a.txt": "2", "new/b.txt": "b", "keep.txt": None}, "two")
    with checkout(settings.workspace_dir, "proj", str(repo.path), first, branch="main") as ws:
        used = ws.tree
        (ws.tree / "a.txt").write_text("changed by a test")
        (ws.tree / "junk.txt").write_text("left behind")
        (ws.tree / "cache.pyc").write_text("ignored, left behind")
        (ws.tree / "sub").mkdir()
        subprocess.run(["git", "init", "-q", str(ws.tree / "sub" / "nested")], check=True)
    with checkout(settings.workspace_dir, "proj", str(repo.path), second, branch="main") as ws:
        assert ws.tree == used  # the same worktree, switched
        assert files(ws.tree) == {".gitignore": "*.pyc\n", "a.txt": "2", "new/b.txt": "b"}
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ws.tree, capture_output=True, text=True).stdout
        assert head.strip() == second


def test_concurrent_builds_get_their_own_worktrees(settings, make_repo) -> None:
    repo = make_repo()
    sha = repo.commit({"a.txt": "1"}, "one")
    with checkout(settings.workspace_dir, "proj", str(repo.path), sha, branch="main") as one, \
            checkout(settings.workspace_dir, "proj", str(repo.path), sha, branch="main") as two:
        assert one.tree != two.tree and files(one.tree) == files(two.tree) == {"a.txt": "1"}


def built_once(settings, make_repo):
    """A repository with one commit that was checked out once: (repo, commit, worktree, mirror)."""
    repo = make_repo()
    first = repo.commit({"a.txt": "1"}, "one")
    with checkout(settings.workspace_dir, "proj", str(repo.path), first, branch="main") as ws:
        tree = ws.tree
    return repo, first, tree, Mirror(host_dir(settings.workspace_dir) / "mirrors", "proj", str(repo.path))


def test_a_damaged_worktree_and_a_deleted_mirror_are_repaired(settings, make_repo) -> None:
    repo, first, tree, mirror = built_once(settings, make_repo)
    # A checkout killed half-way leaves the worktree's index lock behind.
    (mirror.path / "worktrees" / tree.name / "index.lock").write_text("")
    second = repo.commit({"a.txt": "2"}, "two")
    with checkout(settings.workspace_dir, "proj", str(repo.path), second, branch="main") as ws:
        assert files(ws.tree) == {"a.txt": "2"}
    shutil.rmtree(mirror.path)  # the mirror is gone (disk cleanup, or damaged and removed)
    third = repo.commit({"a.txt": "3"}, "three")
    with checkout(settings.workspace_dir, "proj", str(repo.path), third, branch="main") as ws:
        assert files(ws.tree) == {"a.txt": "3"}
    (tree / ".git").unlink()  # the worktree's link to its mirror is gone
    with checkout(settings.workspace_dir, "proj", str(repo.path), first, branch="main") as ws:
        assert files(ws.tree) == {"a.txt": "1"}


def test_a_new_commit_is_fetched_and_switched_to_in_place(settings, make_repo) -> None:
    repo, _, tree, mirror = built_once(settings, make_repo)
    sentinel = mirror.path / "worktrees" / tree.name / "volt-sentinel"
    sentinel.write_text("the worktree was not made again")
    pushed = repo.commit({"a.txt": "2"}, "pushed after the mirror was made")
    with checkout(settings.workspace_dir, "proj", str(repo.path), pushed, branch="main") as ws:
        assert ws.tree == tree and files(ws.tree) == {"a.txt": "2"}
    assert sentinel.exists()


def test_a_mirror_that_lost_objects_is_made_again(settings, make_repo) -> None:
    repo, _, _, mirror = built_once(settings, make_repo)
    subprocess.run(["git", "fetch", "-q", "origin"], cwd=mirror.path, check=True)
    second = repo.commit({"a.txt": "2"}, "two")
    subprocess.run(["git", "fetch", "-q", "origin"], cwd=mirror.path, check=True)
    # Objects deleted under the mirror (disk trouble, a careless cleanup): its refs say it has them.
    for path in (mirror.path / "objects").rglob("*"):
        if path.is_file() and path.parent.name not in ("info",):
            path.unlink()
    with checkout(settings.workspace_dir, "proj", str(repo.path), second, branch="main") as ws:
        assert files(ws.tree) == {"a.txt": "2"}
