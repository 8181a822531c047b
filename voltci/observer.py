"""The observer: watches git repositories and enqueues one build per new commit.

Run by `bin/volt-observe` (or `volt observe`, or inside `volt up`). It keeps its own mirror of each
repository (never touching the user's clone), and for each watched branch enqueues every commit
since the last one it enqueued, as one push: the head goes first and the others wait for culprit
finding (bisect.py, dispatch.py); the first time it sees a branch, only the head. Branches are names
or globs (`release/*`, `*`), matched again at every poll: a branch deleted upstream stops being
watched, one created later is picked up (its head only). Its pointer lives in Redis and moves in the
same transaction as the enqueue, and build ids are derived from repo and commit, so a restart or a
second observer never builds a commit twice.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import redis

from voltci import keys
from voltci.bisect import halving
from voltci.clock import now_iso
from voltci.dispatch import Priority
from voltci.errors import BadInput, GitError
from voltci.failover import PrimaryWatch
from voltci.forge import ForgeLink
from voltci.git import Mirror, check_branch_name, git, is_sha, normalize_url, remote_heads, remote_refs
from voltci.models import Build, PointerUpdate, Push, QueuedFor
from voltci.outage import Outage
from voltci.pullrequests import waiting_for_approval
from voltci.pulls import EVERYONE, PullState, PullWait, pull_heads
from voltci.requeue import QueuedJournal
from voltci.runner.scopes import scope_of
from voltci.store import Store
from voltci.store.channels import Subscription

if TYPE_CHECKING:
    from voltci.watchlist import WatchList

log = logging.getLogger("volt.observer")
RETRY_BACKOFF_MAX_S = 60.0
MAX_PULLS_PER_POLL = 20  # pull requests' new heads recorded per pass; the rest at the next


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    subject: str
    author: str


@dataclass(frozen=True)
class Wanted:
    """Someone waits for what the observer finds on `ref` (a branch, `refs/heads/…`, or "" for every
    branch): a `volt notify` or a forge's push webhook. The heads found go before backlog."""

    ref: str
    via: QueuedFor

    def covers(self, branch: str) -> bool:
        return not self.ref or self.ref in (branch, f"refs/heads/{branch}")


def is_pattern(branch: str) -> bool:
    """Whether a branch given to watch is a glob (`release/*`, `*`); git refuses these characters in names."""
    return any(ch in branch for ch in "*?[")


def check_branch_pattern(branch: str) -> str:
    """A branch name, or a glob of them: one line of bad input otherwise."""
    if not is_pattern(branch):
        try:
            return check_branch_name(branch)
        except GitError as exc:
            raise BadInput(str(exc)) from None
    if branch.startswith("-") or any(ch.isspace() or ord(ch) < 32 for ch in branch):
        raise BadInput(f"not a valid branch pattern: '{branch}'")
    return branch


def repo_name_for(url: str) -> str:
    """A repository's default name: the last part of its path or URL, without `.git`."""
    base = re.split(r"[/:]", url.rstrip("/"))[-1].removesuffix(".git")
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", base).strip("-")
    return name[:100] or "repo"


class RepoWatch:
    """One watched repository and the branches to build."""

    def __init__(self, store: Store, url: str, name: str | None = None, branches: list[str] | None = None,
                 supersede: list[str] | None = None, priority: Priority = Priority.NORMAL, interrupt: bool = False,
                 *, pull_requests: bool = False, trusted_authors: list[str] | None = None,
                 forge: ForgeLink | None = None):
        self.store = store
        self.settings = settings = store.settings
        self.url = normalize_url(url)
        self.name = name or repo_name_for(self.url)
        if not keys.is_valid_repo_name(self.name):
            raise BadInput(f"not a valid repository name: '{self.name}' (use letters, digits, '-' and '_')")
        # Names or globs, matched against the remote's branches at every poll (none: its default branch).
        self.requested_branches = [check_branch_pattern(b) for b in branches or []]
        self.branches: list[str] = []
        self.default_branch: str | None = None
        # Branches whose queued builds a newer commit supersedes (names or globs): "all" is every watched
        # branch but the default one, which is superseded only when named.
        self.supersede = set(supersede or [])
        # With `interrupt`, a newer commit of such a branch also cancels its older running builds.
        if interrupt and not self.supersede:
            raise BadInput("--interrupt needs --supersede BRANCH: it cancels the running builds that a newer "
                           "commit of a superseded branch makes pointless")
        self.interrupt = interrupt
        self.priority = priority
        # Pull requests are built too (their refs on the forge), those of untrusted forks once approved.
        self.pull_requests = pull_requests
        self.trusted_authors = tuple(trusted_authors or ())
        self.forge = forge  # where statuses go and webhooks come from (forge.py); None: no forge
        self.mirror = Mirror(Path(settings.workspace_dir) / "observer", self.name, self.url)
        self.journal = QueuedJournal()  # what it queued lately: a failover may take it (requeue.py)

    @property
    def rules(self) -> tuple:
        """What this watch was asked to do (a reloaded config file compares them)."""
        return (self.url, self.name, tuple(self.requested_branches), tuple(sorted(self.supersede)),
                self.priority, self.interrupt, self.pull_requests, self.trusted_authors, self.forge)

    def validate(self) -> None:
        """Check that the repository and its branches exist, then register the repository."""
        self.check()
        self.register()

    def check(self) -> None:
        """Check that the repository and its branches exist, writing nothing (`volt up` checks its
        repositories before it starts Redis)."""
        if "://" not in self.url and not Path(self.url).exists():
            raise BadInput(f"not a git repository: {self.url} does not exist")
        try:
            heads, default = remote_heads(self.url)
        except GitError as exc:
            raise BadInput(str(exc)) from None
        self.default_branch = default
        if not self.requested_branches and (default is None or default not in heads):
            raise BadInput(f"{self.url} has no default branch with commits; name one with --branch")
        missing = [b for b in self.requested_branches if not is_pattern(b) and b not in heads]
        if missing:
            have = ", ".join(sorted(heads)) or "none"
            raise BadInput(f"unknown branch '{missing[0]}' in {self.url} (it has: {have})")
        self.branches = self._matching(heads, default)

    def register(self) -> None:
        self.store.repos.register(self.name, self.url, self.branches, self.priority.value,
                                  forge=self.forge.to_dict() if self.forge else None,
                                  pull_requests=self.pull_requests, trusted_authors=list(self.trusted_authors))

    def _matching(self, heads: dict[str, str], default: str | None) -> list[str]:
        """The remote's branches that are watched: the default one, or those the names and globs match."""
        if not self.requested_branches:
            return [default] if default and default in heads else []
        found: list[str] = []
        for pattern in self.requested_branches:
            found += [b for b in sorted(heads) if b not in found and fnmatch.fnmatchcase(b, pattern)]
        return found

    def _follow(self, heads: dict[str, str], default: str | None) -> None:
        """Branches deleted upstream stop being watched (their pointer is dropped: created again, a
        branch starts from its head); branches created since that the globs match are watched."""
        self.default_branch = default
        now = self._matching(heads, default)
        gone = [b for b in self.branches if b not in now]
        new = [b for b in now if b not in self.branches]
        for branch in gone:
            log.info("%s: branch '%s' is gone from %s; no longer watched", self.name, branch, self.url)
            self.store.repos.drop_pointer(self.name, branch)
        for branch in new:
            log.info("%s: watching branch '%s' (new, or back) from its head", self.name, branch)
        if gone or new:
            self.branches = now
            self.register()

    def poll(self, wanted: Wanted | None = None) -> list[Build]:
        """One pass: ask the remote where its branches are (`git ls-remote`, a few ms); fetch and
        enqueue only when one moved past its pointer. With `wanted`, the heads of the branches it
        names go before backlog. Returns the builds it created, oldest first per branch."""
        heads, default = remote_heads(self.url)
        self._follow(heads, default)
        pointers = self.store.repos.pointers(self.name, self.branches)
        self._protect_heads(pointers)
        pulls = self._pull_heads() if self.pull_requests else {}
        if all(heads.get(b) == pointers.get(b) for b in self.branches) and not pulls:
            self._want_heads(wanted, pointers)
            return []
        with self.mirror.lock():
            self.mirror.update()
        created = []
        for branch in self.branches:
            created += self._poll_branch(branch, wanted)
        self._want_heads(wanted, self.store.repos.pointers(self.name, self.branches))
        return created + self._poll_pulls(pulls)

    def _pull_heads(self) -> dict[int, str]:
        """The pull requests whose head is new to Volt (`git ls-remote` of the forge's pull-request refs):
        number -> head, the newest numbers first; a closed one's ref is not new (forges keep them)."""
        refspec = self.forge.pull_refspec() if self.forge else "refs/pull/*/head"
        found = pull_heads(remote_refs(self.url, refspec), refspec, keys.PULLS_KEPT)
        known = {state.number: state for state in self.store.pulls.all(self.name)}
        return {number: head for number, head in found.items()
                if number not in known or (known[number].head != head and known[number].state != PullWait.CLOSED)}

    def _poll_pulls(self, pulls: dict[int, str]) -> list[Build]:
        """Record each pull request's new head and queue its build where it may be built (store/pulls.py):
        at most MAX_PULLS_PER_POLL a pass, the newest numbers first. What polling cannot see — who opened
        it, from where — a webhook tells; until then an unknown pull request waits for approval, unless
        every pull request is trusted (`trusted_authors = ["*"]`)."""
        created = []
        everyone = EVERYONE in self.trusted_authors
        for number, head in list(pulls.items())[:MAX_PULLS_PER_POLL]:
            found = PullState(number, head, base_branch=self.default_branch or "", trusted=everyone)
            what, state, build = self.store.pulls.seen(self.name, found, subject=self._subject(head))
            if build is not None:
                log.info("%s: pull request #%d at %s: queued, as it would merge into %s", self.name, number,
                         head[:10], build.branch)
                created.append(build)
            elif what == "waiting":
                log.info("%s: pull request #%d at %s waits for approval (volt approve %s %d)", self.name, number,
                         head[:10], self.name, number)
                waiting_for_approval(self.store, self.name, state)
            elif what == "full":
                log.warning("%s: pull request #%d not recorded: %d pull requests wait for approval already",
                            self.name, number, keys.PULLS_WAITING_MAX)
        return created

    def _subject(self, sha: str) -> str:
        """The subject of a commit of the mirror ("" when it has not got it)."""
        try:
            return git(["log", "-1", "--format=%s", sha, "--"], cwd=self.mirror.path, timeout=30).strip()[:500]
        except GitError:
            return ""

    def _protected(self, branch: str) -> bool:
        return scope_of(branch, self.settings.protected_branches, self.default_branch).protected

    def _protect_heads(self, pointers: dict[str, str | None]) -> None:
        """The head each protected branch was built at gets a result made in the protected scope: a commit
        built first on another branch (a pull request merged by fast-forward) is built again once its
        build there ends (see _protect)."""
        for branch, sha in pointers.items():
            if sha and self._protected(branch):
                self._protect(branch, [sha])

    def _protect(self, branch: str, commits: list[str]) -> None:
        """Builds of `commits`, heads protected `branch` reached, that ran (or would run) in another
        branch's trust scope: its setup steps may have changed what its tests ran with, and that result
        must not stand for the protected branch. Only heads: the commits below one came with it (a pull
        request merged by fast-forward) and keep the results of the branch they were built on; built
        again here, their setup steps would write the protected scope's environment."""
        for sha in commits:
            done = self.store.builds.protect(keys.build_id(self.name, sha), branch)
            if done:
                log.info("%s %s: first built on another branch; %s as a build of protected %s", self.name,
                         sha[:10], "built again" if done == "rebuilt" else "moved", branch)

    def _want_heads(self, wanted: Wanted | None, pointers: dict[str, str | None]) -> None:
        """A notification for a commit already queued: it goes before backlog too."""
        if wanted is None:
            return
        for branch, sha in pointers.items():
            if sha and wanted.covers(branch):
                self.store.builds.want(keys.build_id(self.name, sha), wanted.via)

    def _poll_branch(self, branch: str, wanted: Wanted | None = None) -> list[Build]:
        try:
            head = git(["rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}"],
                       cwd=self.mirror.path, timeout=30).strip()
        except GitError:
            log.warning("%s: branch '%s' is gone from %s; skipping it", self.name, branch, self.url)
            return []
        last = self.store.repos.pointers(self.name, [branch])[branch]
        if last == head:
            return []
        commits, base = self._new_commits(last, head, branch)
        if not commits:  # the branch moved back to a commit it had: nothing new to build
            log.info("%s/%s: moved back to %s, which is not new; nothing to build", self.name, branch, head[:10])
            self.store.repos.set_pointer(self.name, branch, head)
            return []
        if len(commits) > self.settings.max_commits_per_poll:
            log.warning("%s/%s: %d new commits; enqueueing the oldest %d now and the rest next pass",
                        self.name, branch, len(commits), self.settings.max_commits_per_poll)
            commits = commits[: self.settings.max_commits_per_poll]
        queued = now_iso()
        builds = [Build(id=keys.build_id(self.name, info.sha), repo=self.name, url=self.url, commit=info.sha,
                        branch=branch, subject=info.subject, author=info.author, queued_at=queued) for info in commits]
        if builds and wanted is not None and wanted.covers(branch):
            builds[-1].queued_for = wanted.via.value
        push = None
        if len(builds) > 1:
            push = Push(builds[-1].id, self.name, branch, base or "", [b.commit for b in builds],
                        rewritten=base is not None and base != last, queued_at=queued)
        # Head first, then halving order (the dispatcher reorders the whole queue right after; under
        # `dispatch = "fifo"` they go oldest first, as queued).
        first = None
        if self.settings.dispatch == "fair":
            first = [builds[-1].id] + [builds[j - 1].id for j in halving(0, len(builds))] if builds else []
        created = self.store.builds.submit_push(builds, PointerUpdate(self.name, branch, commits[-1].sha), push, first)
        self.journal.remember(created)
        if self._protected(branch) and commits[-1].sha not in {build.commit for build in created}:
            self._protect(branch, [commits[-1].sha])
        if created and self.supersedes(branch):
            for skipped in self.store.builds.supersede(created[-1]):
                log.info("skipped %s %s (%s): superseded by %s", skipped.repo, skipped.short, branch, created[-1].short)
            if self.interrupt:
                for stopped in self.store.builds.interrupt(created[-1]):
                    log.info("interrupted %s %s (%s): superseded by %s", stopped.repo, stopped.short, branch,
                             created[-1].short)
        return created

    def recover(self) -> list[Build]:
        """After the primary changed: register again (the registry may be gone too) and queue again the
        builds this observer queued lately that the new primary lacks."""
        self.register()
        again = self.journal.queue_lost(self.store)
        for build in again:
            log.warning("%s %s (%s): its build was lost with the failover; queued again", self.name, build.short,
                        build.branch)
        return again

    def supersedes(self, branch: str) -> bool:
        if any(fnmatch.fnmatchcase(branch, pattern) for pattern in self.supersede if pattern != "all"):
            return True
        return "all" in self.supersede and branch != self.default_branch

    def _new_commits(self, last: str | None, head: str, branch: str = "") -> tuple[list[CommitInfo], str | None]:
        """Commits reachable from head and not from last, oldest first, and the commit they build on;
        just the head the first time (or when the last commit is no longer known, e.g. after a
        force-push and gc). After a force-push, they build on where the new history leaves the old,
        and culprit finding covers only them: the log says so."""
        # One record a commit, ended by NUL (-z): a subject may hold any other character, a line
        # separator followed by a sha included, and must never read as a commit of its own.
        fmt = ["-z", "--format=%H%x00%s%x00%an <%ae>"]
        base = None
        if last and is_sha(last) and self.mirror.has_commit(last):
            out = git(["log", "--reverse", *fmt, f"{last}..{head}"], cwd=self.mirror.path)
            base = last
            if not self._is_ancestor(last, head):
                base = self._merge_base(last, head)
                count = len(_records(out))
                log.warning("%s/%s: history rewritten (force-push): %s is no longer in it; culprit finding covers "
                            "only the %d new commit(s)%s", self.name, branch, last[:10], count,
                            f" since {base[:10]}" if base else " (no common ancestor)")
        else:
            if last:
                log.warning("%s/%s: the last commit built, %s, is no longer known (force-push and gc?); "
                            "building the head only", self.name, branch, last[:10])
            out = git(["log", "-1", *fmt, head], cwd=self.mirror.path)
        found = []
        for sha, subject, author in _records(out):
            if is_sha(sha):
                found.append(CommitInfo(sha, subject, author))
        return found, base

    def _is_ancestor(self, older: str, newer: str) -> bool:
        try:
            git(["merge-base", "--is-ancestor", older, newer], cwd=self.mirror.path, timeout=60)
            return True
        except GitError:
            return False

    def _merge_base(self, one: str, other: str) -> str:
        try:
            found = git(["merge-base", one, other], cwd=self.mirror.path, timeout=60).strip()
        except GitError:
            return ""
        return found if is_sha(found) else ""


def observe_loop(watches: list[RepoWatch] | WatchList, poll_s: float, stop: threading.Event,
                 on_build: Callable[[Build], None] = lambda build: None) -> None:
    """Poll every repository each `poll_s` seconds until `stop` is set; a `volt notify` (or a forge's
    webhook) for one of them has it polled at once, and what it finds goes before backlog. Given a
    WatchList of the config file's `[[repos]]`, the repositories are those it lists now.

    A failing fetch or an unreachable Redis costs one log line and a retry with backoff, never the loop.
    """
    failures = 0
    current = watches.current if not isinstance(watches, list) else (lambda: watches)
    store = watches.store if not isinstance(watches, list) else (watches[0].store if watches else None)
    listener = NotifyListener(store) if store is not None else None
    outage = Outage(log)
    primary = PrimaryWatch("observer")
    due = {watch.name for watch in current()}
    notified: dict[str, Wanted] = {}
    recovering = False  # a failover was seen and what it lost is not yet queued again
    while not stop.is_set():
        failed = False
        if store is not None and _watch_primary(primary, store):
            recovering = True
        if recovering:
            recovering = not _recover(current())
        for watch in current():
            if watch.name not in due:
                continue
            try:
                for build in watch.poll(notified.get(watch.name)):
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
        notified = listener.wait(wait, stop) if listener is not None else {}
        names = {watch.name for watch in current()}
        due = (set(notified) & names) or names


def _watch_primary(primary: PrimaryWatch, store: Store) -> bool:
    """Whether the primary changed. A failover may have taken the observer's last writes with it —
    builds it queued and its pointers together, one transaction each: the pointer gone back, the next
    poll queues those commits again (their build ids make it idempotent); the pointer gone altogether,
    _recover queues again what this observer remembers queuing. Said once, and counted."""
    try:
        if primary.check(store.r):
            store.metrics.count_event("failovers", "observer")
            return True
    except redis.RedisError:
        pass  # an outage: the poll says so
    return False


def _recover(watches: list[RepoWatch]) -> bool:
    """Each watch's recovery after a failover; whether all of them got through (else: again next pass)."""
    done = True
    for watch in watches:
        try:
            watch.recover()
        except (redis.RedisError, BadInput) as exc:
            done = False
            log.warning("%s: could not check what the failover lost (%s); looking again", watch.name, exc)
    return done


class NotifyListener:
    """Waits for the poll interval, or less when a notification names a repository."""

    def __init__(self, store: Store):
        self.store = store
        self.subscription: Subscription | None = None

    def wait(self, seconds: float, stop: threading.Event) -> dict[str, Wanted]:
        """The repository notified during the wait, and what for (empty when the wait ran out)."""
        deadline = time.monotonic() + seconds
        while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
            try:
                if self.subscription is None:
                    self.subscription = self.store.repos.listen_notify()
                message = self.subscription.get(timeout=min(left, 0.5))
            except redis.RedisError:
                if self.subscription is not None:
                    self.subscription.close()
                self.subscription = None
                stop.wait(min(left, 1.0))  # polling carries on without notifications meanwhile
                continue
            if message is not None and isinstance(message[1].get("repo"), str):
                ref, via = message[1].get("ref"), message[1].get("via")
                return {message[1]["repo"]: Wanted(ref if isinstance(ref, str) else "",
                                                   QueuedFor.WEBHOOK if via == "webhook" else QueuedFor.NOTIFY)}
        return {}


def _records(out: str) -> list[tuple[str, str, str]]:
    """(sha, subject, author) of each commit `git log -z --format=%H%x00%s%x00%an <%ae>` printed: the
    fields and the records are both NUL-separated, three fields a record."""
    fields = out.split("\x00")
    if fields and fields[-1] == "":
        fields.pop()
    return [(fields[n], fields[n + 1], fields[n + 2]) for n in range(0, len(fields) - 2, 3)]
