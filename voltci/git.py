"""Running git: argument lists only, a time limit on every call, one line when it fails.

Also the per-host mirrors that the observer and the runners keep of each repository: a bare
mirror fetched incrementally under a file lock, so that several processes on one host share it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from voltci.errors import GitError
from voltci.locks import AllBusy, first_free

SHA = re.compile(r"[0-9a-f]{40}")
SHA_PREFIX = re.compile(r"[0-9a-f]{4,40}")  # as git accepts an abbreviated commit
GIT_TIMEOUT_S = 300.0
LOCK_TIMEOUT_S = 600.0

# git must never ask a person anything, nor read the system's config or print localized messages.
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "SSH_ASKPASS": "true",
           "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"}


def git(args: list[str], cwd: str | Path | None = None, timeout: float = GIT_TIMEOUT_S,
        env_extra: dict[str, str] | None = None) -> str:
    """Run `git ARGS` in its own process group and return its stdout; GitError with git's last line if it fails."""
    code, out, err = git_status(args, cwd, timeout, env_extra)
    if code != 0:
        lines = [line for line in err.splitlines() if line.strip()]
        raise GitError(f"git {args[0]} failed: {lines[-1] if lines else f'exit status {code}'}")
    return out


def git_status(args: list[str], cwd: str | Path | None = None, timeout: float = GIT_TIMEOUT_S,
               env_extra: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run `git ARGS` as git() does, for a command whose exit status is an answer (`merge-tree`: 1 is a
    conflict): its status, stdout and stderr. GitError only when git cannot run or takes too long."""
    env = {**os.environ, **GIT_ENV, **(env_extra or {})}
    try:
        proc = subprocess.Popen(["git", *args], cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, start_new_session=True)
    except OSError as exc:
        raise GitError(f"cannot run git: {exc.strerror}") from None
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise GitError(f"git {args[0]} took longer than {timeout:g} s and was stopped") from None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def is_sha(text: str) -> bool:
    return bool(SHA.fullmatch(text))


def check_branch_name(branch: str) -> str:
    if branch.startswith("-") or not branch:
        raise GitError(f"not a valid branch name: '{branch}'")
    try:
        git(["check-ref-format", "--branch", branch], timeout=10)
    except GitError:
        raise GitError(f"not a valid branch name: '{branch}'") from None
    return branch


def normalize_url(url_or_path: str) -> str:
    """A local path becomes absolute (so runners elsewhere in the tree see the same repo); URLs stay."""
    if "://" in url_or_path or re.match(r"^[\w.-]+@[\w.-]+:", url_or_path):
        return url_or_path
    return str(Path(url_or_path).expanduser().resolve())


def remote_heads(url: str) -> tuple[dict[str, str], str | None]:
    """The branches of a remote (name -> sha) and its default branch, from one `git ls-remote`."""
    if url.startswith("-"):
        raise GitError(f"not a git repository: {url}")
    try:
        out = git(["ls-remote", "--symref", url, "HEAD", "refs/heads/*"], timeout=60)
    except GitError as exc:
        raise GitError(f"not a git repository (or not reachable): {url} ({exc})") from None
    heads: dict[str, str] = {}
    default = None
    for line in out.splitlines():
        left, _, ref = line.partition("\t")
        if left.startswith("ref: ") and ref == "HEAD":
            target = left[len("ref: "):]
            default = target.removeprefix("refs/heads/")
        elif ref.startswith("refs/heads/") and is_sha(left):
            heads[ref.removeprefix("refs/heads/")] = left
    return heads, default


def remote_refs(url: str, pattern: str, most: int = 10_000) -> list[tuple[str, str]]:
    """(sha, ref) of a remote's refs matching `pattern` (`refs/pull/*/head`), from one `git ls-remote`;
    at most `most` of them (a remote with more refs costs a bounded pass)."""
    if url.startswith("-"):
        raise GitError(f"not a git repository: {url}")
    try:
        out = git(["ls-remote", url, pattern], timeout=60)
    except GitError as exc:
        raise GitError(f"not a git repository (or not reachable): {url} ({exc})") from None
    found = []
    for line in out.splitlines()[:most]:
        sha, _, ref = line.partition("\t")
        if is_sha(sha) and ref:
            found.append((sha, ref))
    return found


@contextmanager
def file_lock(path: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """An exclusive lock shared by every process on this host that uses the same mirror."""
    try:
        with first_free([path], timeout):
            yield
    except AllBusy:
        raise GitError(f"timed out after {timeout:g} s waiting for the lock {path}") from None


class Mirror:
    """A bare mirror of one remote in a cache directory of this host; one per URL."""

    def __init__(self, cache_dir: str | Path, name: str, url: str):
        self.url = url
        digest = hashlib.sha1(url.encode()).hexdigest()[:10]
        self.path = Path(cache_dir) / f"{name}-{digest}.git"
        self.lock_path = Path(cache_dir) / f"{name}-{digest}.lock"

    def lock(self) -> AbstractContextManager[None]:
        return file_lock(self.lock_path)

    def _is_healthy(self) -> bool:
        if not (self.path / "HEAD").exists():
            return False
        try:
            git(["rev-parse", "--git-dir"], cwd=self.path, timeout=30)
            return True
        except GitError:
            return False

    def _clone(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        git(["clone", "--mirror", "--quiet", "--", self.url, str(tmp)])
        tmp.rename(self.path)

    def update(self) -> None:
        """Bring the mirror up to date with its remote (caller holds the lock); repair it if broken."""
        if not self._is_healthy():
            self._clone()
            return
        try:
            git(["fetch", "--prune", "--quiet", "origin"], cwd=self.path)
        except GitError:
            # A fetch killed half-way leaves lock files behind; nobody else fetches while we hold the
            # mirror's lock, so they are stale. Clear them and try once more; a remote that is down
            # stays an error, and the mirror is kept for when it is back.
            if not self._remove_stale_locks():
                raise
            git(["fetch", "--prune", "--quiet", "origin"], cwd=self.path)

    def _remove_stale_locks(self) -> bool:
        stale = [p for p in self.path.rglob("*.lock") if p.is_file()]
        for path in stale:
            path.unlink(missing_ok=True)
        return bool(stale)

    def has_commit(self, sha: str) -> bool:
        try:
            git(["cat-file", "-e", f"{sha}^{{commit}}"], cwd=self.path, timeout=30)
            return True
        except GitError:
            return False

    def ensure_commit(self, sha: str) -> None:
        """Make sure the mirror holds `sha`, fetching only when it does not (caller holds the lock)."""
        if not is_sha(sha):
            raise GitError(f"not a full commit sha: '{sha}'")
        if self.has_commit(sha):  # a missing or broken mirror has no commits; update() repairs it
            return
        self.update()
        if not self.has_commit(sha) and self.remote_has(sha):
            self._clone()  # the remote has it but our fetch did not bring it: the mirror lost objects
        if not self.has_commit(sha):
            raise GitError(f"commit {sha[:12]} is not in {self.url} (was it force-pushed away?)")

    def default_branch(self) -> str | None:
        """The branch the remote's HEAD named when the mirror was made: the repository's default."""
        try:  # the mirror's own file (read, not asked of git: this is on every build's way)
            head = (self.path / "HEAD").read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return None
        return head.removeprefix("ref: refs/heads/") if head.startswith("ref: refs/heads/") else None

    def remote_has(self, sha: str) -> bool:
        """Whether a branch of the remote has `sha` as its head or in its history (per the mirror's refs)."""
        try:
            heads, _ = remote_heads(self.url)
        except GitError:
            return False
        if sha in heads.values():
            return True
        try:  # a commit below a head: the mirror's refs know the heads; ask whether sha is an ancestor
            git(["merge-base", "--is-ancestor", sha, "HEAD"], cwd=self.path, timeout=30)
            return True
        except GitError:
            return False
