"""Trust scopes: which builds may share what a build leaves behind on a runner host.

A runner reuses things between builds — virtual environments (with the build requirements installed in
them), worktrees — and a build's setup steps write into them. Whoever can push a branch could then
poison what the next build of another branch runs: a `.pth` file in a shared environment runs in every
later build's tests. So each build runs in a scope, and writes only what builds of its own scope read:

- the protected branches (the `protected_branches` setting, names or globs; by default the
  repository's default branch, as its mirror's HEAD names it) share one scope;
- every other branch has a scope of its own, seeded from the protected scope's environment without
  being able to change it (environments.py shows it through an overlay, the protected environment the
  read-only lower layer), and worktrees of its own (workspace.py);
- a build of no branch (a commit built by its id) has a scope of its own commit;
- a pull request's builds have a scope of their own, whatever branch they would merge into: anyone
  wrote their code, a protected branch's name on them changes nothing.

Within any scope, the tests see the environment read-only: only setup steps install.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from dataclasses import dataclass

from voltci.config import branch_patterns
from voltci.models import PROTECTED_SCOPE

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Scope:
    """A build's trust scope: `name` is a file name (PROTECTED_SCOPE, or one per branch), `branch` what it is of."""

    name: str
    branch: str
    protected: bool
    pull: int = 0  # a pull request's scope: its number

    def describe(self) -> str:
        if self.pull:
            return (f"pull request #{self.pull}: an environment and worktrees of its own, seeded from the protected "
                    "branches' but never changing them")
        if self.protected:
            return f"protected branch '{self.branch}': environments and worktrees shared with the protected branches"
        what = f"branch '{self.branch}'" if self.branch else "a commit of no branch"
        return (f"{what}: an environment and worktrees of its own, seeded from the protected branches' but never "
                "changing them")


def scope_of(branch: str, protected: str, default_branch: str | None, commit: str = "", pull: int = 0) -> Scope:
    """The scope of a build of `branch` (or of `commit`, built on its own; or of pull request `pull`,
    never protected), given the `protected_branches` setting and the repository's default branch."""
    if pull:
        return Scope(f"pull-{int(pull)}", f"pull request #{int(pull)}", False, int(pull))
    patterns = branch_patterns(protected) or ([default_branch] if default_branch else [])
    if branch and any(fnmatch.fnmatchcase(branch, pattern) for pattern in patterns):
        return Scope(PROTECTED_SCOPE, branch, True)
    key = branch or f"commit {commit}"
    readable = _UNSAFE.sub("-", key)[:40].strip("-") or "branch"
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]  # no chosen name collides
    return Scope(f"{'branch' if branch else 'commit'}-{readable}-{digest}", branch, False)
