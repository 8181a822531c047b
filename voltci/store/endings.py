"""The writes that end a build, a matrix leg or an attempt, inside the caller's guarded transaction.

A build ends in one of three parts — its own end (builds.py), its last shard's merge (shards.py), its
last leg's (legs.py) — and each writes the same things in the transaction that decides it: the result
and its record, the work sets, `results_stored`, the event, the webhook message, the mark that its
forge has news (statuses.py), its first failing test when none was seen while it ran (firstfailure.py), the
compressed output, the counters for /metrics and the runner time for fair share. They are written here, once, as
functions of the caller's pipeline, so that every end stays one transaction whichever part decides it.
"""

from __future__ import annotations

import json
import logging
import traceback

from voltci import keys
from voltci.clock import now_iso, parse, seconds_between
from voltci.models import Attempt, AttemptState, Build, LostAttempt, Outcome, RunOutcome, Status
from voltci.store import budget, codec, firstfailure, metrics, outbox, statuses
from voltci.store.tx import Txn

log = logging.getLogger("volt.store")

LOST_KEPT = 200
RUNTIME_KEPT = 100_000  # attempts whose runner time fair share reads, at most (within fair_window)


def epoch(iso: str) -> float | None:
    moment = parse(iso)
    return moment.timestamp() if moment is not None else None


class Encoded:
    """A run's results cut to what a build keeps (budget.py) and encoded, before the transaction (encoding
    a large suite takes a moment, and a transaction should only decide and write). `outcome` is the one
    stored: what was cut is counted in its `cut`."""

    def __init__(self, outcome: RunOutcome):
        try:
            fitted = budget.fit(outcome)
        except Exception as exc:  # results that cannot be kept end the build, never the runner that stores them
            log.error("results that could not be encoded:\n%s", traceback.format_exc())
            fitted = budget.fit(RunOutcome(Status.ERROR, [], outcome.counts,
                                           f"the results could not be stored: {type(exc).__name__}: {exc}"))
        self.outcome, self.results, self.timings = fitted.outcome, fitted.results, fitted.timings


def watched(unit_id: str, *more: str) -> list[str]:
    """The keys a transaction on a build (or a matrix leg) watches: its record, `more`, and a leg's
    build's record — every leg's end writes it, so two legs ending at once cannot both miss the other."""
    parent = keys.parent_of(unit_id)
    return [keys.build(unit_id), *more, *([keys.build(parent), keys.build_log(parent)] if parent else [])]


def write_result(pipe: Txn, build: Build, attempt: int, runner_id: str, encoded: Encoded, finished: str,
                 output: bytes | None, fair_window: float) -> None:
    """The writes of a build's final result."""
    outcome = encoded.outcome
    build_id = build.id
    pipe.delete(keys.build_results(build_id), keys.build_tests(build_id))
    if encoded.results is not None:
        pipe.hset(keys.build_results(build_id), mapping=encoded.results)
    if outcome.tests and not build.legs:  # the latest suite's tests only: removed tests leave the timings
        # (a matrix build's legs kept their own, store/legs.py)
        if encoded.timings is not None:
            pipe.set(keys.repo_timings(build.repo), encoded.timings)
        else:
            pipe.delete(keys.repo_timings(build.repo))
        pipe.delete(keys.repo_durations(build.repo))
    pipe.hset(keys.build(build_id), mapping={
        "status": outcome.status.value,
        "finished_at": finished,
        "runner": runner_id,
        "duration_s": str(seconds_between(build.started_at or finished, finished)),
        "counts": json.dumps(outcome.counts.to_dict()),
        "reason": outcome.reason,
        "log_tail": outcome.log_tail,
    })
    write_cut(pipe, build_id, outcome)
    if outcome.order_dependent:
        pipe.hset(keys.build(build_id), "order_dependent", json.dumps(outcome.order_dependent))
    else:
        pipe.hdel(keys.build(build_id), "order_dependent")
    firstfailure.note(pipe, build, None, firstfailure.first_failing(outcome.tests), finished)  # none seen so far
    pipe.hset(keys.build_attempts(build_id), str(attempt),
              Attempt(attempt, AttemptState.FINISHED, runner_id, build.started_at, finished,
                      status=outcome.status.value).to_json())
    for test in outcome.tests:
        if test.outcome is Outcome.FLAKY and not test.subtest_of:
            pipe.zincrby(keys.repo_flaky(build.repo), 1, test.id)
            pipe.hset(keys.repo_flaky_last(build.repo), test.id, build_id)
    compress_output(pipe, build_id, output)
    ended(pipe, build_id, outcome.status)
    account(pipe, build, outcome.status, finished, fair_window)


def write_cut(pipe: Txn, unit_id: str, outcome: RunOutcome) -> None:
    """What the results lost to the bounds, in the record's `cut` field (none: no field)."""
    if outcome.cut:
        pipe.hset(keys.build(unit_id), "cut", outcome.cut.to_json())
    else:
        pipe.hdel(keys.build(unit_id), "cut")


def compress_output(pipe: Txn, build_id: str, output: bytes | None) -> None:
    """An ended build's output is read, if ever, whole: it is kept compressed."""
    if output:
        pipe.set(keys.build_log(build_id), codec.compress_log(output))
        pipe.hset(keys.build(build_id), "log_compressed", "1")


def account(pipe: Txn, build: Build, status: Status, finished: str, fair_window: float) -> None:
    """Count an ended build for /metrics, and the runner time it took for fair share."""
    metrics.count_build(pipe, build.repo, status.value)
    start, end = epoch(build.started_at), epoch(finished)
    if start is None or end is None:
        return  # it never ran
    metrics.observe(pipe, metrics.BUILD_DURATION, end - start)
    pipe.zadd(keys.runtime(), {f"{build.id} {build.attempt} {start:.3f} {end:.3f}": end})
    pipe.zremrangebyscore(keys.runtime(), "-inf", f"({end - fair_window}")
    pipe.zremrangebyrank(keys.runtime(), 0, -RUNTIME_KEPT - 1)


def ended(pipe: Txn, build_id: str, status: Status) -> None:
    """What every write of a final status does: leave the work sets, count the write, tell listeners.

    `results_stored` counts final writes, so that "written exactly once" can be checked, not assumed.
    """
    pipe.srem(keys.queued(), build_id)
    pipe.srem(keys.running(), build_id)
    pipe.hincrby(keys.build(build_id), "results_stored", 1)
    pipe.publish(keys.events(), json.dumps({"build": build_id, "status": status.value}))
    outbox.put(pipe, {"build": build_id})
    statuses.mark(pipe, build_id)


def end_without_result(pipe: Txn, build: Build, status: Status, reason: str, attempt_record: Attempt | None,
                       output: bytes | None, fair_window: float) -> None:
    """End `build` (read under WATCH) with `status` and no test results: cancelled, skipped, or given
    up after its runners were lost. `attempt_record` replaces its current attempt's record."""
    finished = now_iso()
    pipe.hset(keys.build(build.id), mapping={
        "status": status.value, "reason": reason, "finished_at": finished,
        "duration_s": str(seconds_between(build.started_at, finished) if build.started_at else 0.0),
    })
    if attempt_record is not None:
        pipe.hset(keys.build_attempts(build.id), str(attempt_record.number), attempt_record.to_json())
    compress_output(pipe, build.id, output)
    ended(pipe, build.id, status)
    account(pipe, build, status, finished, fair_window)


def record_lost(pipe: Txn, build: Build, lost: Attempt, next_step: str) -> None:
    """Keep the latest lost attempts for `volt status`."""
    pipe.lpush(keys.lost(), LostAttempt(build.id, build.repo, build.commit, lost.number, lost.runner,
                                        lost.started_at, lost.ended_at, lost.reason, next_step).to_json())
    pipe.ltrim(keys.lost(), 0, LOST_KEPT - 1)
    metrics.count_lost(pipe)


def add_jobs(pipe: Txn, build: Build, *job_ids: str) -> None:
    """Record rq jobs of `build` (retention deletes every job a build recorded)."""
    pipe.hset(keys.build(build.id), "jobs", " ".join([*build.jobs, *job_ids]))
