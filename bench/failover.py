"""Chaos with Sentinel: the Redis primary SIGKILLed at random moments while builds flow. Nothing may be
lost or stored twice, and no Volt process may die.

    python bench/failover.py [--builds 30] [--failovers 3] [--runners 2] [--test-seconds 1]

Starts a primary, a replica and three Sentinels on loopback (tests/sentinels.py: the Sentinels call the
primary down after 1 s), `--runners` `volt worker`s, `volt scheduler` and `volt observe`, all on the
`redis+sentinel://` URL, and commits `--builds` commits to a repository whose test takes about
`--test-seconds`, one every second, for the observer to queue. `--failovers` times, at a random moment,
it SIGKILLs the primary, and once the Sentinels have promoted the replica starts the killed one again as
a replica of the new primary. It prints a table and one closing line: builds lost, builds with more
than one stored result, Volt processes dead, and for each failover the pause split in two — from the
kill to the Sentinels naming the new primary (theirs), and from then to the first build making progress
(a build starting, ending, or counting a test more: Volt's share).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

import redis  # noqa: E402
from sentinels import SentinelGroup  # noqa: E402
from table import print_table  # noqa: E402

from voltci import keys  # noqa: E402
from voltci.config import Settings, as_environment  # noqa: E402
from voltci.connection import connect  # noqa: E402
from voltci.runner.procs import descendants, kill_all  # noqa: E402

GIT = ["git", "-c", "user.name=Bench", "-c", "user.email=bench@volt.invalid"]
SLOW_TEST = """import os, time, unittest


class Slow(unittest.TestCase):
    def test_slow(self):
        time.sleep(float(os.environ.get("FAILOVER_TEST_SECONDS", "1")))
"""
FINAL = {"passed", "failed", "error", "timeout", "cancelled", "skipped"}


def commit(repo: Path, n: int) -> str:
    (repo / "n.txt").write_text(str(n))
    subprocess.run([*GIT, "add", "-A"], cwd=repo, check=True, capture_output=True)
    subprocess.run([*GIT, "commit", "-q", "-m", f"change {n}"], cwd=repo, check=True, capture_output=True)
    return subprocess.run([*GIT, "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()


def progress(conn: redis.Redis, build_ids: list[str]) -> tuple:
    """What the builds show of their progress: any change of it is progress."""
    pipe = conn.pipeline(transaction=False)
    for build_id in build_ids:
        pipe.hmget(keys.build(build_id), "status", "progress", "results_stored", "attempt")
    return tuple(tuple(row) for row in pipe.execute())


class Watcher(threading.Thread):
    """Samples the builds' progress every 50 ms, noting when it last changed."""

    def __init__(self, url: str, build_ids: list[str]):
        super().__init__(daemon=True)
        self.conn, self.build_ids = connect(url, ping=False), build_ids
        self.last: tuple = ()
        self.changes: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            try:
                now = progress(self.conn, list(self.build_ids))
            except redis.RedisError:
                continue
            if self.last and now != self.last:
                self.changes.append(time.monotonic())
            self.last = now

    def first_change_after(self, moment: float, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            after = [t for t in self.changes if t > moment]
            if after:
                return after[0]
            time.sleep(0.05)
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--builds", type=int, default=30)
    parser.add_argument("--failovers", type=int, default=3)
    parser.add_argument("--runners", type=int, default=2)
    parser.add_argument("--test-seconds", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="volt-failover-"))
    group = SentinelGroup(work / "sentinels").start()
    settings = Settings(redis_url=group.url, workspace_dir=str(work / "ws"), retries=0)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("VOLT_")}, **as_environment(settings),
           "PYTHONPATH": str(ROOT), "FAILOVER_TEST_SECONDS": str(args.test_seconds),
           "VOLT_PASS_ENV": "FAILOVER_TEST_SECONDS"}
    repo = work / "repo"
    repo.mkdir()
    subprocess.run([*GIT, "init", "-q", "--initial-branch=main"], cwd=repo, check=True)
    (repo / "tests").mkdir()
    (repo / "tests" / "__init__.py").write_text("")
    (repo / "tests" / "test_slow.py").write_text(SLOW_TEST)
    shas = [commit(repo, 0)]
    procs: dict[str, subprocess.Popen] = {}

    def start(name: str, *command: str) -> None:
        with open(work / f"{name}.log", "wb") as log:
            procs[name] = subprocess.Popen([sys.executable, "-m", "voltci", *command], env=env, cwd=work,
                                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    for n in range(args.runners):
        start(f"runner{n}", "worker", "--name", f"runner{n}")
    start("scheduler", "scheduler")
    start("observer", "observe", "--repo", str(repo), "--name", "proj", "--poll", "0.5")
    build_ids = [keys.build_id("proj", shas[0])]
    watcher = Watcher(group.url, build_ids)
    watcher.start()
    first = connect(group.url)
    deadline = time.monotonic() + 120
    while not first.exists(keys.build(build_ids[0])):  # the observer builds only the head it first sees
        if time.monotonic() > deadline:
            raise SystemExit("failover: the observer did not queue the first commit")
        time.sleep(0.1)
    pauses: list[tuple[float, float]] = []
    try:
        committer = threading.Thread(target=commit_every_second, args=(repo, args.builds, shas, build_ids),
                                     daemon=True)
        started = time.monotonic()
        committer.start()  # builds keep coming while a failover is measured
        moments = sorted(random.uniform(3, max(4.0, args.builds * 0.9)) for _ in range(args.failovers))
        for moment in moments:
            time.sleep(max(0.0, started + moment - time.monotonic()))
            pauses.append(fail_over(group, watcher))
        committer.join(timeout=args.builds * 5 + 60)
        conn = connect(group.url)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            states = [conn.hget(keys.build(b), "status") for b in build_ids]
            if all(state in FINAL for state in states if state) and None not in states:
                break
            time.sleep(0.5)
        rows = [conn.hgetall(keys.build(b)) for b in build_ids]
        lost = sum(1 for row in rows if not row or row.get("status") not in FINAL)
        twice = sum(1 for row in rows if int(row.get("results_stored", 0) or 0) > 1)
        dead = [name for name, proc in procs.items() if proc.poll() is not None]
        theirs = [p[0] for p in pauses]
        ours = [p[1] for p in pauses if p[1] >= 0]
        print_table([
            ("builds committed / ended once", f"{len(build_ids)} / {len(build_ids) - lost - twice}"),
            ("builds lost (not ended, or gone)", str(lost)),
            ("builds with more than one stored result", str(twice)),
            ("Volt processes dead", ", ".join(dead) or "0"),
            ("failovers", str(len(pauses))),
            ("kill → Sentinels name the new primary, each (s)", " ".join(f"{t:.2f}" for t in theirs)),
            ("new primary → first build progress, each (s)", " ".join(f"{t:.2f}" for t in ours) or "-"),
        ])
        print(f"failover: {lost} lost, {twice} stored twice, {len(dead)} processes dead over {len(pauses)} "
              f"failovers and {len(build_ids)} builds; pause per failover: Sentinels "
              f"{statistics.median(theirs):.2f} s, Volt {statistics.median(ours) if ours else float('nan'):.2f} s "
              "(medians)")
        return 0 if lost == twice == len(dead) == 0 else 1
    finally:
        watcher.stop.set()
        for proc in procs.values():
            kill_all([*descendants(proc.pid), proc.pid], signal.SIGKILL)
        group.stop()


def commit_every_second(repo: Path, builds: int, shas: list[str], build_ids: list[str]) -> None:
    for n in range(1, builds):
        time.sleep(1.0)
        shas.append(commit(repo, n))
        build_ids.append(keys.build_id("proj", shas[-1]))


def fail_over(group: SentinelGroup, watcher: Watcher) -> tuple[float, float]:
    """Kill the primary; (seconds until the Sentinels named another, seconds from then to progress)."""
    killed = time.monotonic()
    old = group.fail_over()
    promoted = time.monotonic()
    moved = watcher.first_change_after(promoted, timeout=120)
    group.rejoin(old)
    return promoted - killed, (moved - promoted) if moved is not None else -1.0


if __name__ == "__main__":
    raise SystemExit(main())
