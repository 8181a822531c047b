"""Pull requests: what Volt knows of each (pulls.PullState, one field of its repository's hash) and the
builds of their heads, changed together in one guarded transaction.

    seen ──(trusted, or its head approved)──▶ open: the head's build queued (its id: keys.pull_build_id)
      │                                        ▲
      └──(untrusted)──▶ waiting ──approve──────┘        a new head of an untrusted one waits again
    close ──▶ closed: nothing more is built; its queued and running builds are cancelled

The record is the observer's pointer for the pull request: its head moves in the transaction that
queues the head's build, so a restart or two observers never build a head twice. Bounded: at most
keys.PULLS_KEPT pull requests per repository (closed ones dropped first) and keys.PULLS_WAITING_MAX
waiting at once; each record keeps its newest PullState.BUILDS_KEPT builds.
"""

from __future__ import annotations

import time
from dataclasses import replace

from voltci import jobqueue, keys
from voltci.clock import now_iso
from voltci.config import Settings
from voltci.errors import BadInput
from voltci.models import Build, PullRequest, QueuedFor, Status
from voltci.pulls import PullState, PullWait
from voltci.store.builds import Builds
from voltci.store.queue import Queue
from voltci.store.records import Records
from voltci.store.repos import Repos
from voltci.store.tx import Client, Txn, guarded


class Pulls:
    """Pull requests and their builds. `Pulls(client, settings, records, repos, builds, queue)`: it reads
    builds through `records` and where a repository lives through `repos`, records, cancels and rebuilds
    builds through `builds`, and tells `queue` when one is queued."""

    def __init__(self, client: Client, settings: Settings, records: Records, repos: Repos, builds: Builds,
                 queue: Queue):
        self.r = client
        self.settings = settings
        self.records = records
        self.repos = repos
        self.builds = builds
        self.queue = queue

    # ------------------------------------------------------------ reads

    def get(self, repo: str, number: int) -> PullState | None:
        text = self.r.hget(keys.repo_pulls(repo), str(number))
        return PullState.from_json(text) if text else None

    def all(self, repo: str) -> list[PullState]:
        """Every pull request kept of `repo`, the newest number first (at most keys.PULLS_KEPT)."""
        found = [PullState.from_json(text) for text in self.r.hvals(keys.repo_pulls(repo))]
        return sorted(found, key=lambda state: -state.number)

    def build_of(self, repo: str, number: int) -> Build:
        """The newest build of pull request `number` (bad input when it has none)."""
        state = self.get(repo, number) if keys.is_valid_repo_name(repo) else None
        if state is None:
            raise BadInput(f"unknown pull request #{number} of '{repo}': Volt has not seen it")
        for build_id in state.builds:
            build = self.records.get_build(build_id)
            if build is not None:
                return build
        why = "it waits for approval (volt approve)" if state.state == PullWait.WAITING else "none is kept"
        raise BadInput(f"pull request #{number} of '{repo}' has no build: {why}")

    # ------------------------------------------------------------ changes

    def seen(self, repo: str, found: PullState, via: QueuedFor | None = None, *, reopen: bool = False,
             subject: str = "") -> tuple[str, PullState, Build | None]:
        """A pull request's head, as polling or a webhook saw it (`found`: what is known of it now; from
        polling, `known` is False and its author, fork and trust are left as recorded). Records it and,
        when it may be built, queues its head's build — one transaction. What happened: "queued",
        "waiting", "known" (that head was seen before), "closed" (a closed one's ref; `reopen` opens it)
        or "full" (too many pull requests, nothing recorded); the record; the build queued."""
        key = keys.repo_pulls(repo)
        url = self._url(repo)
        build_id = keys.pull_build_id(repo, found.number, found.head)

        def body(pipe: Txn) -> tuple[str, PullState, Build | None]:
            text = pipe.hget(key, str(found.number))
            old = PullState.from_json(text) if text else None
            if old is not None and old.state == PullWait.CLOSED and not reopen:
                return "closed", old, None
            state = self._merge(old, found)
            may = state.trusted or state.approved_head == state.head
            state.state = PullWait.OPEN if may else PullWait.WAITING
            exists = bool(pipe.exists(keys.build(build_id)))
            if old is not None and state == old and (exists or not may):
                return "known", old, None
            dropped = self._room(pipe, key) if old is None else []
            if dropped is None:
                return "full", state, None
            if not may and (old is None or old.state != PullWait.WAITING) and \
                    self._waiting(pipe, key) >= keys.PULLS_WAITING_MAX:
                return "full", state, None
            build = pull_build(repo, url, state, via, subject) if may and not exists else None
            if build is not None or (exists and build_id not in state.builds):
                state.builds = [build_id, *[b for b in state.builds if b != build_id]][:PullState.BUILDS_KEPT]
            state.updated = now_iso()
            pipe.multi()
            if dropped:
                pipe.hdel(key, *dropped)
            pipe.hset(key, str(state.number), state.to_json())
            if build is not None:
                self._queue(pipe, build)
            return ("queued" if build is not None else "waiting" if not may else "known"), state, build

        done = guarded(self.r, [key, keys.build(build_id)], body)
        if done[2] is not None:
            self.queue.enqueued()
        elif reopen and done[0] == "known":
            self._rebuild_cancelled(build_id)
        return done

    def approve(self, repo: str, number: int, who: str) -> tuple[PullState, Build | None]:
        """Someone approves the head a pull request waits with: it is queued (one transaction). Bad input
        when Volt does not know the pull request, it is closed, or nothing of it waits."""
        if not keys.is_valid_repo_name(repo) or not self.repos.is_known(repo):
            raise BadInput(f"unknown repository '{repo}': no observer watches it (see `volt status`)")
        key = keys.repo_pulls(repo)
        url = self._url(repo)

        def body(pipe: Txn) -> tuple[PullState, Build | None]:
            text = pipe.hget(key, str(number))
            if not text:
                raise BadInput(f"unknown pull request #{number} of '{repo}': Volt has not seen it")
            state = PullState.from_json(text)
            if state.state == PullWait.CLOSED:
                raise BadInput(f"pull request #{number} of '{repo}' is closed: nothing to approve")
            if state.may_build(state.head):
                return state, None  # trusted, or this head approved already
            state.approved = f"{state.head} by {who}"[:200]
            state.state = PullWait.OPEN
            state.updated = now_iso()
            build_id = keys.pull_build_id(repo, number, state.head)
            build = None
            if not pipe.exists(keys.build(build_id)):
                build = pull_build(repo, url, state, QueuedFor.APPROVED, "")
                state.builds = [build_id, *state.builds][:PullState.BUILDS_KEPT]
            pipe.multi()
            pipe.hset(key, str(number), state.to_json())
            if build is not None:
                self._queue(pipe, build)
            return state, build

        state, build = guarded(self.r, [key], body)
        if build is not None:
            self.queue.enqueued()
        return state, build

    def close(self, repo: str, number: int, why: str) -> list[Build]:
        """A pull request was closed (or merged): nothing more of it is built, and its queued and running
        builds are cancelled, each with `why` (their runners stop within a second). The builds cancelled."""
        key = keys.repo_pulls(repo)

        def body(pipe: Txn) -> PullState | None:
            text = pipe.hget(key, str(number))
            if not text:
                return None
            state = PullState.from_json(text)
            state.state, state.updated = PullWait.CLOSED, now_iso()
            pipe.multi()
            pipe.hset(key, str(number), state.to_json())
            return state

        state = guarded(self.r, [key], body)
        if state is None:
            return []
        return [build for build_id in state.builds if (build := self.builds.cancel(build_id, why)) is not None]

    # ------------------------------------------------------------ within a transaction

    @staticmethod
    def _merge(old: PullState | None, found: PullState) -> PullState:
        """What is known now: the head just seen; author, fork and trust from a webhook (`found.known`),
        else as recorded; the approval and builds as recorded."""
        if old is None:
            return replace(found, builds=[], approved="", updated="")
        state = replace(old, head=found.head)
        if found.base_branch:
            state.base_branch = found.base_branch
        if found.title:
            state.title = found.title
        if found.known:
            state.author, state.fork, state.known, state.trusted = found.author, found.fork, True, found.trusted
        elif found.trusted:
            state.trusted = True  # trusted by the settings (`*`), whoever opened it
        return state

    @staticmethod
    def _room(pipe: Txn, key: str) -> list[str] | None:
        """Room for one more pull request (keys.PULLS_KEPT): the fields to drop for it, the oldest closed
        pull requests; None when there is no room (none is closed)."""
        kept = pipe.hlen(key)
        if kept < keys.PULLS_KEPT:
            return []
        closed = sorted(s.number for s in map(PullState.from_json, pipe.hvals(key)) if s.state == PullWait.CLOSED)
        over = kept - keys.PULLS_KEPT + 1
        return [str(number) for number in closed[:over]] if len(closed) >= over else None

    @staticmethod
    def _waiting(pipe: Txn, key: str) -> int:
        return sum(1 for text in pipe.hvals(key) if f'"state":"{PullWait.WAITING}"' in text)

    def _queue(self, pipe: Txn, build: Build) -> None:
        """Record and enqueue a pull request's build: never as its base branch's newest build (that is the
        branch's own: its badge, its page's head)."""
        self.builds.add(replace(build, jobs=[keys.job_id(build.id, 1)]), time.time(), pipeline=pipe, newest=False)
        jobqueue.enqueue_attempt(self.r, build, 1, self.settings, pipe)

    def _url(self, repo: str) -> str:
        entry = self.repos.known().get(repo) if self.repos.is_known(repo) else None
        if entry is None:
            raise BadInput(f"unknown repository '{repo}': no observer watches it (see `volt status`)")
        return str(entry.get("url", ""))

    def _rebuild_cancelled(self, build_id: str) -> None:
        """A reopened pull request's head whose build was cancelled when it closed is built again."""
        build = self.records.get_build(build_id)
        if build is not None and build.status in (Status.CANCELLED, Status.SKIPPED):
            self.builds.rebuild(build_id)


def pull_build(repo: str, url: str, state: PullState, via: QueuedFor | None, subject: str) -> Build:
    """The build of a pull request's head, as it would merge into its base branch."""
    queued = now_iso()
    title = subject or state.title or f"pull request #{state.number}"
    return Build(id=keys.pull_build_id(repo, state.number, state.head), repo=repo, url=url, commit=state.head,
                 branch=state.base_branch, subject=title[:500], author=state.author, queued_at=queued,
                 queued_for=via.value if via is not None else "",
                 pull_request=PullRequest(state.number, state.head, "", state.base_branch))
