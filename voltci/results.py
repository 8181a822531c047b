"""The results store: build records, attempts and per-test results in Redis hashes.

Written by the observer (a new build, queued) and by runners (an attempt starts, a build ends);
read by the reporter, the CLI and the web page. A build's final result is written once, by the
attempt that holds the build's current attempt number: a runner whose attempt was superseded is
fenced off and its late result is dropped.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

import redis

from voltci import keys
from voltci.errors import BadInput
from voltci.models import (Attempt, AttemptState, Build, Counts, Outcome, RunOutcome, Shard, Share, Status,
                           TestResult)
from voltci.testrun import count

SHA_PREFIX = re.compile(r"[0-9a-f]{4,40}")
TESTS_PER_WRITE = 1000


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def seconds_between(start_iso: str, end_iso: str) -> float:
    try:
        return round((datetime.fromisoformat(end_iso) - datetime.fromisoformat(start_iso)).total_seconds(), 3)
    except ValueError:
        return 0.0


def add_build(build: Build, pipeline: redis.client.Pipeline, score: float) -> None:
    """Record a new queued build (inside the caller's transaction, which also enqueues it)."""
    pipeline.hset(keys.build(build.id), mapping=build.to_hash())
    pipeline.sadd(keys.queued(), build.id)
    pipeline.zadd(keys.repo_history(build.repo), {build.id: score})
    pipeline.zadd(keys.commits(), {keys.commit_member(build.commit, build.repo): 0})


def get_build(conn: redis.Redis, build_id: str) -> Build | None:
    data = conn.hgetall(keys.build(build_id))
    return Build.from_hash(data) if data else None


def get_tests(conn: redis.Redis, build_id: str) -> list[TestResult]:
    raw = conn.hgetall(keys.build_tests(build_id))
    tests = [TestResult.from_json(test_id, text) for test_id, text in raw.items()]
    tests.sort(key=lambda t: t.order)
    return tests


def get_attempts(conn: redis.Redis, build_id: str) -> list[Attempt]:
    raw = conn.hgetall(keys.build_attempts(build_id))
    return [Attempt.from_json(raw[n]) for n in sorted(raw, key=int)]


OWNER_WRITE_TRIES = 5


def _write_if_owner(conn: redis.Redis, build_id: str, attempt: int,
                    write: Callable[[redis.client.Pipeline, Build], None]) -> Build | None:
    """Run `write(pipe, build)` in one transaction if `attempt` is the build's current attempt and the
    build has not ended; the build as read, or None when the attempt does not own it."""
    key = keys.build(build_id)
    with conn.pipeline() as pipe:
        for _ in range(OWNER_WRITE_TRIES):
            try:
                pipe.watch(key)
                data = pipe.hgetall(key)
                if not data:
                    return None
                build = Build.from_hash(data)
                if build.attempt != attempt or build.status.is_final:
                    return None
                pipe.multi()
                write(pipe, build)
                pipe.execute()
                return build
            except redis.WatchError:
                continue  # the record changed under us: read it again and decide again
    return None


def start_attempt(conn: redis.Redis, build_id: str, attempt: int, runner_id: str) -> Build | None:
    """Mark the build running under `attempt`; None when that attempt is no longer the build's to run
    (already finished, cancelled, or superseded by a newer attempt)."""
    started = now_iso()

    def write(pipe: redis.client.Pipeline, build: Build) -> None:
        pipe.hset(keys.build(build_id), mapping={"status": Status.RUNNING.value, "runner": runner_id,
                                                 "started_at": started, "progress": "0"})
        pipe.hset(keys.build_attempts(build_id), str(attempt),
                  Attempt(attempt, AttemptState.RUNNING, runner_id, started).to_json())
        pipe.delete(keys.build_log(build_id))  # an attempt's output starts afresh
        pipe.srem(keys.queued(), build_id)
        pipe.sadd(keys.running(), build_id)

    build = _write_if_owner(conn, build_id, attempt, write)
    if build is not None:
        build.status, build.runner, build.started_at = Status.RUNNING, runner_id, started
    return build


def set_progress(conn: redis.Redis, build_id: str, done: int) -> None:
    """How many test results a running build has so far (a display hint, not part of its result)."""
    conn.hset(keys.build(build_id), "progress", str(done))


def is_current(conn: redis.Redis, build_id: str, attempt: int) -> bool:
    """Whether `attempt` still owns the build (it has not been superseded, finished or cancelled)."""
    status, current = conn.hmget(keys.build(build_id), "status", "attempt")
    return status == Status.RUNNING.value and current == str(attempt)


def finish_build(conn: redis.Redis, build_id: str, attempt: int, runner_id: str, outcome: RunOutcome) -> bool:
    """Store a build's result, once, if `attempt` still owns the build. Returns whether it was stored."""
    finished = now_iso()

    def write(pipe: redis.client.Pipeline, build: Build) -> None:
        _write_result(pipe, build, attempt, runner_id, outcome, finished)

    return _write_if_owner(conn, build_id, attempt, write) is not None


def _write_result(pipe: redis.client.Pipeline, build: Build, attempt: int, runner_id: str, outcome: RunOutcome,
                  finished: str) -> None:
    """The writes of a build's final result (inside the caller's transaction)."""
    build_id = build.id
    pipe.delete(keys.build_tests(build_id))
    if outcome.tests:
        pipe.delete(keys.repo_durations(build.repo))  # the latest suite's tests only: removed tests leave it
    for chunk in _chunks(outcome.tests, TESTS_PER_WRITE):
        pipe.hset(keys.build_tests(build_id), mapping={t.id: t.to_json() for t in chunk})
        durations = {t.id: t.duration_s for t in chunk if not t.subtest_of and t.outcome is not Outcome.SKIPPED}
        if durations:
            pipe.hset(keys.repo_durations(build.repo), mapping=durations)
    pipe.hset(keys.build(build_id), mapping={
        "status": outcome.status.value,
        "finished_at": finished,
        "runner": runner_id,
        "duration_s": str(seconds_between(build.started_at or finished, finished)),
        "counts": json.dumps(outcome.counts.to_dict()),
        "reason": outcome.reason,
        "log_tail": outcome.log_tail,
    })
    pipe.hset(keys.build_attempts(build_id), str(attempt),
              Attempt(attempt, AttemptState.FINISHED, runner_id, build.started_at, finished,
                      status=outcome.status.value).to_json())
    for test in outcome.tests:
        if test.outcome is Outcome.FLAKY and not test.subtest_of:
            pipe.zincrby(keys.repo_flaky(build.repo), 1, test.id)
            pipe.hset(keys.repo_flaky_last(build.repo), test.id, build_id)
    _ended(pipe, build_id, outcome.status)


# ---------------------------------------------------------------- shards

def get_shards(conn: redis.Redis, build_id: str) -> list[Shard]:
    raw = conn.hgetall(keys.build_shards(build_id))
    return [Shard.from_json(raw[k]) for k in sorted(raw, key=int)]


def shard_plan(conn: redis.Redis, build_id: str, shard: int) -> list[str]:
    text = conn.hget(keys.build_shard_plan(build_id), str(shard)) or ""
    return [line for line in text.split("\n") if line]


def shard_share(conn: redis.Redis, build_id: str, shard: int) -> Share:
    """What shard `shard` runs: shard 0 of a split planned from history runs all but the others' tests."""
    plan = shard_plan(conn, build_id, shard)
    if shard == 0 and conn.hget(keys.build(build_id), "shard_rest") == "1":
        shards = int(conn.hget(keys.build(build_id), "shards") or 0)
        return Share([t for n in range(1, shards) for t in shard_plan(conn, build_id, n)], exclude=True)
    return Share(plan)


def durations(conn: redis.Redis, repo: str) -> dict[str, float]:
    return {test_id: float(seconds) for test_id, seconds in conn.hgetall(keys.repo_durations(repo)).items()}


def start_shards(pipe: redis.client.Pipeline, build: Build, plans: list[list[str]], runner_id: str,
                 rest: bool) -> None:
    """Record a build's split (inside the caller's transaction): shard 0 runs here, the rest wait.
    With `rest`, shard 0 runs every test the other shards do not (its plan is only an estimate)."""
    started = now_iso()
    pipe.hset(keys.build(build.id), mapping={"shards": str(len(plans)), "shard_rest": "1" if rest else "0"})
    pipe.delete(keys.build_shard_plan(build.id), keys.build_shards(build.id))
    for number, ids in enumerate(plans):
        pipe.hset(keys.build_shard_plan(build.id), str(number), "\n".join(ids))
        pipe.delete(keys.build_shard_tests(build.id, number))
        shard = Shard(number, 1, AttemptState.RUNNING, runner_id, started) if number == 0 else Shard(number)
        pipe.hset(keys.build_shards(build.id), str(number), shard.to_json())


def _shard_transaction(conn: redis.Redis, build_id: str, attempt: int, shard: int, shard_attempt: int,
                       states: tuple[Any, ...], decide: Callable[[redis.client.Pipeline, Build, dict[int, Shard]],
                                                                Callable[[], Any]]) -> Any:
    """Run `decide`'s writes atomically if the build is running under `attempt` and shard `shard` is at
    `shard_attempt` in one of `states`; None when it is not (cancelled, re-dispatched, ended)."""
    with conn.pipeline() as pipe:
        for _ in range(OWNER_WRITE_TRIES):
            try:
                pipe.watch(keys.build(build_id), keys.build_shards(build_id))
                data = pipe.hgetall(keys.build(build_id))
                if not data:
                    return None
                build = Build.from_hash(data)
                shards = {int(k): Shard.from_json(v) for k, v in pipe.hgetall(keys.build_shards(build_id)).items()}
                mine = shards.get(shard)
                if (build.status is not Status.RUNNING or build.attempt != attempt or mine is None
                        or mine.attempt != shard_attempt or mine.state not in states):
                    return None
                write = decide(pipe, build, shards)
                pipe.multi()
                done = write()
                pipe.execute()
                return done
            except redis.WatchError:
                continue
    return None


def claim_shard(conn: redis.Redis, build_id: str, attempt: int, shard: int, shard_attempt: int,
                runner_id: str) -> Build | None:
    """Mark a queued shard running on `runner_id`; the build, or None when the shard is not ours to run."""
    def decide(pipe: redis.client.Pipeline, build: Build, shards: dict[int, Shard]) -> Callable[[], Build]:
        def write() -> Build:
            record = Shard(shard, shard_attempt, AttemptState.RUNNING, runner_id, now_iso())
            pipe.hset(keys.build_shards(build_id), str(shard), record.to_json())
            return build
        return write

    return _shard_transaction(conn, build_id, attempt, shard, shard_attempt, ("queued",), decide)


def owns_shard(conn: redis.Redis, build_id: str, attempt: int, shard: int, shard_attempt: int) -> bool:
    if not is_current(conn, build_id, attempt):
        return False
    raw = conn.hget(keys.build_shards(build_id), str(shard))
    return bool(raw) and Shard.from_json(raw).attempt == shard_attempt


def finish_shard(conn: redis.Redis, build_id: str, attempt: int, shard: int, shard_attempt: int, runner_id: str,
                 outcome: RunOutcome) -> str | None:
    """Store one shard's results; the last shard to finish merges them all into the build's one result.
    Returns "stored" or "merged", or None when this shard attempt no longer owns its shard."""
    finished = now_iso()

    def decide(pipe: redis.client.Pipeline, build: Build, shards: dict[int, Shard]) -> Callable[[], str]:
        others = [s for n, s in shards.items() if n != shard]
        complete = all(s.state is AttemptState.FINISHED for s in others)
        earlier = {s.number: _shard_results(pipe, build_id, s.number) for s in others} if complete else {}

        def write() -> str:
            record = Shard(shard, shard_attempt, AttemptState.FINISHED, runner_id, shards[shard].started_at, finished,
                           outcome.status.value, outcome.reason, len(outcome.tests))
            pipe.hset(keys.build_shards(build_id), str(shard), record.to_json())
            if not complete:
                pipe.delete(keys.build_shard_tests(build_id, shard))
                for chunk in _chunks(outcome.tests, TESTS_PER_WRITE):
                    pipe.hset(keys.build_shard_tests(build_id, shard), mapping={t.id: t.to_json() for t in chunk})
                return "stored"
            records = {**{s.number: s for s in others}, shard: record}
            merged = merge(records, {**earlier, shard: outcome.tests}, outcome.log_tail)
            _write_result(pipe, build, attempt, build.runner, merged, finished)
            for number in records:
                pipe.delete(keys.build_shard_tests(build_id, number))
            return "merged"
        return write

    return _shard_transaction(conn, build_id, attempt, shard, shard_attempt, (AttemptState.RUNNING,), decide)


def _shard_results(pipe: redis.client.Pipeline, build_id: str, shard: int) -> list[TestResult]:
    raw = pipe.hgetall(keys.build_shard_tests(build_id, shard))
    tests = [TestResult.from_json(test_id, text) for test_id, text in raw.items()]
    tests.sort(key=lambda t: t.order)
    return tests


def merge(records: dict[int, Shard], tests_by_shard: dict[int, list[TestResult]], log_tail: str) -> RunOutcome:
    """The shards' results as one build's: every test once, one count, the worst status."""
    tests: list[TestResult] = []
    for number in sorted(tests_by_shard):
        for test in tests_by_shard[number]:
            test.order = len(tests)
            tests.append(test)
    counts = count(tests)
    statuses = {records[n].status for n in records}
    reasons = "; ".join(f"shard {n}: {records[n].reason}" for n in sorted(records) if records[n].reason)
    for status in (Status.TIMEOUT, Status.CANCELLED, Status.ERROR):
        if status.value in statuses:
            return RunOutcome(status, tests, counts, reasons, log_tail)
    status = Status.FAILED if counts.failed or counts.errors else Status.PASSED
    return RunOutcome(status, tests, counts, "", log_tail)


def _ended(pipe: redis.client.Pipeline, build_id: str, status: Status) -> None:
    """What every write of a final status does: leave the work sets, count the write, tell listeners.

    `results_stored` counts final writes, so that "written exactly once" can be checked, not assumed.
    """
    pipe.srem(keys.queued(), build_id)
    pipe.srem(keys.running(), build_id)
    pipe.hincrby(keys.build(build_id), "results_stored", 1)
    pipe.publish(keys.events(), json.dumps({"build": build_id, "status": status.value}))
    pipe.lpush(keys.outbox(), json.dumps({"build": build_id}))  # for the webhook (see notify.py)
    pipe.ltrim(keys.outbox(), 0, OUTBOX_KEPT - 1)


def end_without_result(pipe: redis.client.Pipeline, build: Build, status: Status, reason: str,
                       attempt_record: Attempt | None = None) -> None:
    """End `build` (read under WATCH by the caller) with `status` and no test results: cancelled, or
    given up after its runners were lost. `attempt_record` replaces its current attempt's record."""
    finished = now_iso()
    pipe.hset(keys.build(build.id), mapping={
        "status": status.value, "reason": reason, "finished_at": finished,
        "duration_s": str(seconds_between(build.started_at, finished) if build.started_at else 0.0),
    })
    if attempt_record is not None:
        pipe.hset(keys.build_attempts(build.id), str(attempt_record.number), attempt_record.to_json())
    _ended(pipe, build.id, status)


def requeue(pipe: redis.client.Pipeline, build: Build, lost: Attempt) -> None:
    """Put `build` back in the queued state for its next attempt, recording the `lost` one."""
    pipe.hset(keys.build_attempts(build.id), str(lost.number), lost.to_json())
    pipe.hset(keys.build(build.id), mapping={"status": Status.QUEUED.value, "attempt": str(lost.number + 1),
                                             "runner": "", "started_at": ""})
    pipe.srem(keys.running(), build.id)
    pipe.sadd(keys.queued(), build.id)


def reset_for_rebuild(pipe: redis.client.Pipeline, build: Build) -> None:
    """An ended build back to queued, as attempt n+1, its last result cleared (its attempts kept)."""
    pipe.delete(keys.build_tests(build.id))
    pipe.hset(keys.build(build.id), mapping={
        "status": Status.QUEUED.value, "attempt": str(build.attempt + 1), "queued_at": now_iso(),
        "runner": "", "started_at": "", "finished_at": "", "duration_s": "0.0", "reason": "", "log_tail": "",
        "counts": json.dumps(Counts().to_dict()), "results_stored": "0"})
    pipe.sadd(keys.queued(), build.id)


LOST_KEPT = 200
OUTBOX_KEPT = 10_000  # with no webhook configured, nobody empties it: keep it bounded


def record_lost(pipe: redis.client.Pipeline, build: Build, lost: Attempt, next_step: str) -> None:
    """Keep the latest lost attempts for `volt status`."""
    pipe.lpush(keys.lost(), json.dumps({"build": build.id, "repo": build.repo, "commit": build.commit,
                                        "attempt": lost.number, "runner": lost.runner,
                                        "started_at": lost.started_at, "lost_at": lost.ended_at,
                                        "reason": lost.reason, "then": next_step}))
    pipe.ltrim(keys.lost(), 0, LOST_KEPT - 1)


def flaky_tests(conn: redis.Redis, repos: list[str], limit: int) -> list[dict]:
    """The tests that were flaky most often, over the history of `repos`."""
    found = []
    for repo in repos:
        for test_id, times in conn.zrevrange(keys.repo_flaky(repo), 0, limit - 1, withscores=True):
            found.append({"repo": repo, "test": test_id, "times": int(times),
                          "last_build": conn.hget(keys.repo_flaky_last(repo), test_id) or ""})
    found.sort(key=lambda f: (-f["times"], f["repo"], f["test"]))
    return found[:limit]


def recent_lost(conn: redis.Redis, limit: int = 10) -> list[dict]:
    return [json.loads(text) for text in conn.lrange(keys.lost(), 0, limit - 1)]


def _chunks(items: list[TestResult], size: int) -> Iterable[list[TestResult]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def resolve_commit(conn: redis.Redis, commit: str, repo: str | None = None) -> str:
    """The build id for a full sha or unique prefix (at least 4 hex digits), optionally within one repo."""
    prefix = commit.strip().lower()
    if not SHA_PREFIX.fullmatch(prefix):
        raise BadInput(f"not a commit: '{commit}' (give a full sha or a prefix of at least 4 hex digits)")
    if repo is not None and not keys.is_valid_repo_name(repo):
        raise BadInput(f"not a repository name: '{repo}'")
    members = conn.zrangebylex(keys.commits(), f"[{prefix}", f"[{prefix}\xff", start=0, num=50)
    matches = sorted({keys.split_commit_member(m) for m in members})
    if repo is not None:
        matches = [(sha, r) for sha, r in matches if r == repo]
    where = f" in repository '{repo}'" if repo else ""
    if not matches:
        raise BadInput(f"unknown commit '{commit}'{where}: no build of it is recorded")
    if len(matches) > 1:
        shown = ", ".join(f"{r}@{sha[:12]}" for sha, r in matches[:5])
        hint = "" if repo or len({r for _, r in matches}) == 1 else " (or name the repository with --repo)"
        raise BadInput(f"ambiguous commit '{commit}'{where}: it matches {shown}; give more digits{hint}")
    sha, found_repo = matches[0]
    return keys.build_id(found_repo, sha)


def known_repos(conn: redis.Redis) -> dict[str, dict]:
    return {name: json.loads(text) for name, text in conn.hgetall(keys.repos()).items()}


def history(conn: redis.Redis, repo: str | None = None, limit: int = 20) -> list[Build]:
    """The latest builds, newest first, of one repository or of all of them."""
    if repo is not None:
        if not keys.is_valid_repo_name(repo):
            raise BadInput(f"not a repository name: '{repo}'")
        repos = [repo]
    else:
        repos = list(known_repos(conn))
    scored: list[tuple[float, str]] = []
    for name in repos:
        scored += [(score, bid) for bid, score in
                   conn.zrevrange(keys.repo_history(name), 0, limit - 1, withscores=True)]
    scored.sort(reverse=True)
    builds = []
    for _, build_id in scored[:limit]:
        build = get_build(conn, build_id)
        if build:
            builds.append(build)
    return builds


def history_page(conn: redis.Redis, repo: str, page: int, per_page: int) -> tuple[list[Build], int]:
    """One page (from 1) of a repository's builds, newest first, and how many builds it has."""
    start = (page - 1) * per_page
    build_ids = conn.zrevrange(keys.repo_history(repo), start, start + per_page - 1)
    return _builds(conn, list(build_ids)), conn.zcard(keys.repo_history(repo))


def latest_build(conn: redis.Redis, repo: str, branch: str | None = None, scan: int = 500) -> Build | None:
    """The newest build of `repo` (of `branch`, looking at most `scan` builds back)."""
    for build_id in conn.zrevrange(keys.repo_history(repo), 0, (0 if branch is None else scan - 1)):
        build = get_build(conn, build_id)
        if build is not None and (branch is None or build.branch == branch):
            return build
    return None


def running_builds(conn: redis.Redis) -> list[Build]:
    return _builds(conn, sorted(conn.smembers(keys.running())))


def queued_builds(conn: redis.Redis) -> list[Build]:
    return _builds(conn, sorted(conn.smembers(keys.queued())))


def _builds(conn: redis.Redis, build_ids: list[str]) -> list[Build]:
    with conn.pipeline(transaction=False) as pipe:
        for build_id in build_ids:
            pipe.hgetall(keys.build(build_id))
        found = pipe.execute()
    return [Build.from_hash(data) for data in found if data]
