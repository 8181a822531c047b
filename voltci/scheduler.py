"""`volt scheduler`: the dispatcher role. Puts back on the queue the builds of runners that died.

rq alone notices a killed worker's job only after many minutes and leaves it failed. The scheduler
reads the runners' heartbeat keys (see heartbeat.py) every half heartbeat and:

- keeps the runner registry (`volt status` shows it): alive runners, and those whose key expired;
- for a running build whose runner's key expired, records that attempt `lost` and queues the next
  attempt, or ends the build `error` after `max_attempts` (queue.redispatch does both atomically);
- does the same, once it has lasted a heartbeat TTL, for a build that no runner works on although
  it is not waiting in the queue either (its runner moved on, or died before starting it);
- checks each matrix leg of a running build as it checks a build (and a split leg's shards as a split
  build's), and ends `error` a leg that has waited a heartbeat TTL for an interpreter no live runner
  has (the reason names it; the other legs run on);
- every few seconds, puts the queue back in dispatch order (store/queue.py), for what changes
  with time alone (runner time moving out of the fair-share window), or a process that stopped
  between queueing a build and ordering the queue.

Several schedulers may run; only the holder of an expiring lock in Redis acts, and every change it
makes is a transaction on the build, so even two acting at once could not dispatch a build twice.
For a few seconds after Redis (re)started, no runner is judged: their keys may have expired while
Redis was down, and live runners need a heartbeat or two to write them again.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import redis
from redis.exceptions import LockError

from voltci import keys
from voltci.config import Settings
from voltci.connection import connect
from voltci.failover import PrimaryWatch
from voltci.jobqueue import unit_queue
from voltci.models import AttemptState, Build, RunnerBeat, Status, Work
from voltci.outage import Outage
from voltci.statuses import StatusSender
from voltci.store import Policy, Store
from voltci.webhooks import WebhookSender

log = logging.getLogger("volt.scheduler")
BACKOFF_MAX_S = 2.0
PRUNE_PER_STEP = 50  # builds at most, so that a pass costs the same however long the history is
DISPATCH_EVERY_S = 5.0


@dataclass(frozen=True)
class Action:
    build: str
    attempt: int
    reason: str
    done: str  # "requeued" or "gave up"
    shard: int | None = None


def _version(python: str) -> tuple[int, ...]:
    return tuple(int(part) for part in python.split(".") if part.isdigit())


def _works_on(beat: RunnerBeat, unit: Work) -> bool:
    if (beat.build, beat.attempt) != (unit.build, unit.attempt):
        return False
    if unit.shard == 0 and unit.shard_attempt == 1:
        return beat.shard in (None, 0)  # shard 0's first run is the job that split the build
    return (beat.shard, beat.shard_attempt) == (unit.shard, unit.shard_attempt)


class Scheduler:
    def __init__(self, settings: Settings, store: Store | None = None):
        self.settings = settings
        self.store = store or Store(connect(settings.effective_redis_url, ping=False), settings)
        self.lock = self.store.runners.scheduler_lock(settings.heartbeat_ttl)
        self.leading = False
        self.suspects: dict[Work, float] = {}  # unit -> when first seen unattended
        self.stranded: dict[Work, float] = {}  # waiting leg -> when first seen with no live runner for its Python
        self.retention = Policy(settings.keep_builds, settings.keep_days)
        self._prune_queue: list[str] = []  # repositories still to look at in this round of pruning
        self._dispatched_at = float("-inf")
        self.primary = PrimaryWatch("scheduler")

    @property
    def interval_s(self) -> float:
        return max(0.2, self.settings.heartbeat / 2)

    def run(self, stop: threading.Event) -> None:
        """Act every half heartbeat until `stop` is set; Redis outages cost a log line and a backoff.
        With a webhook configured, a thread of its own sends the messages of ended builds; another sends
        commit statuses to forges (statuses.py) — it has nothing to do unless a repository has a forge."""
        statuses = StatusSender(self.settings, Store(connect(self.settings.effective_redis_url, ping=False),
                                                     self.settings), lambda: self.leading)
        threading.Thread(target=statuses.run, args=(stop,), name="statuses", daemon=True).start()
        if self.settings.webhook_url:
            sender = WebhookSender(self.settings, Store(connect(self.settings.effective_redis_url, ping=False),
                                                     self.settings), lambda: self.leading)
            threading.Thread(target=sender.run, args=(stop,), name="webhook", daemon=True).start()
        failures = 0
        outage = Outage(log)
        while not stop.is_set():
            try:
                self.step()
                failures = 0
                outage.ok()
            except redis.RedisError as exc:
                failures += 1
                outage.failed(exc)
            stop.wait(self.interval_s if not failures else min(BACKOFF_MAX_S, 0.5 * 2 ** failures))
        self.release()

    def step(self) -> list[Action]:
        """One pass: lead or stand by, apply retention a little, refresh the registry, re-dispatch what
        was lost."""
        now = time.monotonic()
        if not self._lead():
            return []
        self.prune_step()  # it only deletes: it runs, and frees memory, even when Redis is full
        runners = self.store.runners.live()
        self.store.runners.update_registry(runners)
        if not self._settled():
            return []  # Redis just (re)started, or failed over: let runners refresh keys it lost
        actions = self._check_builds(runners, now)
        if now - self._dispatched_at >= DISPATCH_EVERY_S:
            self._dispatched_at = now
            self.store.queue.keep_order()
        return actions

    def prune_step(self) -> int:
        """Apply retention to one repository, a bounded batch at a time: a repository with more to prune
        is looked at again next pass, the others in turn. How many builds were removed."""
        if not self.retention.limited:
            return 0
        if not self._prune_queue:
            self._prune_queue = sorted(self.store.repos.known())
            if not self._prune_queue:
                return 0
        repo = self._prune_queue[0]
        removed = self.store.retention.prune_repo(repo, self.retention, limit=PRUNE_PER_STEP)
        if len(removed) < PRUNE_PER_STEP:
            self._prune_queue.pop(0)
        if removed:
            log.info("retention: removed %d build(s) of %s", len(removed), repo)
        return len(removed)

    @property
    def settle_s(self) -> float:
        """Long enough for every live runner to have refreshed its key twice."""
        return min(self.settings.heartbeat_ttl, 2 * self.settings.heartbeat)

    def _settled(self) -> bool:
        """Whether the primary has been up, and this one, for long enough that every live runner has
        refreshed its key since: after a restart or a failover, a key that is missing was maybe only lost
        with the writes of the last moments, and a runner must not be judged by it."""
        return self._redis_uptime_s() >= self.settle_s and self.primary.settled(self.settle_s)

    def _redis_uptime_s(self) -> float:
        """The primary's uptime, asked once a pass; a change of primary is noticed (and said, and counted)."""
        if self.primary.check(self.store.r):
            self.store.metrics.count_event("failovers", "scheduler")
        return self.primary.known.uptime_s if self.primary.known is not None else 0.0

    def release(self) -> None:
        if self.leading:
            try:
                self.lock.release()
            except (LockError, redis.RedisError):
                pass  # it expires by itself
            self.leading = False

    def _lead(self) -> bool:
        if self.leading:
            try:
                self.lock.reacquire()
                return True
            except LockError:
                self.leading = False
                log.warning("lost the scheduler lock; standing by")
        if self.lock.acquire(blocking=False):
            self.leading = True
            log.info("acting as the scheduler")
        return self.leading

    def _beat_of(self, runners: dict[str, RunnerBeat], name: str) -> RunnerBeat | None:
        """A runner's heartbeat as this pass read it, or as it is now: a plain `rq worker`'s job writes
        its runner's first beat just before it starts its attempt, which may fall between this pass's
        read of the beats and its read of the running builds — that runner is not lost."""
        beat = runners.get(name)
        if beat is None and name:
            beat = self.store.runners.beat_of(name)
            if beat is not None:
                runners[name] = beat
        return beat

    def _check_builds(self, runners: dict[str, RunnerBeat], now: float) -> list[Action]:
        actions: list[Action] = []
        unattended: dict[Work, str] = {}
        waiting = self.store.queue.waiting_job_ids()
        stranded: dict[Work, str] = {}
        for build in self.store.records.running_builds():
            if build.legs:
                actions += self._check_legs(build, runners, unattended, stranded)
                continue
            if build.shards:
                actions += self._check_shards(build, runners, waiting, unattended)
                continue
            beat = self._beat_of(runners, build.runner)
            if beat is None:
                actions += self._redispatch(Work(build.id, build.attempt),
                                            f"runner {build.runner} stopped sending heartbeats")
            elif (beat.build, beat.attempt) != (build.id, build.attempt):
                unattended[Work(build.id, build.attempt)] = f"runner {build.runner} is no longer working on it"
        off_queue = [b for b in self.store.records.queued_builds() if keys.job_id(b.id, b.attempt) not in waiting]
        states = self.store.queue.job_states([keys.job_id(b.id, b.attempt) for b in off_queue])
        for build in off_queue:
            status, worker = states.get(keys.job_id(build.id, build.attempt), ("", ""))
            reason = self._not_taken(status, worker, build.id, runners)
            if reason:
                unattended[Work(build.id, build.attempt)] = reason
        self.suspects = {unit: self.suspects.get(unit, now) for unit in unattended}
        for unit, since in list(self.suspects.items()):
            if now - since >= self.settings.heartbeat_ttl:
                actions += self._redispatch(unit, unattended[unit])
                del self.suspects[unit]
        self.stranded = {unit: self.stranded.get(unit, now) for unit in stranded}
        for unit, since in list(self.stranded.items()):
            if now - since >= self.settings.heartbeat_ttl:
                if self.store.legs.end_unrunnable(unit.build, unit.attempt, stranded[unit]):
                    log.warning("%s: %s; it ends error", unit.build, stranded[unit])
                    actions.append(Action(unit.build, unit.attempt, stranded[unit], "error"))
                del self.stranded[unit]
        return actions

    def _check_legs(self, build: Build, runners: dict[str, RunnerBeat], unattended: dict[Work, str],
                    stranded: dict[Work, str]) -> list[Action]:
        """A matrix build: each leg that has not ended must be running on a live runner, or waiting on the
        queue of its interpreter — which some live runner must have. While no runner is alive at all (the
        last one died, the next is starting), nothing tells which interpreters there will be: legs wait."""
        actions: list[Action] = []
        legs = [leg for leg in self.store.records.get_legs(build.id) if not leg.status.is_final]
        waiting = self.store.queue.waiting_job_ids(sorted({unit_queue(self.settings, leg) for leg in legs}))
        have = {python for beat in runners.values() for python in beat.pythons}
        for leg in legs:
            unit = Work(leg.id, leg.attempt)
            if leg.status is Status.RUNNING:
                if leg.shards:
                    actions += self._check_shards(leg, runners, waiting, unattended)
                    continue
                beat = self._beat_of(runners, leg.runner)
                if beat is None:
                    actions += self._redispatch(unit, f"runner {leg.runner} stopped sending heartbeats")
                elif (beat.build, beat.attempt) != (leg.id, leg.attempt):
                    unattended[unit] = f"runner {leg.runner} is no longer working on leg {leg.leg}"
                continue
            if runners and leg.python not in have:  # with no runner alive, every leg waits for one
                stranded[unit] = (f"no live runner has python {leg.python} (the live runners have "
                                  f"{', '.join(sorted(have, key=_version)) or 'none'})")
                continue
            job_id = keys.job_id(leg.id, leg.attempt)
            if job_id in waiting:
                continue
            status, worker = self.store.queue.job_states([job_id]).get(job_id, ("", ""))
            reason = self._not_taken(status, worker, leg.id, runners)
            if reason:
                unattended[unit] = reason
        return actions

    def _check_shards(self, build: Build, runners: dict[str, RunnerBeat], waiting: set[str],
                      unattended: dict[Work, str]) -> list[Action]:
        """A split build: each shard that is not finished must be running on a live runner, or waiting."""
        actions: list[Action] = []
        for shard in self.store.records.get_shards(build.id):
            unit = Work(build.id, build.attempt, shard.number, shard.attempt)
            if shard.state is AttemptState.FINISHED:
                continue
            if shard.state is AttemptState.RUNNING:
                beat = self._beat_of(runners, shard.runner)
                if beat is None:
                    actions += self._redispatch(unit, f"runner {shard.runner} stopped sending heartbeats")
                elif not _works_on(beat, unit):
                    unattended[unit] = f"runner {shard.runner} is no longer working on shard {shard.number}"
                continue
            job_id = keys.shard_job_id(build.id, build.attempt, shard.number, shard.attempt)
            if job_id in waiting:
                continue
            status, worker = self.store.queue.job_states([job_id]).get(job_id, ("", ""))
            reason = self._not_taken(status, worker, build.id, runners)
            if reason:
                unattended[unit] = reason
        return actions

    @staticmethod
    def _not_taken(status: str, worker: str, build_id: str, runners: dict[str, RunnerBeat]) -> str:
        """Why a job that is not waiting in the queue is not being worked on either ("" if it is)."""
        if status in ("deferred", "scheduled"):
            return ""
        if status == "started":
            beat = runners.get(worker)
            return "" if beat is not None and beat.build == build_id else \
                f"runner {worker} took it and stopped working on it"
        return f"its rq job is {status or 'gone'} and it never started"

    def _redispatch(self, unit: Work, reason: str) -> list[Action]:
        if unit.shard is not None:
            done = self.store.shards.redispatch(unit.build, unit.attempt, unit.shard, unit.shard_attempt, reason)
            what = f"shard {unit.shard} attempt {unit.shard_attempt}"
        else:
            current = self.store.records.get_build(unit.build)
            if current is None or current.attempt != unit.attempt:
                return []
            done = self.store.builds.redispatch(unit.build, unit.attempt, reason, current.runner)
            what = f"attempt {unit.attempt}"
        if not done:
            return []  # the build moved on meanwhile (finished, cancelled, or another scheduler acted)
        log.warning("%s %s lost: %s; %s", unit.build, what, reason, done)
        return [Action(unit.build, unit.attempt, reason, done, unit.shard)]
