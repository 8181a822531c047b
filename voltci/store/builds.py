"""A build's state machine, in one place: every change of state is one guarded transaction on its record.

    submit ──▶ queued ──start_attempt──▶ running ──finish──▶ passed | failed | error | timeout
                 ▲  │                      │ │
                 │  └──cancel / supersede──┼─┼──▶ cancelled | skipped
                 │                         │ └──redispatch (its runner was lost)──▶ queued, attempt n+1
                 └──rebuild (an ended build)┘       … or error once it had max_attempts

Only the build's current attempt may start or end it (fencing): a runner whose attempt was
re-dispatched, or a build that was cancelled meanwhile, finds nothing to write. Each final write
counts itself in `results_stored`, tells listeners, queues the webhook message, compresses the
build's output and counts the build for /metrics (metrics.py) and for fair share (the runner time it
took), in the same transaction. Writes that put a job on rq's queue (submit, redispatch, rebuild) do
it in that transaction too, through jobqueue.py (the writes every end shares are endings.py's).

A matrix leg's end is the legs part's (legs.py), inside the transaction this part opens; after a
build is queued or ends, the queue part (queue.py) puts the queue back in dispatch order, and after
it ends the trail part (trail.py) records its tests. Each is handed to `Builds` when the store is made.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

from voltci import jobqueue, keys
from voltci.clock import now_iso, seconds_between
from voltci.config import Settings
from voltci.models import (
    PROTECTED_SCOPE,
    Attempt,
    AttemptState,
    Build,
    Counts,
    PointerUpdate,
    PullRequest,
    Push,
    QueuedFor,
    RunOutcome,
    Status,
)
from voltci.store import codec, firstfailure, metrics, statuses
from voltci.store.endings import Encoded, add_jobs, end_without_result, record_lost, watched, write_result
from voltci.store.legs import Legs
from voltci.store.queue import Queue
from voltci.store.records import Records, read_attempt, read_build, read_legs
from voltci.store.trail import Trail
from voltci.store.tx import Client, Txn, batch, guarded, raw


class Builds:
    """Every guarded change of a build's state. `Builds(client, settings, records, legs, trail, queue)`:
    it reads builds through `records`, ends a matrix leg through `legs`, records an ended build's
    tests in `trail`, and tells `queue` when builds are queued or end."""

    def __init__(self, client: Client, settings: Settings, records: Records, legs: Legs, trail: Trail,
                 queue: Queue):
        self.r = client
        self.settings = settings
        self.records = records
        self.legs = legs
        self.trail = trail
        self.queue = queue

    # ------------------------------------------------------------ a new build

    def add(self, build: Build, score: float, pipeline: Txn | None = None, newest: bool = True) -> None:
        """Record a new build: its record, the queue set (while it waits), the history and commit
        indexes, and — unless `newest` is False — as its branch's newest build."""
        if not build.status.is_final and not build.waiting_since:
            build = replace(build, waiting_since=build.queued_at or now_iso())
        with batch(self.r, pipeline) as pipe:
            pipe.hset(keys.build(build.id), mapping=build.to_hash())
            if not build.status.is_final:
                pipe.sadd(keys.queued(), build.id)
                statuses.mark(pipe, build.id)
            pipe.zadd(keys.repo_history(build.repo), {build.id: score})
            pipe.zadd(keys.history(), {build.id: score})
            pipe.zadd(keys.commits(), {keys.commit_member(build.commit, build.repo, build.pull_number): 0})
            if build.branch and newest:
                pipe.hset(keys.repo_heads(build.repo), build.branch, build.id)

    def record_finished(self, build: Build, outcome: RunOutcome, output: str = "", score: float | None = None,
                        pipeline: Txn | None = None, newest: bool = True) -> None:
        """Record a build that ran elsewhere — imported history, or a benchmark's — as a build run here
        is stored when it ends: record, compact results, compressed output, its attempt `build.attempt`
        (finished on `build.runner`), and the indexes. Repository aggregates (timings, flaky counts)
        are left as they are; `newest` as in `add`."""
        encoded = Encoded(outcome)
        outcome, results = encoded.outcome, encoded.results
        ended = replace(build, status=outcome.status, counts=outcome.counts, reason=outcome.reason,
                        log_tail=outcome.log_tail, results_stored=1, log_compressed=bool(output), cut=outcome.cut)
        with batch(self.r, pipeline) as pipe:
            self.add(ended, time.time() if score is None else score, pipeline=pipe, newest=newest)
            if results is not None:
                pipe.hset(keys.build_results(build.id), mapping=results)
            pipe.hset(keys.build_attempts(build.id), str(build.attempt),
                      Attempt(build.attempt, AttemptState.FINISHED, build.runner, build.started_at, build.finished_at,
                              status=outcome.status.value).to_json())
            if output:
                pipe.set(keys.build_log(build.id), codec.compress_log(output.encode()))
        if pipeline is None:  # with a caller's pipeline, the caller records the trail once it has run
            self.trail.record(build.id, outcome.tests)

    def submit(self, build: Build, pointer: PointerUpdate | None = None) -> bool:
        """Record and enqueue `build` (and move the observer's pointer) atomically. False if the build
        already existed: two observers, or one restarted, never build a commit twice."""
        key = keys.build(build.id)

        def body(pipe: Txn) -> bool:
            exists = bool(pipe.exists(key))
            pipe.multi()
            if not exists:
                self.add(replace(build, jobs=[keys.job_id(build.id, 1)]), time.time(), pipeline=pipe)
                jobqueue.enqueue_attempt(self.r, build, 1, self.settings, pipe)
            if pointer is not None:
                pipe.hset(keys.pointer(pointer.repo), pointer.branch, pointer.sha)
            return not exists

        created = guarded(self.r, [key], body)
        if created:
            self.queue.enqueued()
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
                self.add(replace(build, jobs=[keys.job_id(build.id, 1)]), now + age[build.id] * 1e-4,
                         pipeline=pipe, newest=build.id == builds[-1].id)
                jobqueue.enqueue_attempt(self.r, build, 1, self.settings, pipe)
            if pointer is not None:
                pipe.hset(keys.pointer(pointer.repo), pointer.branch, pointer.sha)
            return new

        created = guarded(self.r, [keys.build(b.id) for b in builds], body)
        if created:
            self.queue.enqueued()
        by_id = {b.id: b for b in created}
        return [by_id[b.id] for b in builds if b.id in by_id]

    def want(self, build_id: str, why: QueuedFor) -> bool:
        """Someone waits for a build already in the queue (`volt notify` of a commit the observer had
        already found): it goes before backlog. Whether it was still waiting."""

        def body(pipe: Txn) -> bool:
            build = read_build(pipe, build_id)
            if build is None or build.status is not Status.QUEUED or build.queued_for:
                return False
            pipe.multi()
            pipe.hset(keys.build(build_id), "queued_for", why.value)
            return True

        wanted = guarded(self.r, [keys.build(build_id)], body)
        if wanted:
            self.queue.enqueued()
        return wanted

    # ------------------------------------------------------------ a runner's attempt

    @staticmethod
    def _owned(pipe: Txn, build_id: str, attempt: int) -> Build | None:
        """The build, if `attempt` is its current attempt and it has not ended."""
        build = read_build(pipe, build_id)
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
            firstfailure.forget(pipe, build_id)
            statuses.mark(pipe, build_id)
            if build.is_leg:
                return replace(build, status=Status.RUNNING, runner=runner_id, started_at=started)
            pipe.hset(keys.build(build_id), "legs", "0")  # a new attempt has no matrix legs until it splits
            pipe.srem(keys.queued(), build_id)
            pipe.sadd(keys.running(), build_id)
            metrics.observe(pipe, metrics.QUEUE_WAIT, seconds_between(build.waiting_since or build.queued_at, started))
            return replace(build, status=Status.RUNNING, runner=runner_id, started_at=started, log_compressed=False,
                           legs=0)

        return guarded(self.r, [keys.build(build_id)], body)

    def set_scope(self, build_id: str, attempt: int, scope: str, pull: PullRequest | None = None) -> bool:
        """Record the trust scope `attempt` of a build runs in (scopes.py), if that attempt still owns it;
        the observer builds again, in the protected scope, a commit a protected branch reaches whose
        build ran in another. A pull request's build also records the base its head was merged into."""

        def body(pipe: Txn) -> bool:
            if self._owned(pipe, build_id, attempt) is None:
                return False
            pipe.multi()
            pipe.hset(keys.build(build_id), "scope", scope)
            if pull is not None:
                pipe.hset(keys.build(build_id), "pull_request", pull.to_json())
            return True

        return guarded(self.r, [keys.build(build_id)], body)

    def protect(self, build_id: str, branch: str) -> str:
        """A build of a commit that protected `branch` reached, when its result was (or would be) made in
        another trust scope: a queued one is moved to `branch`, so it runs in the protected scope; an ended
        one is queued again as a build of `branch`. What was done: "moved", "rebuilt" or "" (nothing:
        unknown, protected already, or under way)."""

        def body(pipe: Txn) -> str:
            build = read_build(pipe, build_id)
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

    def set_progress(self, build_id: str, done: int, failing: int = 0, first_failure: str = "") -> None:
        """How many test results a running build (or leg) has so far, how many of them failed and the first
        that did (display hints, not part of its result; its commit status tells them). A first failure,
        once written, stays the attempt's: the first call that names one records it with the time and
        tells everyone who waits for it (firstfailure.py), in one transaction; the others only count. A
        matrix leg's count also makes its build's: the legs' together."""
        with self.r.pipeline() as pipe:
            pipe.hset(keys.build(build_id), "progress", str(done))
            if failing:
                pipe.hset(keys.build(build_id), "failing", str(failing))
            statuses.mark(pipe, build_id, urgent=False)
            pipe.execute()
        parent_id = keys.parent_of(build_id)
        if failing and parent_id:
            self._count_legs_failing(parent_id)
        if first_failure:
            self.note_first_failure(build_id, first_failure)

    def note_first_failure(self, build_id: str, test_id: str) -> None:
        """A running build's (or leg's) first failing test, unless one is known: recorded with the time and
        told (firstfailure.py). Alone, without the counts: what a shard of a split build says of its share
        the moment it sees one, its counts being the build's whole run's."""
        if not self.r.hget(keys.build(build_id), "first_failure"):
            self._first_failure(build_id, test_id, now_iso())

    def tests_started(self, build_id: str) -> None:
        """The moment a running build's (or leg's) tests began — its pre-pass, else its suite; for a split
        build, its first shard's: once per attempt (a new attempt starts without it, firstfailure.FIELDS)."""
        key = keys.build(build_id)
        if self.r.hget(key, "status") == Status.RUNNING.value:
            self.r.hsetnx(key, "tests_started_at", now_iso())

    def _count_legs_failing(self, build_id: str) -> None:
        """A running matrix build's failing tests so far: its current legs' together (a display hint, as
        each leg's count is)."""
        status, attempt, legs = self.r.hmget(keys.build(build_id), "status", "attempt", "legs")
        if status != Status.RUNNING.value or not (attempt or "").isdigit() or not (legs or "").isdigit():
            return
        with self.r.pipeline(transaction=False) as pipe:
            for number in range(int(legs)):
                pipe.hget(keys.build(keys.leg_id(build_id, int(attempt), number)), "failing")
            counts = pipe.execute()
        self.r.hset(keys.build(build_id), "failing", str(sum(int(c) for c in counts if (c or "").isdigit())))

    def _first_failure(self, unit_id: str, test_id: str, at: str) -> None:
        parent_id = keys.parent_of(unit_id)

        def body(pipe: Txn) -> None:
            unit = read_build(pipe, unit_id)
            parent = read_build(pipe, parent_id) if parent_id else None
            if unit is None or unit.status is not Status.RUNNING:
                return  # ended, or queued again: a late word from an attempt that no longer owns it
            pipe.multi()
            firstfailure.note(pipe, unit, parent if parent is not None and parent.status is Status.RUNNING else None,
                              test_id, at)

        guarded(self.r, [keys.build(unit_id), *([keys.build(parent_id)] if parent_id else [])], body)

    def finish(self, build_id: str, attempt: int, runner_id: str, outcome: RunOutcome) -> bool:
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
                return self.legs.end(pipe, build, runner_id, encoded, finished, output)
            pipe.multi()
            write_result(pipe, build, attempt, runner_id, encoded, finished, output, self.settings.fair_window)
            return build_id

        ended = guarded(self.r, watched(build_id, keys.build_log(build_id)), body)
        if ended:
            self.trail.record_quietly(ended, encoded.outcome.tests if ended == build_id else None)
            self.queue.ended(ended)
        return ended is not None

    # ------------------------------------------------------------ an end decided inside a transaction

    def give_up(self, pipe: Txn, build: Build, why: str, runner_id: str, lost: Attempt,
                attempt_record: Attempt | None) -> str:
        """End a build (or a matrix leg) `error` after its runners (or a shard's) were lost `max_attempts`
        times, in the caller's guarded transaction (reads, then pipe.multi() and the writes); the id of
        the build that ended with it."""
        output = raw(pipe, "GET", keys.build_log(build.id))
        if build.is_leg:
            error = Encoded(RunOutcome(Status.ERROR, [], Counts(), why))
            ended = self.legs.end(pipe, build, runner_id, error, now_iso(), output, attempt_record)
        else:
            pipe.multi()
            end_without_result(pipe, build, Status.ERROR, why, attempt_record, output, self.settings.fair_window)
            ended = build.id
        record_lost(pipe, build, lost, "gave up")
        return ended

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
            prior = read_attempt(pipe, build)
            lost = replace(prior, state=AttemptState.LOST, runner=prior.runner or runner, ended_at=now_iso(),
                           reason=reason)
            if attempt >= self.settings.max_attempts:
                ended = self.give_up(pipe, build, f"gave up after {attempt} attempt(s): each one's runner was "
                                     f"lost (last: {reason})", lost.runner, lost, lost)
                return "gave up"
            pipe.multi()
            pipe.hset(keys.build_attempts(build.id), str(lost.number), lost.to_json())
            firstfailure.forget(pipe, build.id)
            statuses.mark(pipe, build.id)
            pipe.hset(keys.build(build.id), mapping={"status": Status.QUEUED.value, "attempt": str(attempt + 1),
                                                     "runner": "", "started_at": "", "waiting_since": now_iso(),
                                                     "queued_for": QueuedFor.LOST.value})
            add_jobs(pipe, build, keys.job_id(build_id, attempt + 1))
            if build.is_leg:
                jobqueue.enqueue_leg(self.r, build, attempt + 1, self.settings, pipe)
            else:
                pipe.srem(keys.running(), build.id)
                pipe.sadd(keys.queued(), build.id)
                jobqueue.enqueue_attempt(self.r, build, attempt + 1, self.settings, pipe)
            record_lost(pipe, build, lost, f"attempt {attempt + 1} queued")
            return "requeued"

        done = guarded(self.r, watched(build_id, keys.build_log(build_id)), body)
        if done:
            jobqueue.retire_job(self.r, keys.job_id(build_id, attempt), f"Volt: attempt lost ({reason})", self.settings)
        if ended:
            self.queue.ended(ended)
        return done

    def cancel(self, build_id: str, why: str = "cancelled on request") -> Build | None:
        """End a queued or running build `cancelled`. Its runner sees that within a second and kills
        the tests' process group. Returns the build as it was before, or None if it had already ended."""

        waiting_legs: list[Build] = []

        def body(pipe: Txn) -> Build | None:
            build = read_build(pipe, build_id)
            if build is None or build.status.is_final or build.is_leg:
                return None
            record = None
            if build.status is Status.RUNNING:
                record = replace(read_attempt(pipe, build), state=AttemptState.FINISHED, ended_at=now_iso(),
                                 status=Status.CANCELLED.value)
            output = raw(pipe, "GET", keys.build_log(build_id))
            legs = [leg for leg in read_legs(pipe, build) if not leg.status.is_final]
            pipe.multi()
            end_without_result(pipe, build, Status.CANCELLED, why, record, output, self.settings.fair_window)
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
            self.queue.ended(build_id)
        return before

    def supersede(self, newest: Build) -> list[Build]:
        """Mark `skipped` every other build of `newest`'s repository and branch still waiting in the queue
        (the observer calls this with the newest commit it enqueued): a busy pool then builds what
        matters. Running builds are left to finish."""
        older = [b for b in self.records.queued_builds() if b.repo == newest.repo and b.branch == newest.branch
                 and b.id != newest.id]
        skipped = []
        for build in older:
            def body(pipe: Txn, build_id: str = build.id) -> bool:
                current = read_build(pipe, build_id)
                if current is None or current.status is not Status.QUEUED:
                    return False
                pipe.multi()
                end_without_result(pipe, current, Status.SKIPPED, f"superseded by {newest.short}", None, None,
                                   self.settings.fair_window)
                return True

            if guarded(self.r, [keys.build(build.id)], body):
                jobqueue.retire_job(self.r, keys.job_id(build.id, build.attempt),
                                    f"Volt: superseded by {newest.short}", self.settings)
                skipped.append(build)
        if skipped:
            self.queue.ended(*(b.id for b in skipped))
        return skipped

    def interrupt(self, newest: Build) -> list[Build]:
        """Cancel the running builds of `newest`'s branch that were queued before it (GitLab's
        `interruptible`; the observer's `--interrupt`), each with the reason. A build someone asked to be
        built again (Rebuild) is left to finish. Their runners stop their tests within a second."""
        older = [b for b in self.records.running_builds() if b.repo == newest.repo and b.branch == newest.branch
                 and b.id != newest.id and b.queued_for != QueuedFor.REBUILD.value
                 and (b.queued_at or "") <= (newest.queued_at or "~")]
        return [b for b in older if self.cancel(b.id, f"interrupted: superseded by {newest.short}, a newer commit "
                                                      f"of {newest.branch} (--interrupt)") is not None]

    def rebuild(self, build_id: str) -> Build | None:
        """Queue an ended build again, as its next attempt (the earlier ones stay in its history).
        Returns the build as it was, or None when it has not ended (it is queued or running)."""

        def body(pipe: Txn) -> Build | None:
            build = read_build(pipe, build_id)
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
            firstfailure.forget(pipe, build.id)
            statuses.mark(pipe, build.id)
            add_jobs(pipe, build, keys.job_id(build_id, build.attempt + 1))
            pipe.sadd(keys.queued(), build.id)
            jobqueue.enqueue_attempt(self.r, build, build.attempt + 1, self.settings, pipe)
            return build

        before = guarded(self.r, [keys.build(build_id)], body)
        if before is not None:
            self.queue.enqueued()
        return before
