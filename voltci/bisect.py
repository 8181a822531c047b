"""Culprit finding inside a push: which of its commits to build next, and when its first failing commit
is known.

Built oldest first, a push of n commits whose k-th broke a test names its culprit only after k builds.
As `git bisect` and Google's TAP culprit finding do, Volt builds the head first, then always the
midpoint of the range still unknown between the last commit known good and the first known bad: the
culprit and its good parent are known after at most ⌈log₂ n⌉ + 1 builds of the push (plus its base,
the commit the branch was at before, which was built as the previous head). Every commit is still
built in the end; the ones the search does not need wait as backlog, in the same halving order, so
that a later breakage is also narrowed quickly.

Pure functions of the commits' states; the store reads them (store/pushes.py) and the dispatcher
orders by the result (dispatch.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum

from voltci.models import Status


class Known(str, Enum):
    """What a commit's build says for culprit finding."""

    GOOD = "good"  # passed
    BAD = "bad"  # failed, errored or timed out: the commit is broken
    PENDING = "pending"  # waiting in the queue
    BUSY = "busy"  # running
    VOID = "void"  # never to be known: skipped, cancelled, pruned, or no build at all


def known(status: Status | None) -> Known:
    if status is None:
        return Known.VOID
    return {Status.PASSED: Known.GOOD, Status.FAILED: Known.BAD, Status.ERROR: Known.BAD,
            Status.TIMEOUT: Known.BAD, Status.QUEUED: Known.PENDING, Status.RUNNING: Known.BUSY}.get(status, Known.VOID)


@dataclass(frozen=True)
class Hunt:
    """Where culprit finding stands in one push. Positions are 1…n (oldest first); 0 is the base."""

    order: list[int] = field(default_factory=list)  # pending commits, in the order to build them
    next: int | None = None  # the midpoint to build before any backlog, while a culprit is looked for
    range: tuple[int, int] | None = None  # (last known good, first known bad) being narrowed
    culprit: int | None = None  # the first failing commit, once it and its good parent are known
    settled: bool = False  # nothing of the push (nor its base) is waiting or running any more

    @property
    def searching(self) -> bool:
        return self.next is not None


def halving(lo: int, hi: int) -> Iterator[int]:
    """The positions strictly between `lo` and `hi`, midpoints first, then the midpoints of each half
    (breadth first): the order in which every build halves what is unknown."""
    spans = deque([(lo, hi)])
    while spans:
        a, b = spans.popleft()
        if b - a < 2:
            continue
        mid = (a + b) // 2
        yield mid
        spans.append((a, mid))
        spans.append((mid, b))


def hunt(base: Known, commits: list[Known]) -> Hunt:
    """Culprit finding over a push whose base is `base` and whose commits (oldest first) are `commits`.

    The range searched is the first one, oldest first, from a commit known good (or the base, when it
    is not known bad) to the next commit known bad. Its midpoint is built next; when nothing is left
    between a known good commit and the first known bad one, the bad one is the culprit."""
    states = [base, *commits]
    n = len(commits)
    found = _first_breakage(states)
    order: list[int] = []
    next_pick = culprit = None
    if found is not None:
        lo, hi = found
        inside = [states[j] for j in range(lo + 1, hi)]
        order = [j for j in halving(lo, hi) if states[j] is Known.PENDING]
        if order:
            next_pick = order[0]
        elif not inside and states[lo] is Known.GOOD:
            culprit = hi
    ranked = set(order)
    order += [j for j in halving(0, n + 1) if states[j] is Known.PENDING and j not in ranked]
    settled = not any(state in (Known.PENDING, Known.BUSY) for state in states)
    return Hunt(order, next_pick, found, culprit, settled)


def _first_breakage(states: list[Known]) -> tuple[int, int] | None:
    """(lo, hi): the first commit known bad after one known good, or after the start of the push when
    its base is not known bad; lo is the last commit known good before it (0, the base, if none)."""
    lo = 0
    broken = states[0] is Known.BAD  # the branch was broken before the push: a bad commit says nothing
    for position in range(1, len(states)):
        state = states[position]
        if state is Known.GOOD:
            lo, broken = position, False
        elif state is Known.BAD and not broken:
            return lo, position
    return None
