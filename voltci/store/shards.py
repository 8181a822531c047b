"""A build split across runners: its plan, each shard's attempts, and the merge of their results.

The runner that took the build records the split (and queues shards 1…) while it owns the build;
each shard job claims its shard, and stores its results only while that shard attempt is current;
the last one to finish merges every shard's results into the build's one result, in the transaction
that ends the build. A shard that ends with a failing test before the others makes it the build's
first failure, if the build has none yet (firstfailure.py). A shard lost with its runner is queued
again by the scheduler, up to `max_attempts`.
"""

from __future__ import annotations

from voltci import jobqueue, keys
from voltci.clock import now_iso
from voltci.config import Settings
from voltci.models import (
    Attempt,
    AttemptState,
    Build,
    Counts,
    Cut,
    RunOutcome,
    Shard,
    Share,
    Status,
    TestResult,
    Timings,
)
from voltci.store import budget, codec, firstfailure
from voltci.store.builds import Builds
from voltci.store.endings import Encoded, add_jobs, record_lost, watched, write_result
from voltci.store.legs import Legs
from voltci.store.queue import Queue
from voltci.store.records import Records, read_build
from voltci.store.trail import Trail
from voltci.store.tx import Client, Txn, guarded, raw


def merge(records: dict[int, Shard], tests_by_shard: dict[int, list[TestResult]], log_tail: str,
          timings: Timings, cut: Cut | None = None) -> RunOutcome:
    """The shards' results as one build's: every test once, one the worst status, and what they cost;
    `cut`: what the shards' results lost to the bounds (budget.py), their tests not kept counted too."""
    cut = cut or Cut()
    tests: list[TestResult] = []
    for number in sorted(tests_by_shard):
        for test in tests_by_shard[number]:
            test.order = len(tests)
            tests.append(test)
    counts = Counts.of(tests) + cut.counts
    statuses = {records[n].status for n in records}
    reasons = "; ".join(f"shard {n}: {records[n].reason}" for n in sorted(records) if records[n].reason)
    for status in (Status.TIMEOUT, Status.CANCELLED, Status.ERROR):
        if status.value in statuses:
            return RunOutcome(status, tests, counts, reasons, log_tail, timings, cut)
    status = Status.FAILED if counts.failed or counts.errors else Status.PASSED
    return RunOutcome(status, tests, counts, "", log_tail, timings, cut)


TIMINGS_FIELD = "timings"  # of a finished shard's results hash, beside codec's fields: its tests' costs
CUT_FIELD = "cut"  # and what its results lost to the bounds on what a build keeps


def _encoded(outcome: RunOutcome) -> dict[str, bytes]:
    """A shard's results as it keeps them until the merge, cut to what a build keeps (budget.py): its
    tests, what they cost, and what was cut."""
    fitted = budget.fit(outcome)
    fields = dict(fitted.results or {})
    if fitted.timings is not None:
        fields[TIMINGS_FIELD] = fitted.timings
    if fitted.outcome.cut:
        fields[CUT_FIELD] = fitted.outcome.cut.to_json().encode()
    return fields


class Shards:
    """A build's shards. `Shards(client, settings, records, builds, legs, trail, queue)`: the last shard's
    merge ends its build (or, for a sharded matrix leg, the leg, through `legs`) in the transaction that
    decides it; a shard lost `max_attempts` times ends the build through `builds.give_up`, in that
    transaction too; a build ended is recorded in `trail` and told to `queue`."""

    def __init__(self, client: Client, settings: Settings, records: Records, builds: Builds, legs: Legs,
                 trail: Trail, queue: Queue):
        self.r = client
        self.settings = settings
        self.records = records
        self.builds = builds
        self.legs = legs
        self.trail = trail
        self.queue = queue

    def plan(self, build_id: str, shard: int) -> list[str]:
        return codec.decode_ids(raw(self.r, "HGET", keys.build_shard_plan(build_id), str(shard)))

    def share(self, build_id: str, shard: int) -> Share:
        """What shard `shard` runs: shard 0 of a split planned from history runs all but the others' tests."""
        build = self.records.get_build(build_id)
        if shard == 0 and build is not None and build.shard_rest:
            return Share([t for n in range(1, build.shards) for t in self.plan(build_id, n)], exclude=True)
        return Share(self.plan(build_id, shard))

    def start(self, build_id: str, attempt: int, plans: list[list[str]], runner_id: str,
              rest: bool = False) -> bool:
        """Split a running build: record the plan, queue shards 1… as jobs of their own (the caller runs
        shard 0). With `rest`, shard 0 runs every test the other shards do not (its plan is only an
        estimate). False when `attempt` no longer owns the build."""
        encoded = [codec.encode_ids(ids) for ids in plans]

        def body(pipe: Txn) -> bool:
            build = read_build(pipe, build_id)
            if build is None or build.attempt != attempt or build.status is not Status.RUNNING:
                return False
            started = now_iso()
            pipe.multi()
            pipe.hset(keys.build(build_id), mapping={"shards": str(len(plans)), "shard_rest": "1" if rest else "0"})
            add_jobs(pipe, build, *(keys.shard_job_id(build_id, attempt, n, 1) for n in range(1, len(plans))))
            pipe.delete(keys.build_shard_plan(build_id), keys.build_shards(build_id))
            for number, blob in enumerate(encoded):
                pipe.hset(keys.build_shard_plan(build_id), str(number), blob)
                pipe.delete(keys.build_shard_tests(build_id, number))
                shard = Shard(number, 1, AttemptState.RUNNING, runner_id, started) if number == 0 else Shard(number)
                pipe.hset(keys.build_shards(build_id), str(number), shard.to_json())
            for number in range(1, len(plans)):
                jobqueue.enqueue_shard(self.r, build, attempt, number, 1, self.settings, pipe)
            return True

        return guarded(self.r, [keys.build(build_id)], body)

    def _shard_state(self, pipe: Txn, build_id: str, attempt: int, shard: int, shard_attempt: int,
                     states: tuple[AttemptState, ...]) -> tuple[Build, dict[int, Shard]] | None:
        """The build and its shards, if it runs under `attempt` and shard `shard` is at `shard_attempt`
        in one of `states`; None when it is not (cancelled, re-dispatched, ended)."""
        build = read_build(pipe, build_id)
        if build is None:
            return None
        shards = {int(k): Shard.from_json(v) for k, v in pipe.hgetall(keys.build_shards(build_id)).items()}
        mine = shards.get(shard)
        if (build.status is not Status.RUNNING or build.attempt != attempt or mine is None
                or mine.attempt != shard_attempt or mine.state not in states):
            return None
        return build, shards

    def claim(self, build_id: str, attempt: int, shard: int, shard_attempt: int,
              runner_id: str) -> Build | None:
        """Mark a queued shard running on `runner_id`; the build, or None when the shard is not ours to run."""

        def body(pipe: Txn) -> Build | None:
            found = self._shard_state(pipe, build_id, attempt, shard, shard_attempt, (AttemptState.QUEUED,))
            if found is None:
                return None
            pipe.multi()
            record = Shard(shard, shard_attempt, AttemptState.RUNNING, runner_id, now_iso())
            pipe.hset(keys.build_shards(build_id), str(shard), record.to_json())
            return found[0]

        return guarded(self.r, [keys.build(build_id), keys.build_shards(build_id)], body)

    def owns(self, build_id: str, attempt: int, shard: int, shard_attempt: int) -> bool:
        if not self.records.is_current(build_id, attempt):
            return False
        text = self.r.hget(keys.build_shards(build_id), str(shard))
        return bool(text) and Shard.from_json(text).attempt == shard_attempt

    def finish(self, build_id: str, attempt: int, shard: int, shard_attempt: int, runner_id: str,
               outcome: RunOutcome) -> str | None:
        """Store one shard's results; the last shard to finish merges them all into the build's one result.
        Returns "stored" or "merged", or None when this shard attempt no longer owns its shard."""
        finished = now_iso()

        ended = ""  # the build that ended with it: this one, or a matrix leg's build when it was the last leg

        def body(pipe: Txn) -> str | None:
            nonlocal ended
            found = self._shard_state(pipe, build_id, attempt, shard, shard_attempt, (AttemptState.RUNNING,))
            if found is None:
                return None
            build, shards = found
            others = [s for n, s in shards.items() if n != shard]
            complete = all(s.state is AttemptState.FINISHED for s in others)
            record = Shard(shard, shard_attempt, AttemptState.FINISHED, runner_id, shards[shard].started_at, finished,
                           outcome.status.value, budget.clip_message(outcome.reason, budget.REASON_MAX)[0],
                           len(outcome.tests))
            if not complete:
                mine = _encoded(outcome)
                parent = read_build(pipe, build.parent) if build.is_leg else None
                pipe.multi()
                firstfailure.note(pipe, build, parent if parent is not None and parent.status is Status.RUNNING
                                  else None, firstfailure.first_failing(outcome.tests), finished)
                pipe.hset(keys.build_shards(build_id), str(shard), record.to_json())
                pipe.delete(keys.build_shard_tests(build_id, shard))
                if mine:
                    pipe.hset(keys.build_shard_tests(build_id, shard), mapping=mine)
                return "stored"
            stored = {s.number: raw(pipe, "HGETALL", keys.build_shard_tests(build_id, s.number)) for s in others}
            earlier = {number: codec.decode_tests(fields) for number, fields in stored.items()}
            timings = Timings.combined([*(codec.decode_timings(fields.get(TIMINGS_FIELD.encode()))
                                          for fields in stored.values()), outcome.timings])
            cut = sum((Cut.from_json(fields.get(CUT_FIELD.encode())) for fields in stored.values()), outcome.cut)
            output = raw(pipe, "GET", keys.build_log(build_id))
            records = {**{s.number: s for s in others}, shard: record}
            merged = Encoded(merge(records, {**earlier, shard: outcome.tests}, outcome.log_tail, timings, cut))
            if build.is_leg:
                ended = self.legs.end(pipe, build, build.runner, merged, finished, output)
            else:
                pipe.multi()
                write_result(pipe, build, attempt, build.runner, merged, finished, output, self.settings.fair_window)
                ended = build_id
            pipe.hset(keys.build_shards(build_id), str(shard), record.to_json())
            for number in records:
                pipe.delete(keys.build_shard_tests(build_id, number))
            return "merged"

        done = guarded(self.r, watched(build_id, keys.build_shards(build_id), keys.build_log(build_id)), body)
        if done == "merged" and ended:
            self.trail.record_quietly(ended)
            self.queue.ended(ended)
        return done

    def redispatch(self, build_id: str, attempt: int, shard: int, shard_attempt: int, reason: str) -> str:
        """Record a shard's attempt as lost and queue its next one, or end the build `error` once the shard
        has had `max_attempts`. Returns "requeued", "gave up" or "" (nothing done)."""

        ended = ""

        def body(pipe: Txn) -> str:
            nonlocal ended
            build = read_build(pipe, build_id)
            text = pipe.hget(keys.build_shards(build_id), str(shard))
            record = Shard.from_json(text) if text else None
            if (build is None or build.attempt != attempt or build.status is not Status.RUNNING or record is None
                    or record.attempt != shard_attempt or record.state is AttemptState.FINISHED):
                return ""
            lost = Attempt(attempt, AttemptState.LOST, record.runner, record.started_at, now_iso(),
                           reason=f"shard {shard}: {reason}")
            if shard_attempt >= self.settings.max_attempts:
                ended = self.builds.give_up(pipe, build, f"gave up after shard {shard} had {shard_attempt} "
                                            f"attempt(s): each one's runner was lost (last: {reason})",
                                            build.runner, lost, None)
                return "gave up"
            pipe.multi()
            pipe.hset(keys.build_shards(build_id), str(shard), Shard(shard, shard_attempt + 1).to_json())
            add_jobs(pipe, build, keys.shard_job_id(build_id, attempt, shard, shard_attempt + 1))
            jobqueue.enqueue_shard(self.r, build, attempt, shard, shard_attempt + 1, self.settings, pipe)
            record_lost(pipe, build, lost, f"shard {shard} attempt {shard_attempt + 1} queued")
            return "requeued"

        done = guarded(self.r, watched(build_id, keys.build_shards(build_id), keys.build_log(build_id)), body)
        if done:
            jobqueue.retire_job(self.r, keys.shard_job_id(build_id, attempt, shard, shard_attempt),
                                f"Volt: shard attempt lost ({reason})", self.settings)
        if ended:
            self.queue.ended(ended)
        return done
