"""One attempt of a build, or of one shard of it, on this runner: from claiming it in the store to
storing its outcome, once.

Lifecycle (BuildRun.run), each phase a method:

    claim      take the attempt (or the shard's) in the store; one that is no longer ours (finished,
               cancelled, re-dispatched) ends here, and nothing is stored
    checkout   the commit into a worktree of this host's pool (workspace.py)
    prepare    .volt.toml, and detection of what it leaves out (steps.BuildSteps.prepare)
    legs       a build whose .volt.toml has a [matrix] is split into its legs here: they are recorded
               and queued, each on its interpreter's queue (a store transaction), and this run ends;
               each leg runs every other phase as a job of its own, and the last to end stores the
               build's result
    split      with the repository's recorded timings, a large suite is split across the live
               runners at once: the plan is written and the other shards are queued (a store
               transaction), and this run keeps shard 0 — every test the others do not run
    set up     the environment, the sandbox and the setup steps
    split      without timings, once the tests can be listed
    test       the suite, or this run's share of it; failed tests again
    store      the outcome, by the attempt that still owns the build (or its shard)

While the steps run, a Watch is asked once a second whether to stop, and does the duties that go
with that second: it asks the store whether the run still owns its work (cancelled or superseded:
stop), copies new output to Redis (LogPump), records how many test results there are (Progress) and
counts a slice of what the build holds on disk (disk.DiskWatch: past its limit, stop). A build that went
past its disk limit, while it ran or as its steps ended, ends `error` with that reason, whatever its
steps said, and what it wrote is removed: its worktree (made again by the next build), its scratch
directory, and its environment if it made or changed it (a branch's own layer, never the protected
environment below it).
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import redis

from voltci import jobqueue, keys
from voltci.errors import VoltError
from voltci.logstream import LogPump
from voltci.models import Build, Counts, Leg, RunOutcome, Share, Status, Work
from voltci.outage import Outage, is_full
from voltci.runner import environments, prepass, untrusted
from voltci.runner.disk import DiskWatch
from voltci.runner.merge import MergeConflict
from voltci.runner.project import FILE_NAME
from voltci.runner.sandbox import out_dir
from voltci.runner.sharding import partition
from voltci.runner.steps import BuildSteps
from voltci.runner.testrun import OUTPUT_FILE, PREPASS_FILE, RESULTS_FILE, LineCounter
from voltci.runner.workspace import Workspace, checkout
from voltci.sizes import human_size, parse_disk
from voltci.store import Contended, Store

T = TypeVar("T")

log = logging.getLogger(__name__)
WATCH_EVERY_S = 1.0
FIRST_FAILURE_EVERY_S = 0.1  # how often the results files are read for a first failing test
STORE_RETRY_S = 120.0
REPLICATION_WAIT_S = 1.0
STALE_MARGIN_S = 600.0


class Ownership:
    """Whether this run still owns what it works on: the build's attempt, or its shard's."""

    def __init__(self, store: Store, work: Work):
        self.store, self.work = store, work

    def owns(self) -> bool:
        work = self.work
        if work.shard is None:
            return self.store.records.is_current(work.build, work.attempt)
        return self.store.shards.owns(work.build, work.attempt, work.shard, work.shard_attempt)

    def why_not(self) -> str:
        """Why the run no longer owns its work (after owns() said it does not)."""
        build = self.store.records.get_build(self.work.build)
        if build and build.status is Status.CANCELLED:
            return "cancelled"
        return f"attempt {self.work.attempt} was superseded"


class Progress:
    """How many test results the run has written, and the failing ones among them, recorded in the build
    when they change; the first failure is recorded once, the moment it is seen — in the pre-pass (whose
    tests run again in the suite, so they are not counted as done) or in the suite. A shard's run
    (`counting` false) records only a first failure: the build's counts are its whole run's."""

    def __init__(self, store: Store, build_id: str, results: Path, early: Path | None = None, counting: bool = True):
        self.store, self.build_id, self.counting = store, build_id, counting
        self.counter = LineCounter(results)
        self.early = LineCounter(early) if early is not None else None
        self.reported: tuple[int, int] = (-1, 0)
        self.named = False

    def record(self) -> None:
        if not self.counting:  # a shard's run: its first failure only (its counts are the build's)
            if self.failure_unrecorded():
                self.store.builds.note_first_failure(self.build_id, self._first())
                self.named = True
            return
        done = self.counter.count()
        failing = self.counter.failures.failing
        if self.early is not None:
            self.early.count()
            failing = max(failing, self.early.failures.failing)
        first = self._first()
        if (done, failing) != self.reported or (first and not self.named):
            named = first if first and not self.named else ""
            self.store.builds.set_progress(self.build_id, done, failing, named)
            self.reported = (done, failing)
            self.named = self.named or bool(named)

    def _first(self) -> str:
        """The first failing test read so far: the pre-pass's, which ran first, else the suite's."""
        before = self.early.failures.first if self.early is not None else ""
        return before or self.counter.failures.first

    def failure_unrecorded(self) -> bool:
        """Whether a failing test was written that the build does not name yet — read from the results
        files alone, so that it can be asked every few tenths of a second without a word to Redis."""
        if self.named:
            return False
        self.counter.count()
        if self.early is not None:
            self.early.count()
        return bool(self._first())


class Watch:
    """The run's once-a-second duties, asked through `__call__` whether the steps should stop; and,
    between them, whether the first failing test was just written, to record it without waiting out
    the second (what a developer who pushed waits for)."""

    def __init__(self, ownership: Ownership, pump: LogPump | None, progress: Progress | None):
        self.ownership, self.pump, self.progress = ownership, pump, progress
        self.disk: DiskWatch | None = None  # once the build's .volt.toml is read
        self._last = self._looked = 0.0

    def __call__(self) -> str | None:
        if self.disk is not None and self.disk.exceeded:
            return self.disk.exceeded  # every step from then on is stopped at once
        now = time.monotonic()
        if now - self._last < WATCH_EVERY_S:
            self._first_failure(now)
            return None
        self._last = self._looked = now
        try:
            if not self.ownership.owns():
                return self.ownership.why_not()
            if self.pump is not None:
                self.pump.pump()
            if self.progress is not None:
                self.progress.record()
        except redis.RedisError:
            pass  # a Redis outage is not a reason to stop the tests
        return self.disk.tick() if self.disk is not None else None

    def _first_failure(self, now: float) -> None:
        if self.progress is None or now - self._looked < FIRST_FAILURE_EVERY_S:
            return
        self._looked = now
        try:
            if self.progress.failure_unrecorded():
                self.progress.record()
        except redis.RedisError:
            pass  # recorded at the next second's duties


class BuildRun:
    """One attempt of a build (or of one of its shards) on this runner; see the module's docstring."""

    def __init__(self, store: Store, work: Work, runner: str):
        self.store, self.work, self.runner = store, work, runner
        self.settings = store.settings
        self.ownership = Ownership(store, work)
        self.run_id = keys.job_id(work.build, work.attempt) if work.shard is None else \
            keys.shard_job_id(work.build, work.attempt, work.shard, work.shard_attempt)

    def run(self) -> dict[str, Any]:
        build = self.claim()
        if build is None:
            log.info("%s is not ours to run (finished, cancelled or superseded)", self._what())
            return {"build": self.work.build, "attempt": self.work.attempt, "shard": self.work.shard,
                    "stored": False}
        outcome = self.build(build)
        if outcome is None:
            return {"build": build.id, "attempt": self.work.attempt, "shard": None, "stored": False, "legs": build.legs}
        done = self.store_outcome(outcome)
        if done is None:
            log.warning("%s no longer owns the build (cancelled or re-dispatched); its result was dropped",
                        self._what())
        return {"build": build.id, "attempt": self.work.attempt, "shard": self.work.shard,
                "stored": done is not None, "merged": done == "merged", "status": outcome.status.value,
                "counts": outcome.counts.to_dict()}

    def claim(self) -> Build | None:
        work, bound, shard = self.work, self.settings.redis_outage_limit, self.work.shard
        if shard is None:
            return retrying(f"start {work.build}", bound,
                            lambda: self.store.builds.start_attempt(work.build, work.attempt, self.runner))
        return retrying(f"start shard {shard} of {work.build}", bound, lambda: self.store.shards.claim(
            work.build, work.attempt, shard, work.shard_attempt, self.runner))

    def build(self, build: Build) -> RunOutcome | None:
        """Check the commit out and run its steps; every failure of ours becomes an `error` outcome. None:
        the build was split into matrix legs, which store its result."""
        settings = self.settings
        try:
            with checkout(settings.workspace_dir, build.repo, build.url, build.commit,
                          stale_after_s=2 * settings.build_timeout + STALE_MARGIN_S, branch=build.branch,
                          protected=settings.protected_branches, pull=build.pull_request) as workspace:
                return self.steps(build, workspace)
        except MergeConflict as exc:
            return RunOutcome(Status.ERROR, [], Counts(), reason=str(exc))
        except VoltError as exc:
            return RunOutcome(Status.ERROR, [], Counts(), reason=f"checkout failed: {exc}")
        except Exception as exc:  # a bug of ours must still end the build, not leave it running
            log.error("build %s failed inside the runner:\n%s", build.id, traceback.format_exc())
            return RunOutcome(Status.ERROR, [], Counts(), reason=f"runner error: {type(exc).__name__}: {exc}")

    def steps(self, build: Build, workspace: Workspace) -> RunOutcome | None:
        """prepare → legs → split (from history) → set up → split (listing the tests) → test; and, for a
        build past its disk limit, `error` and what it wrote removed."""
        pull = build.pull_request
        if pull is not None and workspace.base and not pull.base:
            pull = replace(pull, base=workspace.base)  # what it merged into: its shards and legs take the same
            build.pull_request = pull
        try:  # which scope made this result: the observer builds a protected branch's commits in theirs
            self.store.builds.set_scope(self.work.build, self.work.attempt, workspace.scope.name,
                                        pull if self.work.shard is None else None)
        except redis.RedisError as exc:
            log.warning("build %s: could not record its trust scope (%s)", build.id, exc)
        whole = self.work.shard is None
        started = time.time()
        pump = LogPump(self.store, build.id, build.attempt, workspace.scratch / OUTPUT_FILE,
                       self.settings.log_max_bytes, tree=workspace.tree) if whole else None
        out = out_dir(workspace.scratch)
        progress = Progress(self.store, build.id, out / RESULTS_FILE, out / PREPASS_FILE, counting=whole)
        watch = Watch(self.ownership, pump, progress)
        leg = Leg(build.leg, build.python, build.env) if build.is_leg else None
        outcome: RunOutcome | None
        with BuildSteps(workspace.tree, workspace.scratch, build.repo, self.settings, watch, self.run_id,
                        leg, workspace.scope) as steps:
            share = None if whole else self.share()
            if pull is not None:
                steps.say(f"[volt: pull request #{pull.number}: its head {pull.head[:10]} merged into "
                          f"{pull.base_branch or build.branch} at {pull.base[:10]}, as it would merge]")
            ended = steps.prepare()
            if ended is None:
                watch.disk = self.disk_watch(steps, workspace)
            if ended is None and whole and not (leg is None and steps.config.matrix):
                steps.prepass = self.likely_failures(build, steps, workspace)
            if ended is None and whole and leg is None and steps.config.matrix:
                self.split_legs(build, steps)
                outcome = None  # its legs store the result
            else:
                if ended is None and whole and steps.splittable:
                    share = self.split(build, steps, listing=None)
                ended = ended or steps.set_up()
                if ended is None and whole and share is None and steps.splittable:
                    share = self.split(build, steps, listing=steps.list_tests)
                if ended is None and whole:
                    self.tests_started(build.id)
                outcome = self.within_disk(ended or steps.test(share), watch.disk, steps, started)
        if pump is not None:
            self._finish_log(pump)
        if watch.disk is not None and watch.disk.exceeded:
            remove_written(workspace)
        return outcome

    def tests_started(self, build_id: str) -> None:
        """Record when the build's tests begin, after its checkout and setup: how soon its first failure
        came is then told apart from how long the setup before any test took (a hint: Redis may be away)."""
        try:
            self.store.builds.tests_started(build_id)
        except redis.RedisError as exc:
            log.warning("build %s: could not record the start of its tests (%s)", build_id, exc)

    def likely_failures(self, build: Build, steps: BuildSteps, workspace: Workspace) -> prepass.Choice | None:
        """The tests to run first (prepass.py), chosen before any process of the build has run; None when
        the pre-pass is off or cannot be had. Nothing here may affect the build itself."""
        if not prepass.enabled(self.settings, steps.config.prepass):
            steps.say("[volt: no pre-pass: turned off" + (f" by {FILE_NAME}]" if steps.config.prepass is False
                                                          else " on this runner (prepass = false)]"))
            return None
        plan = steps.plan
        suite = plan.suite if not plan.runs else next((run.suite for run in plan.runs if run.suite), None)
        if suite is None:
            steps.say("[volt: no pre-pass: the tests run by the project's own command, which cannot choose them]")
            return None
        try:
            return prepass.choose(self.store, build, workspace.git_dir, workspace.commit or build.commit,
                                  workspace.base, suite)
        except Exception as exc:  # an early look only: whatever goes wrong, the build runs as without it
            log.warning("build %s: no pre-pass (%s: %s)", build.id, type(exc).__name__, exc)
            steps.say(f"[volt: no pre-pass: {type(exc).__name__}: {exc}]")
            return None

    def disk_watch(self, steps: BuildSteps, workspace: Workspace) -> DiskWatch:
        """The build's disk limit over its tree, its scratch directory and (once taken) what its scope owns
        of its environment (a branch's layer over the protected one, not that one): the repository's own
        limit where it sets one, never above the runner's."""
        runner = parse_disk(self.settings.build_disk)
        asked = steps.config.disk_bytes
        if asked is not None and asked > runner:
            steps.say(f"[volt: {FILE_NAME} asks for a disk limit of {human_size(asked)}, more than this runner "
                      f"allows; the build gets {human_size(runner)}]")
        return DiskWatch(min(asked or runner, runner), lambda: [
            workspace.tree, workspace.scratch, *([steps.env.home] if steps.env is not None else [])])

    def within_disk(self, outcome: RunOutcome, disk: DiskWatch | None, steps: BuildSteps,
                    started: float) -> RunOutcome:
        """`outcome`, unless the build went past its disk limit while it ran or as its steps ended: then
        `error` with that reason, and its environment discarded (here, while the build still holds it)
        if the build made or changed it."""
        env = steps.env
        if disk is None or env is None:
            return outcome  # no step of the build ran
        reason = disk.final(since=started)
        if reason is None:
            return outcome
        outcome.status, outcome.reason = Status.ERROR, reason
        discard = not env.reused or disk.changed(env.home)
        if discard:  # what its scope owns: the environment, or the branch's layer over the protected one
            environments.discard(env.home)
        removed = "tree, temporary files and the environment it made or changed" if discard else \
            "tree and temporary files"
        steps.say(f"[volt: {reason}; its {removed} are removed]")
        log.warning("build %s: %s", self.work.build, reason)
        return outcome

    def split_legs(self, build: Build, steps: BuildSteps) -> None:
        """Split a build into the legs of its [matrix]: recorded and queued in one store transaction, each
        on the queue of its interpreter, where only runners that have it listen. This run ends here."""
        legs = list(steps.config.matrix)
        recorded = retrying(f"split {build.id} into its matrix legs", self.settings.redis_outage_limit,
                            lambda: self.store.legs.start(build.id, self.work.attempt, legs, self.runner))
        if recorded is None:
            return  # no longer ours: nothing to store
        build.legs = len(recorded)
        steps.say(f"[volt: a matrix of {len(legs)} legs: {', '.join(leg.name for leg in legs)}; each runs as a job "
                  f"of its own on a runner that has its Python, with its own log (volt log COMMIT --leg NAME)]")
        try:
            have = {python for beat in self.store.runners.live().values() for python in beat.pythons}
        except redis.RedisError:
            return
        for python in sorted({leg.python for leg in legs} - have):
            steps.say(f"[volt: no live runner has python {python} yet: its legs wait for one, and end `error` if "
                      f"none comes]")
        log.info("build %s split into %d matrix legs", build.id, len(legs))

    def share(self) -> Share:
        """A shard's share of the tests, as the run that split the build planned it."""
        work, shard = self.work, self.work.shard
        if shard is None:
            raise ValueError("a build that is not split has no shares")
        return retrying(f"read shard {shard} of {work.build}", self.settings.redis_outage_limit,
                        lambda: self.store.shards.share(work.build, shard))

    def split(self, build: Build, steps: BuildSteps, listing: Callable[[], list[str]] | None) -> Share | None:
        """Split a large suite across the live runners: the plan is written and shards 1… are queued in
        one store transaction, and this run becomes shard 0. With the repository's recorded timings
        the plan is made from them at once (`listing` None), and shard 0 runs every test the others do
        not, new ones included; without them, from the ids `listing` gives. None: the build runs whole."""
        settings = self.settings
        if settings.shard_threshold <= 0:
            return None
        try:
            on = jobqueue.unit_queue(settings, build)  # a matrix leg's shards go to runners that have its Python
            wanted = settings.shards or sum(1 for beat in self.store.runners.live().values() if on in beat.queues)
            if wanted < 2:
                return None
            history = self.store.history.timings(build.repo, build.leg)
            from_history = len(history.tests) >= settings.shard_threshold
            if not from_history and listing is None:
                return None  # asked again once the tests can be listed
            ids = sorted(history.tests) if from_history else listing() if listing is not None else []
            if len(ids) < settings.shard_threshold:
                return None
            plans = partition(ids, wanted, history)
            if len(plans) < 2 or not self.store.shards.start(build.id, self.work.attempt,
                                                             [plan.entries for plan in plans], self.runner,
                                                             from_history):
                return None
        except redis.RedisError as exc:
            log.warning("build %s runs whole: Redis was away when it could have been split (%s)", build.id, exc)
            return None
        self.work = Work(self.work.build, self.work.attempt, 0, 1)
        self.ownership.work = self.work
        sizes = "/".join(str(plan.tests) for plan in plans)
        steps.say(f"[volt: split into {len(plans)} shards of {sizes} tests"
                  f" ({'from the recorded timings' if from_history else 'by module'})]")
        log.info("build %s split into %d shards of %s tests", build.id, len(plans), sizes)
        if from_history:
            return Share([entry for plan in plans[1:] for entry in plan.entries], exclude=True)
        return Share(plans[0].entries)

    def store_outcome(self, outcome: RunOutcome) -> str | None:
        """Store the outcome once, if this run still owns its work: "stored", "merged" (the last shard),
        or None (dropped). Then make sure it outlives a failover (durable)."""
        work, shard = self.work, self.work.shard
        if shard is None:
            def store() -> str | None:
                return "stored" if self.store.builds.finish(work.build, work.attempt, self.runner, outcome) else None
        else:
            def store() -> str | None:
                return self.store.shards.finish(work.build, work.attempt, shard, work.shard_attempt, self.runner,
                                               outcome)
        done = retrying(f"store the result of {self._what()}", STORE_RETRY_S, store)
        if done is not None:
            self.durable(store)
        return done

    def durable(self, store: Callable[[], str | None]) -> None:
        """A result is worth a round trip: wait until a replica holds it. When none does in time, the
        primary may fail before it replicates (Redis replicates asynchronously), so watch: should a
        failover take the result away while this attempt still owns its work, store it again under the
        same fence (the ownership check in its transaction). Bounded by STORE_RETRY_S; a single Redis has no
        replica and waits for nothing, nor does one that refuses INFO (an ACL, a renamed command): what it
        replicates cannot be known, and waiting would cost every build the whole bound."""
        try:
            replicated = self.store.runners.await_replicas(REPLICATION_WAIT_S)
        except redis.ResponseError as exc:
            log.debug("%s: replication not known (%s)", self._what(), exc)
            return
        except redis.RedisError:
            replicated = False
        if replicated is not False:
            return
        deadline = time.monotonic() + STORE_RETRY_S
        while time.monotonic() < deadline:
            time.sleep(REPLICATION_WAIT_S)
            try:
                if self.store.runners.await_replicas(REPLICATION_WAIT_S) is not False:
                    return  # replicated at last, or no replica left to lose it to
                if self.ownership.owns():  # the result is gone: this attempt runs again, as far as Redis knows
                    if store() is not None:
                        self.store.metrics.count_event("writes_retried", "runner")
                        log.warning("%s: its result was lost with the Redis primary; stored again", self._what())
                    continue
                return  # ended (its result is there) or no longer ours
            except redis.ResponseError:
                return  # INFO refused: replication cannot be known
            except redis.RedisError:
                continue  # the failover itself: asked again

    def _finish_log(self, pump: LogPump) -> None:
        try:
            if self.ownership.owns():
                pump.finish()
                retrying(f"store the end of the output of {self.work.build}", STORE_RETRY_S,
                         lambda: pump.flush(raise_errors=True))
        except redis.RedisError as exc:
            log.warning("build %s: could not store the end of its output (%s)", self.work.build, exc)

    def _what(self) -> str:
        work = self.work
        if work.shard is None:
            return f"build {work.build} attempt {work.attempt}"
        return f"shard {work.shard} of build {work.build}"


def remove_written(workspace: Workspace) -> None:
    """Remove what a build past its disk limit wrote: its worktree (the next build makes it again) and its
    scratch directory, through the gate, whatever depth and modes the build left."""
    for path in (workspace.tree, workspace.scratch):
        untrusted.remove_tree(path)


_full = Outage(log)


def retrying(what: str, bound_s: float, call: Callable[[], T]) -> T:
    """`call()`, riding out for up to `bound_s` seconds, with backoff, a Redis that is away or full (said
    once until it has room again), or a record others kept changing."""
    delay = 0.5
    deadline = time.monotonic() + bound_s
    while True:
        try:
            result = call()
            _full.ok()
            return result
        except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.OutOfMemoryError, Contended) as exc:
            if time.monotonic() + delay > deadline:
                raise
            if is_full(exc):
                _full.failed(exc)
            else:
                log.warning("cannot %s yet (%s); retrying in %.1f s", what, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
