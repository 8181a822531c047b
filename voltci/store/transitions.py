"""A build's state machine, in one place: every change of state is one guarded transaction on its record.

    submit ──▶ queued ──start_attempt──▶ running ──finish_build──▶ passed | failed | error | timeout
                 ▲  │                      │ │
                 │  └──cancel / supersede──┼─┼──▶ cancelled | skipped
                 │                         │ └──redispatch (its runner was lost)──▶ queued, attempt n+1
                 └──rebuild (an ended build)┘       … or error once it had max_attempts

Only the build's current attempt may start or end it (fencing): a runner whose attempt was
re-dispatched, or a build that was cancelled meanwhile, finds nothing to write. Each final write
counts itself in `results_stored`, tells listeners, queues the webhook message, compresses the
build's output and counts the build for /metrics (metrics.py) and for fair share (the runner time it
took), in the same transaction. Writes that put a job on rq's queue (submit, redispatch, rebuild) do
it in that transaction too, through jobqueue.py. After a build is queued or ends, `after_enqueue` and
`after_end` (store/dispatch.py) put the queue back in dispatch order.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from dataclasses import replace

from voltci import jobqueue, keys
from voltci.clock import now_iso, parse, seconds_between
from voltci.models import (
    PROTECTED_SCOPE,
    Attempt,
    AttemptState,
    Build,
    Counts,
    LostAttempt,
    Outcome,
    PointerUpdate,
    Push,
    QueuedFor,
    RunOutcome,
    Status,
)
from voltci.store import budget, codec, metrics
from voltci.store.records import Reads
from voltci.store.trail import Trail
from voltci.store.tx import Txn, guarded, raw

log = logging.getLogger("volt.store")

LOST_KEPT = 200
OUTBOX_KEPT = 10_000  # with no webhook configured, nobody empties it: keep it bounded
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


class Transitions(Trail):
    # ------------------------------------------------------------ a new build

    def add_build(self, build: Build, score: float, pipeline: Txn | None = None, newest: bool = True) -> None:
        """Record a new build: its record, the queue set (while it waits), the history and commit
        indexes, and — unless `newest` is False — as its branch's newest build."""
        if not build.status.is_final and not build.waiting_since:
            build = replace(build, waiting_since=build.queued_at or now_iso())
        with self._batch(pipeline) as pipe:
            pipe.hset(keys.build(build.id), mapping=build.to_hash())
            if not build.status.is_final:
                pipe.sadd(keys.queued(), build.id)
            pipe.zadd(keys.repo_history(build.repo), {build.id: score})
            pipe.zadd(keys.history(), {build.id: score})
            pipe.zadd(keys.commits(), {keys.commit_member(build.commit, build.repo): 0})
            if build.branch and newest:
                pipe.hset(keys.repo_heads(build.repo), build.branch, build.id)

    def record_finished(self, build: Build, outcome: RunOutcome, output: str = "", score: float | None = None,
                        pipeline: Txn | None = None, newest: bool = True) -> None:
        """Record a build that ran elsewhere — imported history, or a benchmark's — as a build run here
        is stored when it ends: record, compact results, compressed output, its attempt `build.attempt`
        (finished on `build.runner`), and the indexes. Repository aggregates (timings, flaky counts)
        are left as they are; `newest` as in add_build."""
        encoded = Encoded(outcome)
        outcome, results = encoded.outcome, encoded.results
        ended = replace(build, status=outcome.status, counts=outcome.counts, reason=outcome.reason,
                        log_tail=outcome.log_tail, results_stored=1, log_compressed=bool(output), cut=outcome.cut)
        with self._batch(pipeline) as pipe:
            self.add_build(ended, time.time() if score is None else score, pipeline=pipe, newest=newest)
            if results is not None:
                pipe.hset(keys.build_results(build.id), mapping=results)
            pipe.hset(keys.build_attempts(build.id), str(build.attempt),
                      Attempt(build.attempt, AttemptState.FINISHED, build.runner, build.started_at, build.finished_at,
                              status=outcome.status.value).to_json())
            if output:
                pipe.set(keys.build_log(build.id), codec.compress_log(output.encode()))
        if pipeline is None:  # with a caller's pipeline, the caller records the trail once it has run
            self.record_trail(build.id, outcome.tests)

    def submit(self, build: Build, pointer: PointerUpdate | None = None) -> bool:
        """Record and enqueue `build` (and move the observer's pointer) atomically. False if the build
        already existed: two observers, or one restarted, never build a commit twice."""
        key = keys.build(build.id)

        def body(pipe: Txn) -> bool:
            exists = bool(pipe.exists(key))
            pipe.multi()
            if not exists:
                self.add_build(replace(build, jobs=[keys.job_id(build.id, 1)]), time.time(), pipeline=pipe)
                jobqueue.enqueue_attempt(self.r, build, 1, self.settings, pipe)
            if pointer is not None:
                pipe.hset(keys.pointer(pointer.repo), pointer.branch, pointer.sha)
            return not exists

        created = guarded(self.r, [key], body)
        if created:
            self.after_enqueue()
        return created

    def submit_push(self, builds: list[Build], pointer: PointerUpdate | None, push: Push | None = None,
                    first: list[str] | None = None) -> list[Build]:
        """Record and enqueue the new commits of one branch (oldest first), move the observer's pointer,
        and record them as one push (culprit finding, bisect.py) — all in one transaction. Their jobs go
        on the queue in the order of `first` (build ids; then the rest, oldest first). Returns the
        builds created, oldest first: a commit that already has a build is not built again."""
        if not builds:
            return []
        rank = {build_id: n for n, build_id in enumerate(first or [])}
        in_queue_order = sorted(builds, key=lambda b: rank.get(b.id, len(rank)))
        age = {b.id: n for n, b in enumerate(builds)}
        now = time.time()

        def body(pipe: Txn) -> list[Build]:
            exists = {b.id for b in builds if pipe.exists(keys.build(b.id))}
            new = [b for b in builds if b.id not in exists]
            pipe.multi()
            if new and push is not None:
                new = [replace(b, push=push.id) for b in new]
                pipe.hset(keys.push(push.id), mapping=push.to_hash())
                pipe.sadd(keys.pushes(), push.id)
            by_id = {b.id: b for b in new}
            for build in (by_id[b.id] for b in in_queue_order if b.id in by_id):
                self.add_build(replace(build, jobs=[keys.job_id(build.id, 1)]), now + age[build.id] * 1e-4,
                               pipeline=pipe, newest=build.id == builds[-1].id)
                jobqueue.enqueue_attempt(self.r, build, 1, self.settings, pipe)
            if pointer is not None:
                pipe.hset(keys.pointer(pointer.repo), pointer.branch, pointer.sha)
            return new

        created = guarded(self.r, [keys.build(b.id) for b in builds], body)
        if created:
            self.after_enqueue()
        by_id = {b.id: b for b in created}
        return [by_id[b.id] for b in builds if b.id in by_id]

    def want(self, build_id: str, why: QueuedFor) -> bool:
        """Someone waits for a build already in the queue (`volt notify` of a commit the observer had
        already found): it goes before backlog. Whether it was still waiting."""

        def body(pipe: Txn) -> bool:
            build = self._read_build(pipe, build_id)
            if build is None or build.status is not Status.QUEUED or build.queued_for:
                return False
            pipe.multi()
            pipe.hset(keys.build(build_id), "queued_for", why.value)
            return True

        wanted = guarded(self.r, [keys.build(build_id)], body)
        if wanted:
            self.after_enqueue()
        return wanted

    # ------------------------------------------------------------ dispatch order (store/dispatch.py)

    def after_enqueue(self) -> None:
        """A build was queued: the queue goes back in dispatch order."""

    def after_end(self, builds: list[Build]) -> None:
        """`builds` ended: culprit finding in their pushes, and the queue back in dispatch order."""

    # ------------------------------------------------------------ a runner's attempt

    @staticmethod
    def _owned(pipe: Txn, build_id: str, attempt: int) -> Build | None:
        """The build, if `attempt` is its current attempt and it has not ended."""
        build = Reads._read_build(pipe, build_id)
        if build is None or build.attempt != attempt or build.status.is_final:
            return None
        return build

    def start_attempt(self, build_id: str, attempt: int, runner_id: str) -> Build | None:
        """Mark the build running under `attempt`; None when that attempt is no longer the build's to run
        (already finished, cancelled, or superseded by a newer attempt)."""
        started = now_iso()

        def body(pipe: Txn) -> Build | None:
            build = self._owned(pipe, build_id, attempt)
            if build is None:
                return None
            pipe.multi()
            pipe.hset(keys.build(build_id), mapping={"status": Status.RUNNING.value, "runner": runner_id,
                                                     "started_at": started, "progress": "0", "log_compressed": "0"})
            pipe.hset(keys.build_attempts(build_id), str(attempt),
                      Attempt(attempt, AttemptState.RUNNING, runner_id, started).to_json())
            pipe.delete(keys.build_log(build_id))  # an attempt's output starts afresh
            if build.is_leg:
                return replace(build, status=Status.RUNNING, runner=runner_id, started_at=started)
            pipe.hset(keys.build(build_id), "legs", "0")  # a new attempt has no matrix legs until it splits
            pipe.srem(keys.queued(), build_id)
            pipe.sadd(keys.running(), build_id)
            metrics.observe(pipe, metrics.QUEUE_WAIT, seconds_between(build.waiting_since or build.queued_at, started))
            return replace(build, status=Status.RUNNING, runner=runner_id, started_at=started, log_compressed=False,
                           legs=0)

        return guarded(self.r, [keys.build(build_id)], body)

    def set_scope(self, build_id: str, attempt: int, scope: str) -> bool:
        """Record the trust scope `attempt` of a build runs in (scopes.py), if that attempt still owns it;
        the observer builds again, in the protected scope, a commit a protected branch reaches whose
        build ran in another."""

        def body(pipe: Txn) -> bool:
            if self._owned(pipe, build_id, attempt) is None:
                return False
            pipe.multi()
            pipe.hset(keys.build(build_id), "scope", scope)
            return True

        return guarded(self.r, [keys.build(build_id)], body)

    def protect(self, build_id: str, branch: str) -> str:
        """A build of a commit that protected `branch` reached, when its result was (or would be) made in
        another trust scope: a queued one is moved to `branch`, so it runs in the protected scope; an ended
        one is queued again as a build of `branch`. What was done: "moved", "rebuilt" or "" (nothing:
        unknown, protected already, or under way)."""

        def body(pipe: Txn) -> str:
            build = self._read_build(pipe, build_id)
            if build is None or build.branch == branch or (build.scope in ("", PROTECTED_SCOPE)
                                                           and build.status is not Status.QUEUED):
                return ""
            if build.status is Status.QUEUED:
                pipe.multi()
                pipe.hset(keys.build(build_id), "branch", branch)
                return "moved"
            if not build.status.is_final:
                return ""  # running: looked at again once it ends
            pipe.multi()
            pipe.hset(keys.build(build_id), mapping={"branch": branch, "scope": ""})
            return "rebuild"

        done = guarded(self.r, [keys.build(build_id)], body)
        if done == "rebuild":
            return "rebuilt" if self.rebuild(build_id) is not None else ""
        return done

    def set_progress(self, build_id: str, done: int) -> None:
        """How many test results a running build has so far (a display hint, not part of its result)."""
        self.r.hset(keys.build(build_id), "progress", str(done))

    def finish_build(self, build_id: str, attempt: int, runner_id: str, outcome: RunOutcome) -> bool:
        """Store a build's result (or a matrix leg's: the last leg to end stores the build's), once, if
        `attempt` still owns it. Returns whether it was stored."""
        encoded = Encoded(outcome)
        finished = now_iso()

        def body(pipe: Txn) -> str | None:
            build = self._owned(pipe, build_id, attempt)
            if build is None:
                return None
            output = raw(pipe, "GET", keys.build_log(build_id))
            if build.is_leg:
                return self._end_leg(pipe, build, runner_id, encoded, finished, output)
            pipe.multi()
            self._write_result(pipe, build, attempt, runner_id, encoded, finished, output)
            return build_id

        ended = guarded(self.r, self._watched(build_id, keys.build_log(build_id)), body)
        if ended:
            self.record_trail_quietly(ended, encoded.outcome.tests if ended == build_id else None)
            self._ended_now(ended)
        return ended is not None

    def _ended_now(self, *build_ids: str) -> None:
        self.after_end(self._builds(list(build_ids)))

    # ------------------------------------------------------------ matrix legs (store/legs.py)

    @staticmethod
    def _watched(unit_id: str, *more: str) -> list[str]:
        """The keys a transaction on a build (or a matrix leg) watches: its record, `more`, and a leg's
        build's record — every leg's end writes it, so two legs ending at once cannot both miss the other."""
        parent = keys.parent_of(unit_id)
        return [keys.build(unit_id), *more, *([keys.build(parent), keys.build_log(parent)] if parent else [])]

    def _end_leg(self, pipe: Txn, leg: Build, runner_id: str, encoded: Encoded, finished: str,
                 output: bytes | None, attempt_record: Attempt | None = None) -> str:
        """A matrix leg's end (reads, then pipe.multi() and the writes); the id of its build when this was
        its last leg to end and the build's result was written with it, else ""."""
        raise NotImplementedError("store/legs.py")

    def _write_result(self, pipe: Txn, build: Build, attempt: int, runner_id: str, encoded: Encoded,
                      finished: str, output: bytes | None) -> None:
        """The writes of a build's final result (inside the caller's transaction)."""
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
        self._write_cut(pipe, build_id, outcome)
        pipe.hset(keys.build_attempts(build_id), str(attempt),
                  Attempt(attempt, AttemptState.FINISHED, runner_id, build.started_at, finished,
                          status=outcome.status.value).to_json())
        for test in outcome.tests:
            if test.outcome is Outcome.FLAKY and not test.subtest_of:
                pipe.zincrby(keys.repo_flaky(build.repo), 1, test.id)
                pipe.hset(keys.repo_flaky_last(build.repo), test.id, build_id)
        self._compress_output(pipe, build_id, output)
        self._ended(pipe, build_id, outcome.status)
        self._account(pipe, build, outcome.status, finished)

    @staticmethod
    def _write_cut(pipe: Txn, unit_id: str, outcome: RunOutcome) -> None:
        """What the results lost to the bounds, in the record's `cut` field (none: no field)."""
        if outcome.cut:
            pipe.hset(keys.build(unit_id), "cut", outcome.cut.to_json())
        else:
            pipe.hdel(keys.build(unit_id), "cut")

    @staticmethod
    def _compress_output(pipe: Txn, build_id: str, output: bytes | None) -> None:
        """An ended build's output is read, if ever, whole: it is kept compressed."""
        if output:
            pipe.set(keys.build_log(build_id), codec.compress_log(output))
            pipe.hset(keys.build(build_id), "log_compressed", "1")

    def _account(self, pipe: Txn, build: Build, status: Status, finished: str) -> None:
        """Count an ended build for /metrics, and the runner time it took for fair share."""
        metrics.count_build(pipe, build.repo, status.value)
        start, end = epoch(build.started_at), epoch(finished)
        if start is None or end is None:
            return  # it never ran
        metrics.observe(pipe, metrics.BUILD_DURATION, end - start)
        pipe.zadd(keys.runtime(), {f"{build.id} {build.attempt} {start:.3f} {end:.3f}": end})
        pipe.zremrangebyscore(keys.runtime(), "-inf", f"({end - self.settings.fair_window}")
        pipe.zremrangebyrank(keys.runtime(), 0, -RUNTIME_KEPT - 1)

    @staticmethod
    def _ended(pipe: Txn, build_id: str, status: Status) -> None:
        """What every write of a final status does: leave the work sets, count the write, tell listeners.

        `results_stored` counts final writes, so that "written exactly once" can be checked, not assumed.
        """
        pipe.srem(keys.queued(), build_id)
        pipe.srem(keys.running(), build_id)
        pipe.hincrby(keys.build(build_id), "results_stored", 1)
        pipe.publish(keys.events(), json.dumps({"build": build_id, "status": status.value}))
        pipe.lpush(keys.outbox(), json.dumps({"build": build_id}))  # for the webhook (see webhooks.py)
        pipe.ltrim(keys.outbox(), 0, OUTBOX_KEPT - 1)

    def _end_without_result(self, pipe: Txn, build: Build, status: Status, reason: str,
                            attempt_record: Attempt | None, output: bytes | None) -> None:
        """End `build` (read under WATCH) with `status` and no test results: cancelled, skipped, or given
        up after its runners were lost. `attempt_record` replaces its current attempt's record."""
        finished = now_iso()
        pipe.hset(keys.build(build.id), mapping={
            "status": status.value, "reason": reason, "finished_at": finished,
            "duration_s": str(seconds_between(build.started_at, finished) if build.started_at else 0.0),
        })
        if attempt_record is not None:
            pipe.hset(keys.build_attempts(build.id), str(attempt_record.number), attempt_record.to_json())
        self._compress_output(pipe, build.id, output)
        self._ended(pipe, build.id, status)
        self._account(pipe, build, status, finished)

    def _give_up(self, pipe: Txn, build: Build, why: str, runner_id: str, lost: Attempt,
                 attempt_record: Attempt | None) -> str:
        """End a build (or a matrix leg) `error` after its runners were lost `max_attempts` times (reads,
        then pipe.multi() and the writes); the id of the build that ended with it."""
        output = raw(pipe, "GET", keys.build_log(build.id))
        if build.is_leg:
            error = Encoded(RunOutcome(Status.ERROR, [], Counts(), why))
            ended = self._end_leg(pipe, build, runner_id, error, now_iso(), output, attempt_record)
        else:
            pipe.multi()
            self._end_without_result(pipe, build, Status.ERROR, why, attempt_record, output)
            ended = build.id
        self._record_lost(pipe, build, lost, "gave up")
        return ended

    @staticmethod
    def _record_lost(pipe: Txn, build: Build, lost: Attempt, next_step: str) -> None:
        """Keep the latest lost attempts for `volt status`."""
        pipe.lpush(keys.lost(), LostAttempt(build.id, build.repo, build.commit, lost.number, lost.runner,
                                            lost.started_at, lost.ended_at, lost.reason, next_step).to_json())
        pipe.ltrim(keys.lost(), 0, LOST_KEPT - 1)
        metrics.count_lost(pipe)

    @staticmethod
    def _add_jobs(pipe: Txn, build: Build, *job_ids: str) -> None:
        pipe.hset(keys.build(build.id), "jobs", " ".join([*build.jobs, *job_ids]))

    # ------------------------------------------------------------ the scheduler and people

    def redispatch(self, build_id: str, attempt: int, reason: str, runner: str = "") -> str:
        """Record attempt `attempt` of a build as lost and queue the next one, or end the build `error`
        once it has had `max_attempts`. Does nothing unless `attempt` is still the build's current one.
        Returns "requeued", "gave up" or "" (nothing done)."""

        ended = ""  # the build that ended with it (a matrix leg's last may end its build)

        def body(pipe: Txn) -> str:
            nonlocal ended
            build = self._owned(pipe, build_id, attempt)
            if build is None:
                return ""
            prior = self._attempt_record(pipe, build)
            lost = replace(prior, state=AttemptState.LOST, runner=prior.runner or runner, ended_at=now_iso(),
                           reason=reason)
            if attempt >= self.settings.max_attempts:
                ended = self._give_up(pipe, build, f"gave up after {attempt} attempt(s): each one's runner was "
                                      f"lost (last: {reason})", lost.runner, lost, lost)
                return "gave up"
            pipe.multi()
            pipe.hset(keys.build_attempts(build.id), str(lost.number), lost.to_json())
            pipe.hset(keys.build(build.id), mapping={"status": Status.QUEUED.value, "attempt": str(attempt + 1),
                                                     "runner": "", "started_at": "", "waiting_since": now_iso(),
                                                     "queued_for": QueuedFor.LOST.value})
            self._add_jobs(pipe, build, keys.job_id(build_id, attempt + 1))
            if build.is_leg:
                jobqueue.enqueue_leg(self.r, build, attempt + 1, self.settings, pipe)
            else:
                pipe.srem(keys.running(), build.id)
                pipe.sadd(keys.queued(), build.id)
                jobqueue.enqueue_attempt(self.r, build, attempt + 1, self.settings, pipe)
            self._record_lost(pipe, build, lost, f"attempt {attempt + 1} queued")
            return "requeued"

        done = guarded(self.r, self._watched(build_id, keys.build_log(build_id)), body)
        if done:
            jobqueue.retire_job(self.r, keys.job_id(build_id, attempt), f"Volt: attempt lost ({reason})", self.settings)
        if ended:
            self._ended_now(ended)
        return done

    def cancel(self, build_id: str, why: str = "cancelled on request") -> Build | None:
        """End a queued or running build `cancelled`. Its runner sees that within a second and kills
        the tests' process group. Returns the build as it was before, or None if it had already ended."""

        waiting_legs: list[Build] = []

        def body(pipe: Txn) -> Build | None:
            build = self._read_build(pipe, build_id)
            if build is None or build.status.is_final or build.is_leg:
                return None
            record = None
            if build.status is Status.RUNNING:
                record = replace(self._attempt_record(pipe, build), state=AttemptState.FINISHED, ended_at=now_iso(),
                                 status=Status.CANCELLED.value)
            output = raw(pipe, "GET", keys.build_log(build_id))
            legs = [leg for leg in self._read_legs(pipe, build) if not leg.status.is_final]
            pipe.multi()
            self._end_without_result(pipe, build, Status.CANCELLED, why, record, output)
            ended = now_iso()
            for leg in legs:  # their runners see it within a second and stop
                pipe.hset(keys.build(leg.id), mapping={"status": Status.CANCELLED.value, "reason": why,
                                                       "finished_at": ended})
            waiting_legs[:] = [leg for leg in legs if leg.status is Status.QUEUED]
            return build

        before = guarded(self.r, [keys.build(build_id), keys.build_log(build_id)], body)
        for leg in waiting_legs:
            jobqueue.retire_job(self.r, keys.job_id(leg.id, leg.attempt), "Volt: build cancelled", self.settings)
        if before is not None and before.status is Status.QUEUED:
            jobqueue.retire_job(self.r, keys.job_id(build_id, before.attempt), "Volt: build cancelled", self.settings)
        if before is not None:
            self._ended_now(build_id)
        return before

    def supersede(self, newest: Build) -> list[Build]:
        """Mark `skipped` every other build of `newest`'s repository and branch still waiting in the queue
        (the observer calls this with the newest commit it enqueued): a busy pool then builds what
        matters. Running builds are left to finish."""
        older = [b for b in self.queued_builds() if b.repo == newest.repo and b.branch == newest.branch
                 and b.id != newest.id]
        skipped = []
        for build in older:
            def body(pipe: Txn, build_id: str = build.id) -> bool:
                current = self._read_build(pipe, build_id)
                if current is None or current.status is not Status.QUEUED:
                    return False
                pipe.multi()
                self._end_without_result(pipe, current, Status.SKIPPED, f"superseded by {newest.short}", None, None)
                return True

            if guarded(self.r, [keys.build(build.id)], body):
                jobqueue.retire_job(self.r, keys.job_id(build.id, build.attempt), f"Volt: superseded by {newest.short}",
                                 self.settings)
                skipped.append(build)
        if skipped:
            self._ended_now(*(b.id for b in skipped))
        return skipped

    def interrupt(self, newest: Build) -> list[Build]:
        """Cancel the running builds of `newest`'s branch that were queued before it (GitLab's
        `interruptible`; the observer's `--interrupt`), each with the reason. A build someone asked to be
        built again (Rebuild) is left to finish. Their runners stop their tests within a second."""
        older = [b for b in self.running_builds() if b.repo == newest.repo and b.branch == newest.branch
                 and b.id != newest.id and b.queued_for != QueuedFor.REBUILD.value
                 and (b.queued_at or "") <= (newest.queued_at or "~")]
        return [b for b in older if self.cancel(b.id, f"interrupted: superseded by {newest.short}, a newer commit "
                                                      f"of {newest.branch} (--interrupt)") is not None]

    def rebuild(self, build_id: str) -> Build | None:
        """Queue an ended build again, as its next attempt (the earlier ones stay in its history).
        Returns the build as it was, or None when it has not ended (it is queued or running)."""

        def body(pipe: Txn) -> Build | None:
            build = self._read_build(pipe, build_id)
            if build is None or not build.status.is_final:
                return None
            pipe.multi()
            pipe.delete(keys.build_results(build.id), keys.build_tests(build.id))
            queued = now_iso()
            pipe.hset(keys.build(build.id), mapping={
                "status": Status.QUEUED.value, "attempt": str(build.attempt + 1), "queued_at": queued,
                "runner": "", "started_at": "", "finished_at": "", "duration_s": "0.0", "reason": "",
                "log_tail": "", "counts": json.dumps(Counts().to_dict()), "results_stored": "0",
                "waiting_since": queued, "queued_for": QueuedFor.REBUILD.value, "first_failing": ""})
            pipe.hdel(keys.build(build.id), "cut")
            self._add_jobs(pipe, build, keys.job_id(build_id, build.attempt + 1))
            pipe.sadd(keys.queued(), build.id)
            jobqueue.enqueue_attempt(self.r, build, build.attempt + 1, self.settings, pipe)
            return build

        before = guarded(self.r, [keys.build(build_id)], body)
        if before is not None:
            self.after_enqueue()
        return before
