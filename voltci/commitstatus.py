"""What a forge shows of a build on its commit: the commit statuses a build's record warrants now.

Pure: `statuses_of(build, legs, ...)` reads a build's record (and its matrix legs') and returns one
`CommitStatus` per context — `volt` for the build (`volt/pr` for a pull request's build, so that a
branch's build of the same commit never overwrites it), and `volt/<leg>` for each matrix leg. The
sender (statuses.py) posts what changed since the forge was last told; since each status is made
from the record as it is when sent, a status that waited is never older than the build.

Every text here may come from a commit — test ids, a leg's name, a reason — so each is made safe
before it leaves: control and formatting characters (bidirectional overrides too) become spaces, runs
of spaces one, and a description is cut to GitHub's 140 characters (a long test id keeps its head and
its tail, where the function's name is).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import Enum

from voltci.models import Build, Counts, Status

CONTEXT = "volt"
PULL_CONTEXT = "volt/pr"
DESCRIPTION_MAX = 140  # GitHub refuses a longer description (422)
CONTEXT_MAX = 100
LEG_CONTEXTS_MAX = 16  # a matrix of more legs gets statuses for the build alone: a commit names its legs
ELLIPSIS = "…"
_UNSAFE_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")
_CONTEXT_CHARS = re.compile(r"[^A-Za-z0-9._=+-]+")


class State(str, Enum):
    """Volt's states for a status; each forge's own names are forgeapi.py's."""

    PENDING = "pending"  # queued
    RUNNING = "running"  # under way (GitHub and Gitea say pending)
    SUCCESS = "success"
    FAILURE = "failure"
    ERROR = "error"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"

    @property
    def is_final(self) -> bool:
        return self not in (State.PENDING, State.RUNNING)


FINAL_STATES = {Status.PASSED: State.SUCCESS, Status.FAILED: State.FAILURE, Status.ERROR: State.ERROR,
                Status.TIMEOUT: State.ERROR, Status.CANCELLED: State.CANCELLED, Status.SKIPPED: State.SKIPPED}


@dataclass(frozen=True)
class CommitStatus:
    """One status of one context. `progress`: an update of a running build, which the sender may hold
    back (rate-limited) unless it tells something new: another state, or another first failure (`key`)."""

    context: str
    state: State
    description: str
    target_url: str | None
    progress: bool = False
    key: str = ""  # the first failing test it names, if any

    @property
    def is_final(self) -> bool:
        return self.state.is_final

    def same_as(self, other: dict[str, str] | None) -> bool:
        """Whether the forge was last told exactly this (`other` as `told()` records it)."""
        return other is not None and other.get("state") == self.state.value and \
            other.get("description") == self.description

    def told(self) -> dict[str, str]:
        return {"state": self.state.value, "description": self.description, "key": self.key[:200]}

    def news_over(self, other: dict[str, str] | None) -> bool:
        """Whether this says more than a progress update over `other`: another state or first failure."""
        return not self.progress or other is None or other.get("state") != self.state.value or \
            other.get("key", "") != self.key[:200]


def clean(text: str) -> str:
    """`text` on one line, without control, formatting or private characters, spaces collapsed."""
    kept = "".join(" " if unicodedata.category(ch) in _UNSAFE_CATEGORIES or ch.isspace() else ch for ch in text)
    return " ".join(kept.split())


def cut_middle(text: str, limit: int) -> str:
    """`text` in at most `limit` characters: its head and tail around an ellipsis when it is longer."""
    if len(text) <= limit:
        return text
    if limit <= 1:
        return ELLIPSIS[:limit]
    head = (limit - 1) // 2
    tail = limit - 1 - head
    return text[:head] + ELLIPSIS + (text[-tail:] if tail else "")


def describe(text: str, name: str = "", limit: int = DESCRIPTION_MAX) -> str:
    """A description: `text`, then `name` (a test id, a reason) cut in its middle to what is left."""
    text, name = clean(text) + (" " if text.endswith(" ") else ""), clean(name)
    if not name:
        return cut_middle(text.strip(), limit)
    room = limit - len(text)
    if room < 12:  # not enough left to say anything of the name
        return cut_middle(text.strip(), limit)
    return text + cut_middle(name, room)


def context_of(build: Build, leg: str = "") -> str:
    """The context of a build's statuses, or of its matrix leg `leg`'s (a name from the commit: only
    letters, digits and `._=+-` are kept)."""
    base = PULL_CONTEXT if build.pull_request is not None else CONTEXT
    if not leg:
        return base
    safe = _CONTEXT_CHARS.sub("_", clean(leg)).strip("_") or "leg"
    return cut_middle(f"{base}/{safe}", CONTEXT_MAX)


def short_duration(seconds: float) -> str:
    """'45s', '3m 12s', '1h 4m'."""
    whole = max(0, int(round(seconds)))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60}s"
    return f"{whole // 3600}h {whole % 3600 // 60}m"


def counted(counts: Counts) -> str:
    """'2 failed, 927 passed, 3 skipped' (only what is not zero; 'no tests' when nothing ran)."""
    parts = [f"{n} {word}" for n, word in ((counts.failed, "failed"), (counts.errors, "errors"),
                                            (counts.passed, "passed"), (counts.skipped, "skipped")) if n]
    return ", ".join(parts) or "no tests"


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def waiting_for_approval(repo: str, number: int, target_url: str | None = None) -> CommitStatus:
    """The status of a pull request's head that waits for someone's approval before it is built."""
    return CommitStatus(PULL_CONTEXT, State.PENDING, describe(f"waiting for approval: volt approve {repo} {number}"),
                        target_url)


def _queued(build: Build, place: int | None) -> str:
    again = f" (attempt {build.attempt})" if build.attempt > 1 else ""
    return f"queued{again}: {ordinal(place)} in line" if place else f"queued{again}"


def _running(unit: Build, expected: int) -> tuple[str, str]:
    """(text, name) of a running build or leg."""
    if unit.first_failure:
        return f"{max(unit.failing, 1)} failed so far: ", unit.first_failure
    total = f"/{expected}" if expected >= unit.progress and expected else ""
    return f"running: {unit.progress}{total}", ""


def _final(unit: Build) -> tuple[str, str]:
    """(text, name) of an ended build or leg."""
    status = unit.status
    took = f" in {short_duration(unit.duration_s)}" if unit.duration_s else ""
    if status in (Status.PASSED, Status.FAILED):
        text = f"{status.value}: {counted(unit.counts)}{took}"
        if status is Status.FAILED and unit.first_failure:
            return f"{text}; first: ", unit.first_failure
        return text, ""
    return f"{status.value}{took}" + (": " if unit.reason else ""), unit.reason


def status_of(unit: Build, context: str, target_url: str | None, place: int | None = None,
              expected: int = 0, legs_ended: int | None = None) -> CommitStatus:
    """The status of one build or leg as its record stands."""
    if unit.status.is_final:
        text, name = _final(unit)
        return CommitStatus(context, FINAL_STATES[unit.status], describe(text, name), target_url)
    if unit.status is Status.QUEUED:
        return CommitStatus(context, State.PENDING, describe(_queued(unit, place)), target_url)
    if legs_ended is not None:  # a matrix build runs as long as one of its legs does
        return CommitStatus(context, State.RUNNING, describe(f"running: {legs_ended}/{unit.legs} legs ended"),
                            target_url, progress=True)
    text, name = _running(unit, expected)
    return CommitStatus(context, State.RUNNING, describe(text, name), target_url, progress=True,
                        key=unit.first_failure)


def statuses_of(build: Build, legs: list[Build], target_url: str | None, place: int | None = None,
                expected: int = 0) -> list[CommitStatus]:
    """The statuses a build warrants now: its own, and one per matrix leg of its current attempt (none
    past LEG_CONTEXTS_MAX legs). A matrix build's own status names the first leg's first failure."""
    if not build.legs or not legs:
        return [status_of(build, context_of(build), target_url, place, expected)]
    found: list[CommitStatus] = []
    ended = sum(1 for leg in legs if leg.status.is_final)
    own = status_of(build, context_of(build), target_url, place, expected, legs_ended=ended)
    failing = [leg for leg in legs if leg.first_failure and not leg.status.is_final]
    if failing and not build.status.is_final:
        first = failing[0]
        own = CommitStatus(own.context, State.RUNNING,
                           describe(f"{sum(leg.failing for leg in failing)} failed so far ({clean(first.leg)[:30]}): ",
                                    first.first_failure), target_url, progress=True, key=first.first_failure)
    found.append(own)
    if len(legs) <= LEG_CONTEXTS_MAX:
        found += [status_of(leg, context_of(build, leg.leg), target_url, expected=0) for leg in legs]
    return found
