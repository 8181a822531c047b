"""The observer: watches git repositories and enqueues one build per new commit.

Run by `bin/volt-observe` (or `volt observe`, or inside `volt up`). It keeps its own mirror of each
repository (never touching the user's clone), and for each watched branch enqueues every commit
since the last one it enqueued, oldest first; the first time it sees a branch, only the head.
Its pointer lives in Redis and moves in the same transaction as the enqueue, and build ids are
derived from repo and commit, so a restart or a second observer never builds a commit twice.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from voltci import keys
from voltci.clock import now_iso
from voltci.errors import BadInput, GitError
from voltci.git import Mirror, check_branch_name, git, is_sha, normalize_url, remote_heads
from voltci.models import Build, PointerUpdate
from voltci.outage import Outage
from voltci.store import Store
from voltci.store.channels import Subscription

log = logging.getLogger("volt.observer")
RETRY_BACKOFF_MAX_S = 60.0


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    subject: str
    author: str


def repo_name_for(url: str) -> str:
    """A repository's default name: the last part of its path or URL, without `.git`."""
    base = re.split(r"[/:]", url.rstrip("/"))[-1].removesuffix(".git")
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", base).strip("-")
    return name[:100] or "repo"


class RepoWatch:
    """One watched repository and the branches to build."""

    def __init__(self, store: Store, url: str, name: str | None = None, branches: list[str] | None = None,
                 supersede: list[str] | None = None):
        self.store = store
        self.settings = settings = store.settings
        self.url = normalize_url(url)
        self.name = name or repo_name_for(self.url)
        if not keys.is_valid_repo_name(self.name):
            raise BadInput(f"not a valid repository name: '{self.name}' (use letters, digits, '-' and '_')")
        self.requested_branches = [check_branch_name(b) for b in branches or []]
        self.branches: list[str] = []
        self.default_branch: str | None = None
        # Branches whose queued builds a newer commit supersedes: "all" is every watched branch but the
        # default one, which is superseded only when named.
        self.supersede = set(supersede or [])
        self.mirror = Mirror(Path(settings.workspace_dir) / "observer", self.name, self.url)

    def validate(self) -> None:
        """Check that the repository and its branches exist, then register the repository."""
        if "://" not in self.url and not Path(self.url).exists():
            raise BadInput(f"not a git repository: {self.url} does not exist")
        try:
            heads, default = remote_heads(self.url)
        except GitError as exc:
            raise BadInput(str(exc)) from None
        self.default_branch = default
        if not self.requested_branches:
            if default is None or default not in heads:
                raise BadInput(f"{self.url} has no default branch with commits; name one with --branch")
            self.branches = [default]
        else:
            missing = [b for b in self.requested_branches if b not in heads]
            if missing:
                have = ", ".join(sorted(heads)) or "none"
                raise BadInput(f"unknown branch '{missing[0]}' in {self.url} (it has: {have})")
            self.branches = list(self.requested_branches)
        self.register()

    def register(self) -> None:
        self.store.register_repo(self.name, self.url, self.branches)

    def poll(self) -> list[Build]:
        """One pass: ask the remote where its branches are (`git ls-remote`, a few ms); fetch and
        enqueue only when one moved past its pointer. Returns the builds it created."""
        if not self._moved():
            return []
        with self.mirror.lock():
            self.mirror.update()
        created = []
        for branch in self.branches:
            created += self._poll_branch(branch)
        return created

    def _moved(self) -> bool:
        heads, _ = remote_heads(self.url)
        for branch, pointer in self.store.pointers(self.name, self.branches).items():
            if branch not in heads:
                log.warning("%s: branch '%s' is gone from %s; skipping it", self.name, branch, self.url)
            elif heads[branch] != pointer:
                return True
        return False

    def _poll_branch(self, branch: str) -> list[Build]:
        try:
            head = git(["rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}"],
                       cwd=self.mirror.path, timeout=30).strip()
        except GitError:
            log.warning("%s: branch '%s' is gone from %s; skipping it", self.name, branch, self.url)
            return []
        last = self.store.pointers(self.name, [branch])[branch]
        if last == head:
            return []
        commits = self._new_commits(last, head)
        if len(commits) > self.settings.max_commits_per_poll:
            log.warning("%s/%s: %d new commits; enqueueing the oldest %d now and the rest next pass",
                        self.name, branch, len(commits), self.settings.max_commits_per_poll)
            commits = commits[: self.settings.max_commits_per_poll]
        created = []
        for info in commits:
            build = Build(id=keys.build_id(self.name, info.sha), repo=self.name, url=self.url, commit=info.sha,
                          branch=branch, subject=info.subject, author=info.author, queued_at=now_iso())
            if self.store.submit(build, PointerUpdate(self.name, branch, info.sha)):
                created.append(build)
        if created and self.supersedes(branch):
            for skipped in self.store.supersede(created[-1]):
                log.info("skipped %s %s (%s): superseded by %s", skipped.repo, skipped.short, branch, created[-1].short)
        return created

    def supersedes(self, branch: str) -> bool:
        if branch in self.supersede:
            return True
        return "all" in self.supersede and branch != self.default_branch

    def _new_commits(self, last: str | None, head: str) -> list[CommitInfo]:
        """Commits reachable from head and not from last, oldest first; just the head the first time
        (or when the last commit is no longer known, e.g. after a force-push and gc)."""
        fmt = ["--format=%H%x00%s%x00%an <%ae>"]
        if last and is_sha(last) and self.mirror.has_commit(last):
            out = git(["log", "--reverse", *fmt, f"{last}..{head}"], cwd=self.mirror.path)
        else:
            out = git(["log", "-1", *fmt, head], cwd=self.mirror.path)
        found = []
        for line in out.splitlines():
            sha, subject, author = (line.split("\x00") + ["", ""])[:3]
            if is_sha(sha):
                found.append(CommitInfo(sha, subject, author))
        return found


def observe_loop(watches: list[RepoWatch], poll_s: float, stop: threading.Event,
                 on_build: Callable[[Build], None] = lambda build: None) -> None:
    """Poll every repository each `poll_s` seconds until `stop` is set; a `volt notify` (or a forge's
    webhook) for one of them has it polled at once.

    A failing fetch or an unreachable Redis costs one log line and a retry with backoff, never the loop.
    """
    failures = 0
    listener = NotifyListener(watches[0].store) if watches else None
    outage = Outage(log)
    due = {watch.name for watch in watches}
    while not stop.is_set():
        failed = False
        for watch in watches:
            if watch.name not in due:
                continue
            try:
                for build in watch.poll():
                    log.info("queued %s %s %s (%s)", build.repo, build.commit[:10], build.subject, build.branch)
                    on_build(build)
                outage.ok()
            except GitError as exc:
                failed = True
                log.warning("%s: %s; retrying", watch.name, exc)
            except redis.RedisError as exc:
                failed = True
                outage.failed(exc)
        failures = failures + 1 if failed else 0
        wait = min(poll_s * (2 ** min(failures, 6)), max(poll_s, RETRY_BACKOFF_MAX_S)) if failed else poll_s
        notified = listener.wait(wait, stop) if listener is not None else set()
        names = {watch.name for watch in watches}
        due = (notified & names) or names


class NotifyListener:
    """Waits for the poll interval, or less when a notification names a repository."""

    def __init__(self, store: Store):
        self.store = store
        self.subscription: Subscription | None = None

    def wait(self, seconds: float, stop: threading.Event) -> set[str]:
        """The repositories notified during the wait (empty when it ran out)."""
        deadline = time.monotonic() + seconds
        while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
            try:
                if self.subscription is None:
                    self.subscription = self.store.listen_notify()
                message = self.subscription.get(timeout=min(left, 0.5))
            except redis.RedisError:
                if self.subscription is not None:
                    self.subscription.close()
                self.subscription = None
                stop.wait(min(left, 1.0))  # polling carries on without notifications meanwhile
                continue
            if message is not None and isinstance(message[1].get("repo"), str):
                return {message[1]["repo"]}
        return set()
