"""A large pytest suite split across runners: push → result with 2 runners ÷ with 1 runner, side by side.

    python bench/shard_pytest.py [--package packaging==25.0] [--runs 3]

The package's source distribution made into a git repository with NO .volt.toml (detection finds
pytest and its setup), an observer, a scheduler and runners against a private redis-server, all with
Volt's default settings — `shard_threshold` (2000 tests) and `shards` (one per live runner) included,
only `retries` off. One warm build first (the environment made, what each test cost recorded); then,
alternately, a commit built by 1 runner and a commit built by 2 runners (which the runner that takes
it splits in two from those timings), each timed from `volt notify` to the build's result. The
second runner is started anew for each 2-runner build, and its first build is a warm-up too, not
counted. Prints the medians, their ratio
(goal ≤ 0.6), the shards of the last 2-runner build, and whether every test's id and outcome of
each 2-runner build equals the 1-runner build's before it.

Then, without Volt around it, the floor that ratio has: in the build's own environment and tree, the
time of pytest (through Volt's pytest_collector.py, as a build runs it) over the whole suite and over
each shard of the 2-shard plan Volt makes from the recorded timings (shard 1 collects only its
files and functions; shard 0 every file and function shard 1 does not take whole), alternately,
--runs times each. Two runners cannot take less than the longer shard, whatever else they do. And
the machine's own parallelism at that moment: a fixed CPU-bound loop run alone and two of them at
once, alternately (2.0 on two free cores; less when other work holds them).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from fast import Volt, _stop_one_runner  # noqa: E402
from real_project import GIT, make_repo  # noqa: E402
from table import print_table  # noqa: E402

from voltci import keys  # noqa: E402
from voltci.config import Settings  # noqa: E402
from voltci.models import Timings  # noqa: E402
from voltci.redis_server import RedisServer  # noqa: E402
from voltci.runner import pytest_collector  # noqa: E402
from voltci.runner.sharding import partition  # noqa: E402
from voltci.store import Store  # noqa: E402

NAME = "sharded"


def outcomes(volt: Volt, repo: Path) -> tuple[str, dict[str, str], int]:
    """The head's build: its id, each test's outcome, and how many shards it ran in."""
    sha = subprocess.run([*GIT, "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                         check=True).stdout.strip()
    store = Store(volt.conn)
    build_id = keys.build_id(NAME, sha)
    build = store.records.get_build(build_id)
    return build.status.value, {t.id: t.outcome.value for t in store.records.get_tests(build_id)}, build.shards


def shard_floor(work: Path, repo: Path, timings: Timings,
                runs: int) -> tuple[list[float], list[list[float]]]:
    """The whole suite, and each shard of the 2-shard plan Volt makes from the recorded `timings`
    (shard 1 its entries, shard 0 every test but those), run by pytest_collector.py in the build's
    environment (made by Volt), outside any sandbox: seconds of each, alternately."""
    (python,) = (work / "volt" / "ws").glob(f"*/envs/{NAME}/*-0/bin/python")
    plans = partition(sorted(timings.tests), 2, timings)
    others = work / "others.txt"
    others.write_text("\n".join(plans[1].entries) + "\n")
    collector = [str(python), pytest_collector.__file__]
    selections = [[], ["--except-file", str(others)], ["--only-file", str(others)]]
    times: list[list[float]] = [[] for _ in selections]
    for _ in range(runs):
        for taken, selection in zip(times, selections, strict=True):
            started = time.perf_counter()
            subprocess.run([*collector, "--out", str(work / "out.jsonl"), *selection, "--", "-p", "no:cacheprovider"],
                           cwd=repo, capture_output=True, timeout=1800)
            taken.append(time.perf_counter() - started)
    return times[0], times[1:]


BUSY = "s = 0\nfor i in range(30_000_000):\n    s += i\n"


def parallelism(runs: int) -> float:
    """How many CPU-bound processes' worth of work this machine does at once, now: two loops at once
    against one alone, medians of `runs`."""
    alone, pair = [], []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", BUSY], check=True)
        alone.append(time.perf_counter() - started)
        started = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(2)]
        for proc in procs:
            proc.wait()
        pair.append(time.perf_counter() - started)
    return 2 * statistics.median(alone) / statistics.median(pair)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", default="packaging==25.0")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if args.runs < 2:
        raise SystemExit("refusing to print a ratio from a single run: use --runs 2 or more")
    defaults = Settings()
    with tempfile.TemporaryDirectory(prefix="volt-shard-") as tmp:
        work = Path(tmp)
        repo = make_repo(args.package, work)
        with RedisServer(work / "redis") as server:
            volt = Volt(work / "volt", server)
            try:
                volt.watch(repo, NAME)
                volt.push_and_wait(repo, NAME, 0)  # warm: environment made, timings recorded
                status, first, _ = outcomes(volt, repo)
                one, two, warm, equal, shards = [], [], [], [], 0
                for n in range(1, args.runs + 1):
                    one.append(volt.push_and_wait(repo, NAME, 2 * n))
                    _, whole, _ = outcomes(volt, repo)
                    volt.runners(2)
                    # The second runner is a new process each time: its first build (its environment,
                    # worktree and first sandbox made) is a warm-up, as the first runner's was.
                    warm.append(volt.push_and_wait(repo, NAME, 100 + n))
                    two.append(volt.push_and_wait(repo, NAME, 2 * n + 1))
                    _, split, shards = outcomes(volt, repo)
                    if shards < 2:
                        raise SystemExit("the 2-runner build was not split: the figure would mean nothing")
                    equal.append(split == whole)
                    _stop_one_runner(volt)
                timings = Store(volt.conn).history.timings(NAME)
            finally:
                volt.stop()
            whole_s, shard_s = shard_floor(work, repo, timings, args.runs)
            cores = parallelism(args.runs)
    ratio = statistics.median(two) / statistics.median(one)
    print_table([
        ("package (no .volt.toml)", args.package),
        ("settings", f"shard_threshold {defaults.shard_threshold} (default), "
                     f"shards {defaults.shards or 'one per live runner'}"),
        ("tests in the warm build, its status", f"{len(first)}, {status}"),
        ("push → result, 1 runner, runs s", " ".join(f"{s:.1f}" for s in one)),
        ("push → result, 2 runners, runs s", " ".join(f"{s:.1f}" for s in two)),
        ("  not counted: each new second runner's first build (a warm-up), s", " ".join(f"{s:.1f}" for s in warm)),
        ("shards of the last 2-runner build", str(shards)),
        ("every test id and outcome equal, 2 runners vs 1", f"{sum(equal)} of {len(equal)} runs"),
        ("  ratio 2 runners / 1 runner, medians (goal ≤ 0.6)", f"{ratio:.2f}"),
        ("no Volt: pytest over all tests / shard 0 / shard 1 of Volt's plan, runs s",
         " / ".join(" ".join(f"{s:.1f}" for s in taken) for taken in (whole_s, *shard_s))),
        ("  floor of the ratio: the longer shard / the whole, medians",
         f"{max(map(statistics.median, shard_s)) / statistics.median(whole_s):.2f}"),
        ("machine: CPU-bound processes' worth of work done at once (2 free cores: 2.0)", f"{cores:.2f}"),
    ])
    print(f"shard_pytest: {args.package}: 2 runners / 1 runner = {ratio:.2f} (median of {args.runs}); outcomes "
          f"equal in {sum(equal)} of {len(equal)}")
    sys.exit(0 if all(equal) and ratio <= 0.6 else 1)


if __name__ == "__main__":
    main()
