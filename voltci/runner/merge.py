"""A pull request as it would merge: its head merged into the current head of its base branch, made by
the runner in its mirror from git objects alone.

`git merge-tree --write-tree` merges two commits without a worktree, an index or a hook, and
`git commit-tree` records the result as a commit whose parents are the base and the head; the build
then checks that commit out like any other (workspace.py). Nothing of the pull request runs on the
runner host: git reads no config but the mirror's own (made by Volt: no filter, merge driver or hook a
commit could name in its `.gitattributes`), no global or system config, no attributes file of the
runner user's. The merge commit's author, committer and dates are fixed, so the same head and base
give the same commit on every runner (a split build's shards and a matrix build's legs test one tree).
"""

from __future__ import annotations

import re

from voltci.errors import GitError, VoltError
from voltci.git import Mirror, check_branch_name, git, git_status, is_sha

MERGE_TIMEOUT_S = 300.0
NAMES_SHOWN = 10  # conflicting files named in the build's reason; the rest are counted
NAME_MAX = 200
# git on the runner host over a pull request's objects: no hook, no fsmonitor, no attributes file of
# the runner user's, none of its config (a filter or merge driver it keeps for its own clones).
SAFE = ["-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "core.attributesFile=/dev/null",
        "-c", "merge.renames=true"]
SAFE_ENV = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_AUTHOR_NAME": "Volt", "GIT_AUTHOR_EMAIL": "volt@localhost",
            "GIT_COMMITTER_NAME": "Volt", "GIT_COMMITTER_EMAIL": "volt@localhost",
            "GIT_AUTHOR_DATE": "@1 +0000", "GIT_COMMITTER_DATE": "@1 +0000"}
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class MergeConflict(VoltError):
    """The pull request's head does not merge into its base branch: the build ends `error` saying so."""


def merged(mirror: Mirror, number: int, head: str, base_branch: str, base: str = "") -> tuple[str, str]:
    """The commit of pull request `number`'s `head` merged into `base` (or, when "", the head of
    `base_branch` after fetching), and that base. MergeConflict names the conflicting files; GitError
    when a commit or the branch is not in the repository."""
    if not is_sha(head) or (base and not is_sha(base)):
        raise GitError("not a full commit sha")
    check_branch_name(base_branch)
    with mirror.lock():
        mirror.update()  # the pull request's head and the base branch's current head
        if not mirror.has_commit(head):
            raise GitError(f"the head {head[:12]} of pull request #{number} is not in {mirror.url} "
                           f"(was it force-pushed away?)")
        if base:
            mirror.ensure_commit(base)
        else:
            base = _branch_head(mirror, base_branch)
        code, out, err = git_status([*SAFE, "merge-tree", "--write-tree", "--name-only", "-z", base, head],
                                    cwd=mirror.path, timeout=MERGE_TIMEOUT_S, env_extra=SAFE_ENV)
        if code == 1:
            raise MergeConflict(conflict_line(number, base_branch, base, out))
        if code != 0:
            lines = [line for line in err.splitlines() if line.strip()]
            raise GitError(f"git merge-tree failed: {lines[-1] if lines else f'exit status {code}'}")
        tree = out.split("\0", 1)[0].strip()
        if not is_sha(tree):
            raise GitError("git merge-tree gave no tree")
        message = f"Merge pull request #{number} ({head[:12]}) into {base_branch} ({base[:12]})"
        commit = git([*SAFE, "commit-tree", tree, "-p", base, "-p", head, "-m", message], cwd=mirror.path,
                     timeout=60, env_extra=SAFE_ENV).strip()
    if not is_sha(commit):
        raise GitError("git commit-tree gave no commit")
    return commit, base


def _branch_head(mirror: Mirror, branch: str) -> str:
    try:
        found = git(["rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}"], cwd=mirror.path,
                    timeout=30).strip()
    except GitError:
        found = ""
    if not is_sha(found):
        raise GitError(f"the base branch '{branch}' of the pull request is not in {mirror.url}")
    return found


def conflict_line(number: int, base_branch: str, base: str, out: str) -> str:
    """One line naming the conflicting files (at most NAMES_SHOWN, each at most NAME_MAX characters,
    unprintable characters shown as '?'), from `merge-tree --name-only -z`'s output: the tree, then each
    conflicting file, then an empty field and git's messages."""
    fields = out.split("\0")[1:]
    names: list[str] = []
    for name in fields:
        if not name:
            break
        if name not in names:
            names.append(name)
    shown = ", ".join(_printable(name) for name in names[:NAMES_SHOWN]) or "files git could not merge"
    more = f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else ""
    return (f"merge conflict: pull request #{number} does not merge into {base_branch} ({base[:10]}): "
            f"{shown}{more}")


def _printable(name: str) -> str:
    name = _UNPRINTABLE.sub("?", name)
    return name if len(name) <= NAME_MAX else name[:NAME_MAX] + "…"
