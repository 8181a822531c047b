"""Commit statuses, measured: how soon a forge hears of a push and of a failing test, how many statuses a
build posts, and what an hour-long forge outage costs builds and loses.

    python bench/forge_statuses.py [--builds 3] [--outage-builds 400] [--hour-s 18] [--part all|real|outage]

Part one, real processes: a private redis-server, the forge double of the tests (a real HTTP server on
loopback), `volt observe` watching a git repository through a `[[repos]]` table with `forge =
"github"`, one `volt worker` and `volt scheduler` (the forge token in its environment only). --builds
times: a commit whose first test fails (its message carries the moment it failed, by the clock it
shares with this process) and whose second test sleeps 2 s is pushed, and `volt notify` named; then

- push → first `pending`: from the notify to the double receiving the build's first status;
- failure → its name: from the test's failure to the double receiving a status naming it;
- statuses per build: what the double received for the build's commit.

Part two, an hour of outage in compressed time, against a private redis-server: the scheduler's
sender (statuses.StatusSender, in a process of its own as in `volt scheduler`) and builds driven
through the store back to back, as runners and the observer drive them (queued, started, ten
progress writes with a first failure, ended: 13 store calls). Time is compressed so that --hour-s
real seconds stand for an hour (18 s: 200×): the sender's backoff cap of 300 s becomes 1.5 s, and the
double answers 502 for the first two thirds and 429 with `Retry-After: 1` (200 compressed seconds)
for the last third, then 201 again. Builds run with a healthy forge for a third of --hour-s before
the outage, throughout it, and for a third after it, in one run: the table gives the build write cost
(median per build) healthy (before and after) and during the outage and their ratio, what waited in
Redis at the outage's end, and whether every outage build's final status arrived once the forge was
back, in order (no `pending` after a final one), and how long that took.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

import redis  # noqa: E402
from forge_double import ForgeDouble  # noqa: E402
from table import print_table  # noqa: E402

from voltci import keys  # noqa: E402
from voltci.config import Settings, as_environment  # noqa: E402
from voltci.forge import ForgeLink  # noqa: E402
from voltci.models import Build, Counts, Outcome, RunOutcome, Status, TestResult  # noqa: E402
from voltci.redis_server import RedisServer  # noqa: E402
from voltci.statuses import BACKOFF_MAX_S  # noqa: E402
from voltci.store import Store  # noqa: E402

GIT = ["git", "-c", "user.name=Bench", "-c", "user.email=bench@volt.invalid"]
TOKEN = "bench-T0KEN"
WAIT_S = 300.0
TEST = (
    "import time, unittest\n\n\n"
    "class Calc(unittest.TestCase):\n"
    "    def test_a_fails(self):\n"
    "        self.fail(f'FAILED_AT={{time.time():.3f}} ({n})')\n\n"
    "    def test_b_slow(self):\n"
    "        time.sleep(2)\n"
)


def git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=repo, check=True, capture_output=True, text=True, timeout=60).stdout


def wait(predicate, what: str, timeout: float = WAIT_S):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise SystemExit(f"forge_statuses: timed out waiting for {what}")


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "voltci", *args], env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


# ------------------------------------------------------------ part one: real processes


def real_processes(tmp: Path, builds: int) -> list[tuple[str, str]]:
    server = RedisServer(tmp / "redis").start()
    double = ForgeDouble(token=TOKEN).start()
    procs: list[subprocess.Popen] = []
    try:
        repo = tmp / "proj"
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        (repo / "tests").mkdir()
        (repo / "tests" / "__init__.py").write_text("")
        (repo / "tests" / "test_calc.py").write_text(TEST.format(n=0))
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "start")
        config = tmp / "volt.toml"
        config.write_text(f'[[repos]]\nurl = "{repo}"\nname = "proj"\nforge = "github"\n'
                          f'forge_api = "{double.api}"\nforge_project = "octo/proj"\n')
        settings = Settings(redis_url=server.url, workspace_dir=str(tmp / "ws"), poll=30.0,
                            public_url="https://ci.example.org")
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOLT_")}
        env.update(as_environment(settings), PYTHONPATH=str(ROOT), VOLT_CONFIG=str(config))
        procs.append(start(["scheduler"], {**env, "VOLT_FORGE_TOKEN": TOKEN}, tmp / "scheduler.log"))
        procs.append(start(["worker", "--name", "bench"], env, tmp / "worker.log"))
        procs.append(start(["observe"], env, tmp / "observe.log"))
        store = Store(redis.Redis.from_url(server.url, decode_responses=True), settings)
        wait(lambda: store.repos.is_known("proj"), "the observer to register the repository", 60)
        first_build = keys.build_id("proj", git(repo, "rev-parse", "HEAD").strip())
        wait(lambda: (b := store.records.get_build(first_build)) is not None and b.status.is_final,
             "the first build (the branch's head when the observer starts)")
        to_pending, to_name, per_build = [], [], []
        for n in range(1, builds + 1):
            (repo / "tests" / "test_calc.py").write_text(TEST.format(n=n))
            git(repo, "commit", "-q", "-am", f"change {n}")
            sha = git(repo, "rev-parse", "HEAD").strip()
            pushed = time.time()
            store.repos.notify("proj")
            first = wait(lambda sha=sha: [s for s in double.statuses(context="volt") if s.sha == sha],
                         "the first pending")[0]
            to_pending.append(first.at - pushed)
            build_id = keys.build_id("proj", sha)
            wait(lambda build_id=build_id: (b := store.records.get_build(build_id)) is not None and b.status.is_final,
                 "the build's end")
            wait(lambda sha=sha: any(s.sha == sha and s.status["state"] == "failure" for s in double.statuses()),
                 "the final status")
            failed = next(t for t in store.records.listed_tests(build_id) if t.id.endswith("test_a_fails"))
            failed_at = float(failed.message.split("FAILED_AT=")[-1].split()[0])
            named = next(s for s in double.statuses() if s.sha == sha and "test_a_fails" in s.status["description"])
            to_name.append(named.at - failed_at)
            per_build.append(len([s for s in double.statuses() if s.sha == sha]))
        assert double.invalid == [], double.invalid
        states = [s.status["state"] for s in double.statuses() if s.sha == sha]
        return [
            ("push (notify) → first pending, median", f"{statistics.median(to_pending) * 1000:.0f} ms "
                                                     f"(max {max(to_pending) * 1000:.0f} ms, {builds} builds)"),
            ("test fails → its name in a status, median", f"{statistics.median(to_name) * 1000:.0f} ms "
                                                         f"(max {max(to_name) * 1000:.0f} ms)"),
            ("statuses per build (a 2-test build)", f"{statistics.median(per_build):.0f} "
                                                   f"(the last: {' → '.join(states)})"),
        ]
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        double.stop()
        server.stop()


# ------------------------------------------------------------ part two: an hour of outage, compressed


def failing_outcome() -> RunOutcome:
    tests = [TestResult(f"tests/test_x.py::test_{i}", Outcome.FAILED if i == 3 else Outcome.PASSED, 0.1, order=i)
             for i in range(20)]
    return RunOutcome(Status.FAILED, tests, Counts(total=20, passed=19, failed=1))


def one_build(store: Store, sha: str) -> float:
    """The store calls a runner and the observer make for one build; the seconds they took."""
    build = Build(id=keys.build_id("proj", sha), repo="proj", url="/r", commit=sha, branch="main")
    began = time.perf_counter()
    store.builds.submit(build)
    store.builds.start_attempt(build.id, 1, "bench")
    for done in range(1, 11):
        store.builds.set_progress(build.id, done * 2, 1 if done >= 2 else 0, "tests/test_x.py::test_3"
                                  if done == 2 else "")
    store.builds.finish(build.id, 1, "bench", failing_outcome())
    return time.perf_counter() - began


SENDER = """
import os, signal, sys, threading
sys.path[:0] = [{root!r}]
import redis
from voltci.config import Settings
from voltci.statuses import StatusSender
from voltci.store import Store
settings = Settings(redis_url={url!r}, public_url="https://ci.example.org")
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
StatusSender(settings, Store(redis.Redis.from_url({url!r}, decode_responses=True), settings), lambda: True,
             backoff_max_s={backoff!r}).run(stop)
"""


def run_builds(store: Store, shas, seconds: float, most: int) -> tuple[list[float], list[str]]:  # type: ignore[no-untyped-def]
    """Builds back to back for `seconds` (at most `most`): each one's write cost, and their commits."""
    costs, made = [], []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(made) < most:
        sha = next(shas)
        costs.append(one_build(store, sha))
        made.append(sha)
    time.sleep(max(0.0, deadline - time.monotonic()))
    return costs, made


def outage(tmp: Path, most: int, hour_s: float) -> list[tuple[str, str]]:
    server = RedisServer(tmp / "redis-outage").start()
    double = ForgeDouble(token=TOKEN).start()
    scale = 3600.0 / hour_s
    sender: subprocess.Popen | None = None
    try:
        settings = Settings(redis_url=server.url, public_url="https://ci.example.org")
        client = redis.Redis.from_url(server.url, decode_responses=True)
        store = Store(client, settings)
        store.repos.register("proj", "/r", ["main"], forge=ForgeLink("github", double.api, "octo/proj").to_dict())
        code = SENDER.format(root=str(ROOT), url=server.url, backoff=BACKOFF_MAX_S / scale)
        env = {**os.environ, "VOLT_FORGE_TOKEN": TOKEN}
        with open(tmp / "sender.log", "ab") as log:
            sender = subprocess.Popen([sys.executable, "-c", code], env=env, stdin=subprocess.DEVNULL, stdout=log,
                                      stderr=subprocess.STDOUT)
        shas = iter(f"{n:040x}" for n in range(1, 10 * most + 10))
        healthy, _ = run_builds(store, shas, hour_s / 3, most)
        wait(lambda: store.statuses.waiting() == 0, "the healthy builds' statuses")
        before_outage = len(double.requests())
        double.answer(502)
        began = time.monotonic()
        down, down_shas = run_builds(store, shas, hour_s * 2 / 3, most)
        double.answer(429, retry_after=1)
        limited, limited_shas = run_builds(store, shas, hour_s / 3, most)
        outage_s = time.monotonic() - began
        down, down_shas = down + limited, down_shas + limited_shas
        waiting = store.statuses.waiting()
        memory = int(client.info("memory")["used_memory"])
        double.answer(None)
        back = time.monotonic()
        after_costs, _ = run_builds(store, shas, hour_s / 3, most)
        wait(lambda: store.statuses.waiting() == 0, "every status after the outage", timeout=300)
        caught_up = time.monotonic() - back
        finals_ok, ordered = 0, True
        seen = double.statuses()
        by_sha: dict[str, list[str]] = {}
        for status in seen:
            by_sha.setdefault(status.sha, []).append(status.status["state"])
        for sha in down_shas:
            states = by_sha.get(sha, [])
            finals_ok += bool(states) and states[-1] == "failure"
            ordered = ordered and all(state == "pending" for state in states[:-1])
        answered = double.requests()[before_outage:]
        refused = sum(1 for s in answered if s.code in (429, 502))
        healthy += after_costs
        ratio = statistics.median(down) / statistics.median(healthy)
        per_build = statistics.median(len(by_sha.get(sha, [])) for sha in down_shas)
        return [
            ("compressed hour", f"{outage_s:.1f} s for 3600 s ({scale:.0f}×): 502 for 40 min, then 429 with "
                                f"Retry-After: 1 for 20 min; backoff cap {BACKOFF_MAX_S:.0f} s → "
                                f"{BACKOFF_MAX_S / scale:.1f} s"),
            ("build write cost, healthy forge (median)",
             f"{statistics.median(healthy) * 1000:.1f} ms a build ({len(healthy)} builds before and after)"),
            ("build write cost, forge down (median)", f"{statistics.median(down) * 1000:.1f} ms a build "
                                                      f"({len(down)} builds)"),
            ("ratio down ÷ healthy", f"{ratio:.2f}"),
            ("requests answered 502/429 in the outage", f"{refused} (for {len(down)} builds)"),
            ("waiting at the outage's end", f"{waiting} builds (one id each); Redis {memory / 1e6:.1f} MB in all"),
            ("after the forge is back", f"all waiting sent in {caught_up:.1f} s: final status of {finals_ok}/"
                                        f"{len(down)} outage builds, {'in order' if ordered else 'OUT OF ORDER'}, "
                                        f"{per_build:.0f} statuses each"),
        ]
    finally:
        if sender is not None:
            sender.terminate()
            sender.wait(15)
        double.stop()
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--builds", type=int, default=3, help="real builds of part one")
    parser.add_argument("--outage-builds", type=int, default=400, help="simulated builds of each phase, at most")
    parser.add_argument("--hour-s", type=float, default=18.0, help="real seconds standing for an hour")
    parser.add_argument("--part", choices=("all", "real", "outage"), default="all")
    args = parser.parse_args()
    if args.builds < 1 or args.outage_builds < 3 or args.hour_s <= 0:
        print("forge_statuses: --builds ≥ 1, --outage-builds ≥ 3 and --hour-s > 0", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="volt-forge-bench-") as tmp:
        rows = real_processes(Path(tmp), args.builds) if args.part in ("all", "real") else []
        rows += outage(Path(tmp), args.outage_builds, args.hour_s) if args.part in ("all", "outage") else []
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
