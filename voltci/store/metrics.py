"""Counters for /metrics, kept in Redis by the very transactions that start and end builds, so that
every `volt web` serves the same values and they outlive restarts of any process.

One hash (`keys.metrics()`), bounded by what it counts, not by time: builds ended per repository and
status (`builds|<repo>|<status>`), lost attempts (`lost`), commit statuses sent to forges by forge
kind and result (`forge_statuses|<kind>|<result>`), and two histograms, each a count per
bucket (`<name>|le|<bound>`) and a sum (`<name>|sum`): how long builds ran, and how long they waited
in the queue before a runner took them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from voltci import keys
from voltci.store.tx import Client, Txn

BUILD_DURATION = "build_duration_seconds"
QUEUE_WAIT = "queue_wait_seconds"
# Bucket bounds in seconds: builds from a second to a couple of hours; waits up to a working day.
BUCKETS: dict[str, tuple[float, ...]] = {
    BUILD_DURATION: (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
    QUEUE_WAIT: (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 28800),
}
INF = "+Inf"


def _bound(value: float) -> str:
    return f"{value:g}"


def count_build(pipe: Txn, repo: str, status: str) -> None:
    """One more build of `repo` ended with `status` (in the caller's transaction)."""
    pipe.hincrby(keys.metrics(), f"builds|{repo}|{status}", 1)


STATUS_RESULTS = ("sent", "retried", "refused")


def count_status(pipe: Txn, forge: str, result: str, times: int = 1) -> None:
    """`times` more commit statuses posted to a forge of kind `forge` ended with `result`."""
    if result not in STATUS_RESULTS:
        raise ValueError(f"no result {result!r}")
    pipe.hincrby(keys.metrics(), f"forge_statuses|{forge}|{result}", times)


def count_lost(pipe: Txn) -> None:
    pipe.hincrby(keys.metrics(), "lost", 1)


EVENTS = ("failovers", "writes_retried")  # counted per kind of process: runner, scheduler, observer


def observe(pipe: Txn, name: str, seconds: float) -> None:
    """Add one observation to histogram `name` (in the caller's transaction)."""
    seconds = max(0.0, seconds)
    bound = next((_bound(b) for b in BUCKETS[name] if seconds <= b), INF)
    pipe.hincrby(keys.metrics(), f"{name}|le|{bound}", 1)
    pipe.hincrbyfloat(keys.metrics(), f"{name}|sum", round(seconds, 3))


@dataclass(frozen=True)
class Histogram:
    buckets: list[tuple[str, int]]  # (upper bound, observations at or below it), the last "+Inf"
    sum: float

    @property
    def count(self) -> int:
        return self.buckets[-1][1]


@dataclass(frozen=True)
class Counters:
    builds: dict[tuple[str, str], int]  # (repository, status) -> builds ended
    lost: int
    histograms: dict[str, Histogram]
    events: dict[tuple[str, str], int]  # (event of EVENTS, process kind) -> times seen
    forge_statuses: dict[tuple[str, str], int] = field(default_factory=dict)  # (forge kind, result) -> statuses


class Metrics:
    """The counters' reader (the transactions that start and end builds write them), and the counter of
    what processes see of Redis itself (failovers, writes tried again). `Metrics(client)`."""

    def __init__(self, client: Client):
        self.r = client

    def count_event(self, event: str, process: str, times: int = 1) -> None:
        """`times` more of `event` (one of EVENTS) seen by a process of kind `process`."""
        if event not in EVENTS:
            raise ValueError(f"no event {event!r}")
        self.r.hincrby(keys.metrics(), f"{event}|{process}", times)

    def counters(self) -> Counters:
        """Everything the metrics hash holds, histograms made cumulative as Prometheus reads them."""
        fields = self.r.hgetall(keys.metrics())
        builds, events, statuses = {}, {}, {}
        for name, value in fields.items():
            kind, _, rest = name.partition("|")
            if kind == "builds":
                repo, _, status = rest.rpartition("|")
                builds[(repo, status)] = int(value)
            elif kind in EVENTS:
                events[(kind, rest)] = int(value)
            elif kind == "forge_statuses":
                forge, _, result = rest.rpartition("|")
                statuses[(forge, result)] = int(value)
        histograms = {}
        for name, bounds in BUCKETS.items():
            running, buckets = 0, []
            for bound in [*map(_bound, bounds), INF]:
                running += int(fields.get(f"{name}|le|{bound}", 0))
                buckets.append((bound, running))
            histograms[name] = Histogram(buckets, float(fields.get(f"{name}|sum", 0.0)))
        return Counters(builds, int(fields.get("lost", 0)), histograms, events, statuses)

    def queued_by_repo(self) -> dict[str, int]:
        """How many builds of each repository wait for a runner."""
        found: dict[str, int] = {}
        for build_id in self.r.smembers(keys.queued()):
            repo = build_id.rsplit("-", 1)[0]
            found[repo] = found.get(repo, 0) + 1
        return found
