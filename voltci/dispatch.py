"""The order in which waiting builds go to runners: by tier, then fairly across repositories.

One FIFO list fed every runner, so one repository's backlog delayed every other's first build. Volt
still has one rq queue (a plain `rq worker` keeps working, and rq-dashboard shows it), but keeps it
in this order, rewritten in one transaction whenever a build is queued or ends (store/queue.py):

1. tiers, strictly: re-dispatched attempts and shards (already under way), then builds someone waits
   for (`volt notify`, a forge's webhook, Rebuild, an approval), then the head of each branch and the next
   midpoint of a culprit search (bisect.py), then backlog;
2. inside a tier, repositories given `--priority high` before normal before low;
3. inside that, fair share: the runner goes to the repository that has had the least runner time in
   the last `fair_window` seconds, counting the builds placed ahead of it at the length its builds
   usually take (weighted fair queueing). A repository whose builds take 30 minutes thus gets as much
   runner time as one whose builds take 1 minute, not as many turns; a newcomer with no recent builds
   goes first, so a backlog elsewhere delays its first build by at most the build already running;
4. inside a repository, its own order: each push's culprit search, halving order, then the oldest.

Round robin was the other choice: it is fair in turns, not in runner time, so a repository of long
builds would take most of the pool, and a newcomer would wait a turn of every other repository.

Pure: the store reads what it needs and writes the order this returns.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum, IntEnum

from voltci.errors import BadInput

DEFAULT_ESTIMATE_S = 60.0


class Priority(str, Enum):
    """A repository's priority (`--priority`, or `priority` in a `[[repos]]` table)."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        return {"high": 0, "normal": 1, "low": 2}[self.value]


def parse_priority(word: object, where: str = "--priority") -> Priority:
    """A priority word, or bad input in one line."""
    if isinstance(word, str) and word in Priority._value2member_map_:
        return Priority(word)
    raise BadInput(f"{where}: unknown priority {word!r}; use high, normal or low")


class Tier(IntEnum):
    FIRST = 0  # re-dispatched attempts and shards: already under way
    WANTED = 1  # someone waits for it
    HEAD = 2  # the head of a branch, or the next midpoint of a culprit search
    BACKLOG = 3


@dataclass(frozen=True)
class Waiting:
    """One job in the queue, as the dispatcher sees it. `rank` orders a repository's own jobs of one tier
    (its first item, a timestamp, also breaks ties between repositories: who has waited longest)."""

    job_id: str
    repo: str
    tier: Tier
    why: str
    rank: tuple = ()


@dataclass(frozen=True)
class FairShare:
    """A repository's fair share as the order weighs it: its recent runner time and how long its builds
    usually take, in seconds."""

    used_s: float = 0.0
    typical_s: float | None = None


@dataclass(frozen=True)
class Placed:
    job_id: str
    repo: str
    tier: Tier
    why: str


@dataclass
class _Lane:
    """One repository's jobs of one tier, in its own order, with the runner time placed so far."""

    repo: str
    jobs: list[Waiting]
    virtual_s: float
    step_s: float
    taken: int = 0
    tie: tuple = field(default_factory=tuple)


def plan(waiting: Iterable[Waiting], shares: dict[str, FairShare], priorities: dict[str, Priority],
         window_s: float) -> list[Placed]:
    """The order in which `waiting` should be dispatched (see the module's docstring), each with why."""
    by_tier: dict[Tier, list[Waiting]] = {tier: [] for tier in Tier}
    for job in waiting:
        by_tier[job.tier].append(job)
    known = [s.typical_s for s in shares.values() if s.typical_s]
    fallback = sum(known) / len(known) if known else DEFAULT_ESTIMATE_S
    virtual = {repo: share.used_s for repo, share in shares.items()}
    placed = [Placed(j.job_id, j.repo, Tier.FIRST, j.why) for j in by_tier[Tier.FIRST]]  # as they stand
    for tier in (Tier.WANTED, Tier.HEAD, Tier.BACKLOG):
        groups: dict[int, dict[str, list[Waiting]]] = {}
        for job in by_tier[tier]:
            rank = priorities.get(job.repo, Priority.NORMAL).rank
            groups.setdefault(rank, {}).setdefault(job.repo, []).append(job)
        for rank in sorted(groups):
            lanes = []
            for repo, jobs in groups[rank].items():
                jobs.sort(key=lambda j: j.rank)
                share = shares.get(repo, FairShare())
                lanes.append(_Lane(repo, jobs, virtual.get(repo, 0.0), share.typical_s or fallback))
            placed += _fair(lanes, virtual, priorities, window_s, tier)
    return placed


def _fair(lanes: list[_Lane], virtual: dict[str, float], priorities: dict[str, Priority], window_s: float,
          tier: Tier) -> list[Placed]:
    """Weighted fair queueing over the lanes: always the one with the least runner time, placed included."""
    placed = []
    heap = [(lane.virtual_s, lane.jobs[0].rank[:1], lane.repo, i) for i, lane in enumerate(lanes)]
    heapq.heapify(heap)
    contenders = len(lanes)
    for _ in range(sum(len(lane.jobs) for lane in lanes)):
        used, _tie, repo, i = heapq.heappop(heap)
        lane = lanes[i]
        job = lane.jobs[lane.taken]
        placed.append(Placed(job.job_id, repo, tier, _why(job, lane, used, contenders, priorities, window_s)))
        lane.taken += 1
        lane.virtual_s = used + lane.step_s
        virtual[repo] = lane.virtual_s
        if lane.taken < len(lane.jobs):
            heapq.heappush(heap, (lane.virtual_s, lane.jobs[lane.taken].rank[:1], repo, i))
    return placed


def _why(job: Waiting, lane: _Lane, used: float, contenders: int, priorities: dict[str, Priority],
         window_s: float) -> str:
    priority = priorities.get(job.repo, Priority.NORMAL)
    said = f"; {priority.value} priority" if priority is not Priority.NORMAL else ""
    if contenders > 1:
        seconds = f"{used:.1f}" if used < 10 else f"{used:.0f}"
        said += (f"; fair share: {job.repo} has had {seconds} s of runner time in the last {window_s / 60:g} min"
                 + (", counting its builds placed ahead" if lane.taken else ""))
    return job.why + said
