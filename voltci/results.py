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
from typing import Callable, Iterable

import redis

from voltci import keys
from voltci.errors import BadInput
from voltci.models import Attempt, AttemptState, Build, Counts, Outcome, RunOutcome, Status, TestResult

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
        pipe.delete(keys.build_tests(build_id))
        for chunk in _chunks(outcome.tests, TESTS_PER_WRITE):
            pipe.hset(keys.build_tests(build_id), mapping={t.id: t.to_json() for t in chunk})
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

    return _write_if_owner(conn, build_id, attempt, write) is not None


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
