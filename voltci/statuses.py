"""Telling forges about builds: commit statuses, sent from a thread of the acting scheduler.

Every change of a build its forge should hear of marks the build in the store, in the transaction
that makes the change (store/statuses.py: one ZADD, so a build never waits on a forge). This thread
takes the builds that are due, makes each one's statuses from its record as it is now
(commitstatus.py) and posts those that say something its forge was not yet told (forgeapi.py):

- coalesced: a build waits once however often it changed, and only its newest state is sent, so a
  late `pending` never follows a final status, and the order per commit and context is the builds';
- rate-limited: a progress update ("running: 120/929") goes at most every PROGRESS_EVERY_S per
  context (LATE_PROGRESS_EVERY_S past PROGRESS_BURST of them), and none past PROGRESS_MAX; a new state
  or a first failing test goes at once;
- retried: a forge that is down, answers garbage or asks to wait (429, GitHub's 403 with an exhausted
  rate limit) is left alone for its `Retry-After`, its rate limit's reset, or an exponential backoff
  up to BACKOFF_MAX_S, and its builds wait in the store meanwhile (none lost, however long);
- refused: a 4xx that is not a rate limit (a wrong token, a missing repository) is one log line per
  forge and answer every SAID_EVERY_S, counted, and not sent again; builds never notice.

Only repositories registered with a `forge` (the observer's `[[repos]]`) get statuses; the request
goes to that forge link, whatever a build says. The token is read from this process's environment
when a status is posted, and goes nowhere else.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from voltci.commitstatus import CommitStatus, State, statuses_of, waiting_for_approval
from voltci.config import Settings
from voltci.forge import ForgeLink
from voltci.forgeapi import Answer, post_status
from voltci.keys import parse_pull_status_member
from voltci.leading import while_leading
from voltci.links import build_page_url
from voltci.models import Status
from voltci.outage import Outage
from voltci.pulls import PullWait
from voltci.store import Store
from voltci.store.records import leg_ids
from voltci.store.statuses import WAITING_MAX

log = logging.getLogger("volt.statuses")
PROGRESS_EVERY_S = 5.0
LATE_PROGRESS_EVERY_S = 60.0
PROGRESS_BURST = 60
PROGRESS_MAX = 200  # per build and context: GitHub keeps 1000 per commit and context
BACKOFF_S = 1.0
BACKOFF_MAX_S = 300.0
SAID_EVERY_S = 600.0
TAKE = 50
IDLE_S = 0.5
REPOS_FRESH_S = 5.0

Poster = Callable[[ForgeLink, str, CommitStatus], Answer]


class ForgeState:
    """A forge (kind and API root) this sender talks to: when it may be asked again, after how many
    failures in a row."""

    def __init__(self) -> None:
        self.failures = 0
        self.until = 0.0

    def failed(self, now: float, wait_s: float | None, backoff_max_s: float) -> float:
        self.failures += 1
        backoff = min(backoff_max_s, BACKOFF_S * 2 ** (self.failures - 1))
        self.until = now + (wait_s if wait_s is not None else backoff)
        return self.until

    def ok(self) -> None:
        self.failures, self.until = 0, 0.0


class StatusSender:
    """Sends commit statuses while `is_leading()` says this scheduler acts (see the module's docstring).
    `post` and `clock` are the forge call and the time (tests and the benchmark compress time);
    `backoff_max_s` caps the backoff of a forge that is down."""

    def __init__(self, settings: Settings, store: Store, is_leading: Callable[[], bool], post: Poster = post_status,
                 clock: Callable[[], float] = time.time, backoff_max_s: float = BACKOFF_MAX_S):
        self.settings, self.store, self.is_leading = settings, store, is_leading
        self.post, self.clock, self.backoff_max_s = post, clock, backoff_max_s
        self.forges: dict[tuple[str, str], ForgeState] = {}
        self._said: dict[tuple[str, str, int], float] = {}
        self._links: dict[str, ForgeLink] = {}
        self._links_at = float("-inf")
        self._expected: dict[str, tuple[float, int]] = {}
        self.wrote = False  # the last step wrote to Redis
        self._outage = Outage(log, "statuses")

    def run(self, stop: threading.Event) -> None:
        while_leading(stop, self.is_leading, lambda: self.store.statuses.recover(self.clock()), self.step,
                      self._outage, wrote=lambda: self.wrote)

    def step(self) -> float:
        """Look at the builds that are due; how long to wait before the next step."""
        now = self.clock()
        taken = self.store.statuses.take(now, TAKE)
        self.wrote = bool(taken)
        for member in taken:
            pull = parse_pull_status_member(member)
            if pull is not None:
                self.deliver_waiting(member, *pull)
            else:
                self.deliver(member)
        self.trim()
        if len(taken) == TAKE:
            return 0.0
        upcoming = self.store.statuses.next_due()
        return IDLE_S if upcoming is None else max(0.0, min(IDLE_S, upcoming - self.clock()))

    def trim(self) -> int:
        """Past WAITING_MAX waiting builds, forget the longest-waiting ones that have not ended (they
        lose a pending at most) or are gone; never an ended build's. How many were dropped."""
        if self.store.statuses.waiting() <= WAITING_MAX:
            return 0
        oldest = self.store.statuses.oldest(1000)
        builds = [member for member in oldest if parse_pull_status_member(member) is None]
        ended = {b.id for b in self.store.records.light(builds) if b.status.is_final}
        dropped = [member for member in oldest if member not in ended]  # pull requests' waits are pendings too
        self.store.statuses.drop(dropped)
        return len(dropped)

    def link(self, repo: str) -> ForgeLink | None:
        """The forge link the observer registered for `repo` (read again every REPOS_FRESH_S)."""
        now = time.monotonic()
        if now - self._links_at > REPOS_FRESH_S:
            links = {}
            for name, entry in self.store.repos.known().items():
                try:
                    if isinstance(entry.get("forge"), dict):
                        links[name] = ForgeLink.from_dict(entry["forge"])
                except (KeyError, TypeError, ValueError):
                    log.warning("statuses: repository %s has a forge entry that does not read; no statuses", name)
            self._links, self._links_at = links, now
        return self._links.get(repo)

    def expected(self, repo: str) -> int:
        """How many tests the repository's latest ended build ran (the "/929" of progress), cached a minute."""
        now = time.monotonic()
        cached = self._expected.get(repo)
        if cached is not None and now - cached[0] < 60.0:
            return cached[1]
        total = 0
        for build in self.store.history.builds(repo, 10):
            if build.status.is_final and build.counts.total:
                total = build.counts.total
                break
        self._expected[repo] = (now, total)
        return total

    def deliver_waiting(self, member: str, repo: str, number: int) -> None:
        """Tell the forge that pull request `number`'s head waits for approval, if it still does."""
        state = self.store.pulls.get(repo, number)
        link = self.link(repo)
        if state is None or link is None or state.state != PullWait.WAITING or not state.head:
            self.store.statuses.done(member)  # approved, closed or forgotten meanwhile; or no forge
            return
        forge = self.forges.setdefault((link.kind, link.api), ForgeState())
        if forge.until > self.clock():
            self.store.statuses.later(member, forge.until)
            return
        answer = self.post(link, state.head, waiting_for_approval(repo, number))
        if self._judged(member, link, forge, answer):
            self.store.statuses.done(member)

    def deliver(self, build_id: str) -> None:
        """Tell the forge what `build_id` has to say now; then it is done, or waits for later."""
        build = self.store.records.get_build(build_id)
        link = self.link(build.repo) if build is not None else None
        if build is None or link is None:
            self.store.statuses.done(build_id)  # pruned, or its repository has no forge
            return
        forge = self.forges.setdefault((link.kind, link.api), ForgeState())
        now = self.clock()
        if forge.until > now:
            self.store.statuses.later(build_id, forge.until)
            return
        legs = self.store.records.builds(leg_ids(build)) if build.legs else []
        place = self.store.queue.place(build) if build.status is Status.QUEUED else None
        wanted = statuses_of(build, legs, build_page_url(self.settings, build), place, self.expected(build.repo))
        told = self.store.statuses.told(build_id)
        hold: float | None = None
        for status in sorted(wanted, key=lambda s: not s.is_final):  # a leg's end before its build's
            last = told.get(status.context)
            if status.same_as(last) or (link.kind == "gitlab" and not status.is_final and last is not None
                                        and last.get("state") == status.state.value):
                continue  # GitLab refuses a status in the state it is in already
            if link.kind == "gitlab" and status.state in (State.SUCCESS, State.FAILURE, State.ERROR) and \
                    (last is None or last.get("state") != State.RUNNING.value):
                running = CommitStatus(status.context, State.RUNNING, status.description, status.target_url)
                if not self._post(build_id, link, forge, build.commit, running, last):
                    return  # GitLab ends only a running status as succeeded or failed
                last = self.store.statuses.told(build_id).get(status.context)
            sent = int(last.get("n", 0)) if last else 0
            if not status.news_over(last) and last is not None:
                if sent >= PROGRESS_MAX:
                    continue
                every = PROGRESS_EVERY_S if sent < PROGRESS_BURST else LATE_PROGRESS_EVERY_S
                due = float(last.get("at", 0)) + every
                if due > now:
                    hold = due if hold is None else min(hold, due)
                    continue
            if not self._post(build_id, link, forge, build.commit, status, last):
                return
        if hold is not None:
            self.store.statuses.later(build_id, hold)
        else:
            self.store.statuses.done(build_id)

    def _post(self, build_id: str, link: ForgeLink, forge: ForgeState, sha: str, status: CommitStatus,
              last: dict | None) -> bool:
        """Post one status and remember what came of it; False when the forge is to be asked again later
        (the build then waits for it)."""
        answer = self.post(link, sha, status)
        if not self._judged(build_id, link, forge, answer):
            return False
        sent = int(last.get("n", 0)) if last else 0
        self.store.statuses.record_told(build_id, status.context, {**status.told(), "at": self.clock(), "n": sent + 1})
        return True

    def _judged(self, member: str, link: ForgeLink, forge: ForgeState, answer: Answer) -> bool:
        """Count and log an answer; False when it is to be asked again later (`member` then waits)."""
        if answer.outcome == "retry":
            self.store.statuses.count(link.kind, "retried")
            self._say(link, answer, retried=True)
            self.store.statuses.later(member, forge.failed(self.clock(), answer.wait_s, self.backoff_max_s))
            return False
        forge.ok()
        if answer.outcome == "refused":
            self.store.statuses.count(link.kind, "refused")
            self._say(link, answer, retried=False)
        else:
            self.store.statuses.count(link.kind, "sent")
        return True

    def _say(self, link: ForgeLink, answer: Answer, retried: bool) -> None:
        """One log line per forge and answer every SAID_EVERY_S."""
        key = (link.kind, link.api, answer.code)
        now = time.monotonic()
        if now - self._said.get(key, float("-inf")) < SAID_EVERY_S:
            return
        self._said[key] = now
        then = "trying again later" if retried else "not sent again; builds go on"
        log.warning("statuses: %s; %s", answer.detail, then)
