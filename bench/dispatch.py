"""Dispatch that serves people: the issue's scenario with one runner, today's FIFO and Volt's dispatch
side by side in one run.

    python bench/dispatch.py [--runs 1] [--push 15] [--broken 12] [--backlog 12] [--seconds 1]

Three repositories, each built once to start with. Then repository C gets a push of --push commits,
the --broken-th of which breaks a test (and every later one fails with it), A a backlog of
--backlog builds of --seconds each, and then B one commit. One `volt worker` builds everything,
against a private redis-server, once with `dispatch = "fifo"` (the order queued: what Volt did
before) and once with `dispatch = "fair"`, alternately --runs times. From the build records it counts:

- how many builds of A started between B's commit being queued and B's build starting (goal ≤ 1);
- how many builds of C's push ran until its first failing commit and that commit's parent were
  both known (goal ≤ ⌈log₂ n⌉ + 2), and whether Volt named the culprit on the failing builds.

It prints a table and one closing line with both figures (the worst of the runs) and their ratios
fair ÷ fifo.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import redis  # noqa: E402
from table import print_table  # noqa: E402

from voltci import keys  # noqa: E402
from voltci.config import Settings, as_environment  # noqa: E402
from voltci.models import Build  # noqa: E402
from voltci.observer import RepoWatch  # noqa: E402
from voltci.redis_server import RedisServer  # noqa: E402
from voltci.runner.procs import descendants, kill_all  # noqa: E402
from voltci.store import Store  # noqa: E402

GIT = ["git", "-c", "user.name=Bench", "-c", "user.email=bench@volt.invalid"]
WAIT_S = 900.0


def test_file(passing: bool, seconds: float) -> str:
    return ("import time, unittest\n\n\nclass T(unittest.TestCase):\n    def test_it(self):\n"
            f"        time.sleep({seconds})\n        self.assertTrue({passing})\n")


def commit(repo: Path, n: int, passing: bool = True, seconds: float = 0.0) -> str:
    (repo / "test_it.py").write_text(test_file(passing, seconds))
    (repo / "n.txt").write_text(str(n))
    subprocess.run([*GIT, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", f"commit {n}"], cwd=repo, check=True)
    return subprocess.run([*GIT, "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()


def new_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    subprocess.run([*GIT, "init", "-q", "-b", "main"], cwd=path, check=True)
    commit(path, 0)
    return path


def wait_ended(store: Store, build_ids: list[str], what: str) -> list[Build]:
    deadline = time.monotonic() + WAIT_S
    while True:
        builds = [store.records.get_build(b) for b in build_ids]
        if all(b is not None and b.status.is_final for b in builds):
            return builds  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not end within {WAIT_S:g} s")
        time.sleep(0.1)


def scenario(work: Path, mode: str, args: argparse.Namespace) -> dict[str, float]:
    """One run of the scenario under `dispatch = mode`: the figures, from the build records."""
    with RedisServer(work / f"redis-{mode}") as server:
        settings = Settings(redis_url=server.url, workspace_dir=str(work / f"ws-{mode}"), retries=0, dispatch=mode)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("VOLT_")}, **as_environment(settings),
               "PYTHONPATH": str(ROOT)}
        repos = {name: new_repo(work / f"{mode}-{name}") for name in "ABC"}
        store = Store(redis.Redis.from_url(server.url), settings)
        watches = {name: RepoWatch(store, str(path), name=name) for name, path in repos.items()}
        bases = []
        for watch in watches.values():
            watch.validate()
            bases += [b.id for b in watch.poll()]
        with open(work / f"runner-{mode}.log", "wb") as log:
            runner = subprocess.Popen([sys.executable, "-m", "voltci", "worker", "--name", f"bench-{mode}"], env=env,
                                      cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_ended(store, bases, "the first builds")
            c = [commit(repos["C"], n, passing=n < args.broken) for n in range(1, args.push + 1)]
            c_builds = watches["C"].poll()
            for n in range(1, args.backlog + 1):
                commit(repos["A"], n, seconds=args.seconds)
            a_builds = watches["A"].poll()
            commit(repos["B"], 1)
            (b_build,) = watches["B"].poll()
            ended = wait_ended(store, [x.id for x in (*c_builds, *a_builds, b_build)], "the scenario's builds")
        finally:
            kill_all([*descendants(runner.pid), runner.pid], signal.SIGTERM)
            runner.wait(timeout=60)
    by_id = {x.id: x for x in ended}
    b_done = by_id[b_build.id]
    a_between = [x for x in ended if x.repo == "A" and b_done.queued_at < x.started_at < b_done.started_at]
    culprit, parent = keys.build_id("C", c[args.broken - 1]), keys.build_id("C", c[args.broken - 2])
    known_at = max(by_id[culprit].finished_at, by_id[parent].finished_at)
    c_until = [x for x in ended if x.repo == "C" and x.started_at <= known_at]
    named = [x for x in ended if x.repo == "C" and x.status.value == "failed"
             and x.first_failing is not None and x.first_failing.commit == c[args.broken - 1]]
    fails = [x for x in ended if x.repo == "C" and x.status.value == "failed"]
    total_s = max(x.finished_at for x in ended)
    first_start = min(x.started_at for x in ended)
    return {"a_between": len(a_between), "c_until": len(c_until), "named": len(named) / max(1, len(fails)),
            "all_until": len([x for x in ended if x.started_at <= known_at]),
            "b_wait_s": _seconds(b_done.queued_at, b_done.started_at), "span_s": _seconds(first_start, total_s),
            "built": len(ended)}


def _seconds(start: str, end: str) -> float:
    from voltci.store import seconds_between
    return seconds_between(start, end)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="Runs of each order, taken alternately.")
    parser.add_argument("--push", type=int, default=15, help="Commits in C's push.")
    parser.add_argument("--broken", type=int, default=12, help="The commit of C's push that breaks a test.")
    parser.add_argument("--backlog", type=int, default=12, help="Builds in A's backlog.")
    parser.add_argument("--seconds", type=float, default=1.0, help="How long each of A's builds' test takes.")
    args = parser.parse_args()
    if not 2 <= args.broken <= args.push:
        raise SystemExit("--broken must be from 2 to --push (its parent must be in the push)")
    work = Path(tempfile.mkdtemp(prefix="volt-dispatch-"))
    results: dict[str, list[dict[str, float]]] = {"fifo": [], "fair": []}
    try:
        for n in range(args.runs):
            for mode in ("fifo", "fair"):
                results[mode].append(scenario(work / f"run{n}", mode, args))
                print(f"run {n + 1} {mode}: {results[mode][-1]}", flush=True)
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    # Counts against a goal: the worst run; times: the median.
    worst = ("a_between", "c_until", "all_until")
    med = {mode: {k: (max if k in worst else statistics.median)(r[k] for r in runs) for k in runs[0]}
           for mode, runs in results.items()}
    bound = math.ceil(math.log2(args.push)) + 2
    fifo, fair = med["fifo"], med["fair"]
    rows = [
        ("scenario", f"C: push of {args.push}, commit {args.broken} breaks; A: {args.backlog} builds of "
                     f"{args.seconds:g} s; then B: 1 commit; one runner"),
        ("builds of A started while B's commit waited, fifo / fair",
         f"{fifo['a_between']:.0f} / {fair['a_between']:.0f}"),
        ("  goal for fair", "≤ 1"),
        ("B's queue wait, fifo / fair", f"{fifo['b_wait_s']:.1f} s / {fair['b_wait_s']:.1f} s"),
        ("builds of C until the culprit and its parent were known, fifo / fair",
         f"{fifo['c_until']:.0f} / {fair['c_until']:.0f}"),
        ("  goal for fair (⌈log₂ n⌉ + 2)", f"≤ {bound}"),
        ("builds of every repository until then, fifo / fair", f"{fifo['all_until']:.0f} / {fair['all_until']:.0f}"),
        ("failing builds of C that name the culprit, fifo / fair", f"{fifo['named']:.0%} / {fair['named']:.0%}"),
        ("every commit built, fifo / fair", f"{fifo['built']:.0f} / {fair['built']:.0f}"),
        ("first start to last end, fifo / fair", f"{fifo['span_s']:.1f} s / {fair['span_s']:.1f} s"),
        ("runs of each (counts: the worst run; times: the median)", str(args.runs)),
    ]
    print_table(rows)
    ratio = lambda key: fair[key] / fifo[key] if fifo[key] else float("nan")  # noqa: E731
    print(f"dispatch: A builds before B's {fair['a_between']:.0f} (fifo {fifo['a_between']:.0f}, goal ≤ 1), "
          f"builds to culprit {fair['c_until']:.0f} (fifo {fifo['c_until']:.0f}, goal ≤ {bound}); "
          f"ratios fair/fifo {ratio('a_between'):.2f} and {ratio('c_until'):.2f}")


if __name__ == "__main__":
    main()
