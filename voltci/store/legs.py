"""A matrix build: one build of a commit split into legs, one per interpreter and variable set of its
`.volt.toml`'s `[matrix]`, each run as an rq job of its own and merged into the build's one result.

Shards (shards.py) are the model. The runner that took the build reads the matrix and records the
legs (and queues them, each on the queue of its interpreter) while it owns the build, then leaves it:
from then on the build is running as long as one of its legs is. A leg's record is like a build's —
status, attempt, runner, counts, output, results, its own shards — under the leg's own id
(keys.leg_id), so a leg is claimed, fenced, split, streamed and re-dispatched by the same code as a
build, with attempts of its own. Only its end differs: it writes the leg's result, and the last leg
to end merges every leg's into the build's, in the same transaction (each leg's end writes the
build's record, so two legs ending at once cannot both miss the other). A leg lost with its runner
is queued again by the scheduler, up to `max_attempts`; a leg whose interpreter no live runner has
ends `error` naming it (the scheduler says when), and the other legs run on.
"""

from __future__ import annotations

import json
from dataclasses import replace

from voltci import jobqueue, keys
from voltci.clock import now_iso, seconds_between
from voltci.config import Settings
from voltci.models import Attempt, AttemptState, Build, Counts, Cut, Leg, RunOutcome, Status, TestResult
from voltci.store import codec, statuses
from voltci.store.endings import Encoded, add_jobs, compress_output, watched, write_cut, write_result
from voltci.store.queue import Queue
from voltci.store.records import read_build, read_legs
from voltci.store.trail import Trail
from voltci.store.tx import Client, Txn, guarded, raw

# The worst leg's status is the build's: this order, then failed, then passed.
WORST_FIRST = (Status.ERROR, Status.TIMEOUT, Status.CANCELLED, Status.FAILED)


def merge_legs(legs: list[Build], tests_by_leg: dict[str, list[TestResult]]) -> RunOutcome:
    """The legs' results as the build's: every leg's tests, each marked with its leg (the same test in
    two legs is two entries), the counts of them all, and the worst leg's status."""
    tests: list[TestResult] = []
    for leg in legs:
        for test in tests_by_leg.get(leg.id, []):
            tests.append(replace(test, leg=leg.leg, order=len(tests)))
    cut = sum((leg.cut for leg in legs), Cut())  # what each leg's results lost to the bounds (budget.py)
    counts = Counts.of(tests) + cut.counts
    reason = "; ".join(f"{leg.leg}: {leg.reason}" for leg in legs if leg.reason)
    for status in WORST_FIRST:
        worst = [leg for leg in legs if leg.status is status]
        if worst:
            return RunOutcome(status, tests, counts, reason, worst[0].log_tail, cut=cut)
    return RunOutcome(Status.PASSED, tests, counts, reason, "", cut=cut)


class Legs:
    """Matrix legs: the split, a leg nobody can run, and a leg's end (in the transaction of whichever part
    decides it: a leg's own end in builds.py, its last shard's merge in shards.py). `Legs(client,
    settings, trail, queue)`: the last leg's end is a build's end, recorded in `trail` and told
    to `queue`."""

    def __init__(self, client: Client, settings: Settings, trail: Trail, queue: Queue):
        self.r = client
        self.settings = settings
        self.trail = trail
        self.queue = queue

    def start(self, build_id: str, attempt: int, legs: list[Leg], runner_id: str) -> list[Build] | None:
        """Split a running build into matrix legs: record each and queue it on its interpreter's queue, in
        one transaction. The legs, or None when `attempt` no longer owns the build (or it was split)."""
        queued = now_iso()

        def body(pipe: Txn) -> list[Build] | None:
            build = read_build(pipe, build_id)
            if build is None or build.attempt != attempt or build.status is not Status.RUNNING or build.legs:
                return None
            records = []
            for number, leg in enumerate(legs):
                unit = keys.leg_id(build_id, attempt, number)
                records.append(Build(
                    id=unit, repo=build.repo, url=build.url, commit=build.commit, branch=build.branch,
                    subject=build.subject, author=build.author, queued_at=queued, waiting_since=queued,
                    parent=build_id, leg=leg.name, python=leg.python, env=dict(leg.env),
                    jobs=[keys.job_id(unit, 1)], pull_request=build.pull_request))
            pipe.multi()
            pipe.hset(keys.build(build_id), mapping={"legs": str(len(records)), "legs_ended": "0"})
            statuses.mark(pipe, build_id)
            add_jobs(pipe, build, *(keys.job_id(r.id, 1) for r in records))
            for record in records:
                pipe.delete(*unit_keys(record.id))
                pipe.hset(keys.build(record.id), mapping=record.to_hash())
                jobqueue.enqueue_leg(self.r, record, 1, self.settings, pipe)
            return records

        return guarded(self.r, [keys.build(build_id)], body)

    def end_unrunnable(self, leg_id: str, attempt: int, reason: str) -> bool:
        """End a queued leg `error` with `reason` (no live runner has its interpreter); the last leg to
        end ends the build. Whether it was still waiting."""

        def body(pipe: Txn) -> str | None:
            leg = read_build(pipe, leg_id)
            if leg is None or not leg.is_leg or leg.attempt != attempt or leg.status is not Status.QUEUED:
                return None
            return self.end(pipe, leg, "", Encoded(RunOutcome(Status.ERROR, [], Counts(), reason)), now_iso(), None)

        ended = guarded(self.r, watched(leg_id), body)
        if ended is None:
            return False
        jobqueue.retire_job(self.r, keys.job_id(leg_id, attempt), f"Volt: {reason}", self.settings)
        if ended:
            self.trail.record_quietly(ended)
            self.queue.ended(ended)
        return True

    def end(self, pipe: Txn, leg: Build, runner_id: str, encoded: Encoded, finished: str,
            output: bytes | None, attempt_record: Attempt | None = None) -> str:
        """A matrix leg's end, in the caller's guarded transaction (reads, then pipe.multi() and the writes):
        the leg's result, and with the last leg's the build's, merged. The id of its build when this was
        its last leg to end and the build's result was written with it, else ""."""
        parent = read_build(pipe, leg.parent)
        siblings = read_legs(pipe, parent) if parent is not None else []
        others = [s for s in siblings if s.id != leg.id]
        last = (parent is not None and parent.status is Status.RUNNING and len(others) < len(siblings)
                and all(s.status.is_final for s in others))
        earlier = {s.id: codec.decode_tests(raw(pipe, "HGETALL", keys.build_results(s.id))) for s in others} \
            if last else {}
        parent_output = raw(pipe, "GET", keys.build_log(leg.parent)) if last else None
        outcome = encoded.outcome
        pipe.multi()
        pipe.delete(keys.build_results(leg.id), keys.build_tests(leg.id))
        if encoded.results is not None:
            pipe.hset(keys.build_results(leg.id), mapping=encoded.results)
        if outcome.tests:  # this leg's latest suite, for its next split into shards
            if encoded.timings is not None:
                pipe.hset(keys.repo_leg_timings(leg.repo), leg.leg, encoded.timings)
            else:
                pipe.hdel(keys.repo_leg_timings(leg.repo), leg.leg)
        duration = seconds_between(leg.started_at, finished) if leg.started_at else 0.0
        ended = replace(leg, status=outcome.status, finished_at=finished, runner=runner_id or leg.runner,
                        duration_s=duration, counts=outcome.counts, reason=outcome.reason, log_tail=outcome.log_tail,
                        cut=outcome.cut)
        pipe.hset(keys.build(leg.id), mapping={
            "status": ended.status.value, "finished_at": finished, "runner": ended.runner,
            "duration_s": str(duration), "counts": json.dumps(outcome.counts.to_dict()), "reason": outcome.reason,
            "log_tail": outcome.log_tail})
        write_cut(pipe, leg.id, outcome)
        pipe.hincrby(keys.build(leg.id), "results_stored", 1)
        record = attempt_record or Attempt(leg.attempt, AttemptState.FINISHED, ended.runner, leg.started_at, finished,
                                           status=outcome.status.value)
        pipe.hset(keys.build_attempts(leg.id), str(record.number), record.to_json())
        compress_output(pipe, leg.id, output)
        if parent is None:
            return ""
        statuses.mark(pipe, parent.id)
        pipe.hincrby(keys.build(parent.id), "legs_ended", 1)
        if not last:
            return ""
        merged = merge_legs([ended if s.id == leg.id else s for s in siblings], {**earlier, leg.id: outcome.tests})
        write_result(pipe, parent, parent.attempt, parent.runner, Encoded(merged), finished, parent_output,
                     self.settings.fair_window)
        pipe.delete(*(keys.build_results(s.id) for s in siblings))  # the build's results hold them now
        return parent.id


def unit_keys(unit_id: str) -> list[str]:
    """The keys of a build or a leg, but those of its shards' results."""
    return [keys.build(unit_id), keys.build_results(unit_id), keys.build_tests(unit_id), keys.build_attempts(unit_id),
            keys.build_shards(unit_id), keys.build_shard_plan(unit_id), keys.build_log(unit_id)]
