"""Chaos run: runners SIGKILLed and Redis restarted while builds run. Nothing may be lost or run twice.

    python bench/chaos.py [--builds 30] [--kills 5] [--runners 2] [--test-seconds 1]

Starts a private redis-server (append-only file on), `--runners` supervised `volt worker`s (as
`volt up` runs them: a dead one is started again) and one `volt scheduler`, with the default
heartbeat (2 s, TTL 6 s). It enqueues `--builds` commits of a repository whose test takes about
`--test-seconds` and starts a grandchild process, then SIGKILLs a busy runner every few seconds —
alternately its whole process tree, and only the runner and its work-horse (leaving the tests to
Volt's reaping) — and restarts Redis once. It prints a table and one closing line: builds lost,
builds with more than one stored result, test processes left over, and the median and worst time
from a runner's death to its build starting again on another runner.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import redis  # noqa: E402
from table import print_table  # noqa: E402

from voltci import keys  # noqa: E402
from voltci.config import Settings, as_environment  # noqa: E402
from voltci.observer import RepoWatch  # noqa: E402
from voltci.redis_server import RedisServer  # noqa: E402
from voltci.runner.procs import (  # noqa: E402
    TEST_RUN_ENV,
    children,
    descendants,
    kill_all,
    processes_with_env,
)
from voltci.store import Store  # noqa: E402
from voltci.up import WorkerPool  # noqa: E402

GIT = ["git", "-c", "user.name=Bench", "-c", "user.email=bench@volt.invalid"]
RUN_MARK = "CHAOS_RUN"  # in the runners' environment, so every test process of this run can be counted
REAP_WAIT_S = 15.0

SLOW_TEST = """import os, subprocess, sys, time, unittest


class Slow(unittest.TestCase):
    def test_slow(self):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        time.sleep(float(os.environ["CHAOS_TEST_SECONDS"]))
        child.kill()
        child.wait()
"""


def commit(repo: Path, n: int) -> None:
    (repo / "counter.txt").write_text(str(n))
    subprocess.run([*GIT, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", f"change {n}"], cwd=repo, check=True)


def enqueue_builds(repo: Path, count: int, settings: Settings, rq_conn: redis.Redis) -> list[str]:
    """`count` commits, each a build: the observer takes the first head, then every commit after it."""
    repo.mkdir(parents=True)
    subprocess.run([*GIT, "init", "-q", "-b", "main"], cwd=repo, check=True)
    (repo / "tests").mkdir()
    (repo / "tests" / "__init__.py").write_text("")
    (repo / "tests" / "test_slow.py").write_text(SLOW_TEST)
    commit(repo, 0)
    watch = RepoWatch(Store(rq_conn, settings), str(repo), name="chaos")
    watch.validate()
    build_ids = [b.id for b in watch.poll()]
    for n in range(1, count):
        commit(repo, n)
    return build_ids + [b.id for b in watch.poll()]


def busy_runner(conn: redis.Redis, pool: WorkerPool) -> tuple[int, str, int] | None:
    """(index in the pool, build, attempt) of a runner that is running a build right now."""
    for index, proc in enumerate(pool.procs):
        if proc is None or proc.poll() is not None:
            continue
        text = conn.get(keys.runner(f"{socket.gethostname()}.{proc.pid}"))
        beat = json.loads(text) if text else None
        if beat and beat["build"]:
            build = Store(conn).records.get_build(beat["build"])
            if build and build.status.value == "running" and build.attempt == beat["attempt"]:
                return index, beat["build"], beat["attempt"]
    return None


def kill_runner(pool: WorkerPool, index: int, whole_tree: bool) -> None:
    proc = pool.procs[index]
    assert proc is not None
    tree = descendants(proc.pid)
    if not whole_tree:  # the runner and its work-horse only: the tests are left to Volt
        tree = children(proc.pid)
    kill_all([proc.pid, *tree])
    proc.wait(timeout=10)


def leftovers(token: str) -> list[int]:
    """Test processes of this run still alive (the runners carry the run mark too, but no test-run mark)."""
    tests = processes_with_env(TEST_RUN_ENV)
    return [pid for pid, value in processes_with_env(RUN_MARK).items() if value == token and pid in tests]


def parse_time(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--builds", type=int, default=30)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--runners", type=int, default=2)
    parser.add_argument("--test-seconds", type=float, default=1.0)
    parser.add_argument("--kill-every", type=float, default=3.0, help="Seconds between two kills.")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="volt-chaos-"))
    server = RedisServer(work / "redis", appendonly=True).start()
    settings = Settings(redis_url=server.url, workspace_dir=str(work / "ws"), pass_env=f"CHAOS_TEST_SECONDS {RUN_MARK}")
    conn = redis.Redis.from_url(server.url, decode_responses=True)
    rq_conn = redis.Redis.from_url(server.url)
    token = str(os.getpid())
    build_ids = enqueue_builds(work / "repo", args.builds, settings, rq_conn)
    assert len(build_ids) == args.builds, f"enqueued {len(build_ids)} builds, expected {args.builds}"

    # Runners and the scheduler inherit these; the runners' pass_env hands both to the tests.
    os.environ.update({RUN_MARK: token, "CHAOS_TEST_SECONDS": str(args.test_seconds), "PYTHONPATH": str(ROOT)})
    pool = WorkerPool(args.runners, settings, work / "logs")
    with open(work / "scheduler.log", "wb") as log:
        scheduler = subprocess.Popen([sys.executable, "-m", "voltci", "scheduler"], cwd=ROOT,
                                     env={**os.environ, **as_environment(settings)}, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
    started = time.monotonic()
    kills: list[tuple[float, str, int, bool]] = []
    redis_restarted_at = None
    try:
        pool.start()
        last_kill = time.monotonic()
        while time.monotonic() - started < args.timeout:
            pool.supervise()
            if all(_final(conn, b) for b in build_ids):
                break
            now = time.monotonic()
            if len(kills) < args.kills and now - last_kill >= args.kill_every:
                busy = busy_runner(conn, pool)
                if busy:
                    index, build_id, attempt = busy
                    whole = len(kills) % 2 == 0
                    kills.append((time.time(), build_id, attempt, whole))
                    kill_runner(pool, index, whole)
                    last_kill = now
            if redis_restarted_at is None and len(kills) >= 3:
                server.stop()
                time.sleep(1.0)
                server.start()
                redis_restarted_at = time.monotonic() - started
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        deadline = time.monotonic() + REAP_WAIT_S
        while leftovers(token) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = len(leftovers(token))
        builds = [Store(conn).records.get_build(b) for b in build_ids]
    finally:
        pool.stop()
        scheduler.terminate()
        scheduler.wait(timeout=10)
        kill_all(leftovers(token), signal.SIGKILL)

    lost = sum(1 for b in builds if b is None or not b.status.is_final)
    stored_twice = sum(1 for b in builds if b is not None and b.results_stored > 1)
    delays = []
    for when, build_id, attempt, _ in kills:
        attempts = {a.number: a for a in Store(conn).records.get_attempts(build_id)}
        following = attempts.get(attempt + 1)
        if following and following.started_at:
            delays.append(parse_time(following.started_at) - when)
    statuses: dict[str, int] = {}
    for b in builds:
        if b is not None:
            statuses[b.status.value] = statuses.get(b.status.value, 0) + 1
    server.stop()

    median = statistics.median(delays) if delays else float("nan")
    worst = max(delays) if delays else float("nan")
    rows = [
        ("builds", str(len(build_ids))),
        ("build statuses", ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))),
        ("runner kills (whole tree / runner+horse)",
         f"{len(kills)} ({sum(1 for k in kills if k[3])} / {sum(1 for k in kills if not k[3])})"),
        ("Redis restarts", f"{1 if redis_restarted_at is not None else 0}"
         + (f" (at {redis_restarted_at:.1f} s)" if redis_restarted_at is not None else "")),
        ("builds lost", str(lost)),
        ("builds with more than one stored result", str(stored_twice)),
        ("test processes left over", str(left)),
        ("death → restart elsewhere, each", " ".join(f"{d:.1f}" for d in delays) + " s"),
        ("death → restart elsewhere, median", f"{median:.2f} s"),
        ("death → restart elsewhere, worst", f"{worst:.2f} s"),
        ("goal for the median (2 × heartbeat TTL)", f"{2 * settings.heartbeat_ttl:.2f} s"),
        ("wall time", f"{elapsed:.1f} s"),
    ]
    print_table(rows)
    ok = (lost == 0 and stored_twice == 0 and left == 0 and len(kills) >= args.kills
          and median <= 2 * settings.heartbeat_ttl)
    print(f"chaos: lost {lost}, stored twice {stored_twice}, leftover processes {left}, "
          f"death→restart median {median:.2f} s worst {worst:.2f} s (goal ≤ {2 * settings.heartbeat_ttl:g} s)"
          f" — {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


def _final(conn: redis.Redis, build_id: str) -> bool:
    try:
        build = Store(conn).records.get_build(build_id)
    except redis.ConnectionError:
        return False
    return build is not None and build.status.is_final


if __name__ == "__main__":
    sys.exit(main())
