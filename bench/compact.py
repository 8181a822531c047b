"""One real build's Redis bytes and read times, stored by a baseline revision's code and by this tree,
side by side in one run.

    python bench/compact.py --package packaging==25.0 --volt-toml bench/projects/packaging.toml \\
        [--baseline beedcba] [--runs 5]

Downloads the package's source distribution and makes it a git repository with the .volt.toml (as
project_suite.py does), extracts the baseline revision's code with `git archive`, then builds the
same commit once with each tree's `volt up --burst`, each against a private redis-server of its own.
For each it prints the Redis bytes the build added — used_memory before and after, on a server that
has already built a tiny repository (a fresh Redis grows by about 1 MiB on its first clients, Lua
scripts and rq registries, whatever is built), and Redis' MEMORY USAGE of the build's own keys and of
the repository's durations — then, each timed by that tree's
own code in a process of its own (median of --runs): storing the results again, `volt report
--json`, `volt report --junit`, the build page, and planning shards from the recorded durations;
with the ratio this tree ÷ baseline (goal: ≤ 1 for the reads, and at most 1 MiB for the build).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import redis  # noqa: E402
from real_project import GIT, make_repo  # noqa: E402
from table import print_table  # noqa: E402

from voltci.redis_server import RedisServer  # noqa: E402

MIB = 1024 * 1024

# Run by each tree's own interpreter path, against its own Redis: times its code reading the build.
TIMING = r'''
import json, statistics, sys, time
from click.testing import CliRunner
import redis
from voltci.cli import cli
from voltci.config import Settings
from voltci.models import Build, RunOutcome, Status
from voltci.runner.sharding import partition
from voltci.web import create_app

url, sha, runs, junit = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
conn = redis.Redis.from_url(url, decode_responses=True)
try:
    from voltci.store import Store
    store = Store(conn)
    if hasattr(store, "builds"):  # the store's parts
        records, history, builds = store.records, store.history, store.builds
        add, finish = builds.add, builds.finish
    else:  # a tree from before them: one Store of every method
        records = history = builds = store
        add, finish = store.add_build, store.finish_build
    build_id = records.resolve_commit(sha)
    build, tests = records.get_build(build_id), records.get_tests(build_id)
    durations = lambda: history.timings(build.repo) if hasattr(history, "timings") else store.durations(build.repo)

    def store_again(n):
        copy = Build(id=f"copy-{n}", repo="copy", url="", commit="0" * 40, branch="b")
        add(copy, 0)
        builds.start_attempt(copy.id, 1, "bench")
        finish(copy.id, 1, "bench", RunOutcome(Status.PASSED, tests, build.counts))
except ImportError:  # a tree from before the store
    from voltci import results
    build_id = results.resolve_commit(conn, sha)
    build, tests = results.get_build(conn, build_id), results.get_tests(conn, build_id)
    durations = lambda: results.durations(conn, build.repo)

    def store_again(n):
        copy = Build(id=f"copy-{n}", repo="copy", url="", commit="0" * 40, branch="b")
        with conn.pipeline() as pipe:
            results.add_build(copy, pipe, 0)
            pipe.execute()
        results.start_attempt(conn, copy.id, 1, "bench")
        results.finish_build(conn, copy.id, 1, "bench", RunOutcome(Status.PASSED, tests, build.counts))

runner, web = CliRunner(), create_app(Settings(redis_url=url)).test_client()
page = f"/build/{build.repo}/{sha}"

def report_json():
    assert runner.invoke(cli, ["report", sha, "--json", "--redis-url", url]).exit_code in (0, 1)

def report_junit():
    assert runner.invoke(cli, ["report", sha, "--junit", junit, "--redis-url", url]).exit_code in (0, 1)

def build_page():
    assert web.get(page).status_code == 200

def shard_plan():
    recorded = durations()
    ids = sorted(getattr(recorded, "tests", recorded))
    assert len(partition(ids, 4, recorded)) == 4

calls = {"store the results again": store_again, "volt report --json": report_json,
         "volt report --junit": report_junit, "build page": build_page, "shard plan from durations": shard_plan}
times = {}
for name, call in calls.items():
    call(0) if name.startswith("store") else call()  # warm up
    samples = []
    for n in range(runs):
        started = time.perf_counter()
        call(n + 1) if name.startswith("store") else call()
        samples.append(time.perf_counter() - started)
    times[name] = statistics.median(samples)
print(json.dumps({"times": times, "tests": len(tests), "build": build_id}))
'''


def used(conn: redis.Redis) -> int:
    try:
        conn.memory_purge()
    except redis.ResponseError:
        pass
    return int(conn.info("memory")["used_memory"])


def child_env(tree: Path, workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOLT_")}
    env.update({"PYTHONPATH": str(tree), "VOLT_WORKSPACE_DIR": str(workdir), "VOLT_RETRIES": "0"})
    return env


def volt_up(tree: Path, repo: Path, url: str, workdir: Path) -> None:
    up = subprocess.run([sys.executable, "-m", "voltci", "up", "--repo", str(repo), "--burst", "--workers", "1",
                         "--redis-url", url, "--timeout", "3600"], env=child_env(tree, workdir), cwd=tree,
                        capture_output=True, text=True, timeout=3700)
    if up.returncode != 0:
        raise SystemExit(f"{tree}: volt up failed: {up.stderr[-3000:]}")


def tiny_repo(work: Path) -> Path:
    """A one-test repository, built first so that Redis is warm when the measured build starts."""
    repo = work / "tiny"
    (repo / "tests").mkdir(parents=True)
    (repo / "tests" / "__init__.py").write_text("")
    (repo / "tests" / "test_one.py").write_text("import unittest\n\nclass T(unittest.TestCase):\n"
                                                "    def test_one(self):\n        pass\n")
    subprocess.run([*GIT, "init", "-q", "-b", "main"], cwd=repo, check=True)
    subprocess.run([*GIT, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", "one test"], cwd=repo, check=True)
    return repo


def measure(tree: Path, repo: Path, work: Path, name: str, runs: int) -> dict:
    """Build the repository's head with `tree`'s Volt; the bytes it added and `tree`'s read times."""
    sha = subprocess.run([*GIT, "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                         check=True).stdout.strip()
    with RedisServer(work / f"redis-{name}") as server:
        conn = redis.Redis.from_url(server.url)
        volt_up(tree, tiny_repo(work / name), server.url, work / f"ws-{name}")
        before = used(conn)
        volt_up(tree, repo, server.url, work / f"ws-{name}")
        grown = used(conn) - before
        own = sum(conn.memory_usage(key, samples=0) or 0 for key in conn.scan_iter(match=f"volt:build:*-{sha}*"))
        durations = sum(conn.memory_usage(key, samples=0) or 0 for key in conn.scan_iter(match="volt:repo:*")
                        if key.endswith((b":durations", b":timings")))
        timing = subprocess.run([sys.executable, "-c", TIMING, server.url, sha, str(runs),
                                 str(work / f"{name}.xml")], env=child_env(tree, work / f"ws-{name}"), cwd=tree,
                                capture_output=True, text=True, timeout=3600)
        if timing.returncode != 0:
            raise SystemExit(f"{name}: timing failed: {timing.stderr[-3000:]}")
    return {"grown": grown, "own": own, "durations": durations, **json.loads(timing.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", required=True)
    parser.add_argument("--volt-toml", required=True, type=Path)
    parser.add_argument("--baseline", default="beedcba", help="git revision of the code to compare with")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.runs < 2:
        raise SystemExit("refusing to print a median of a single run: use --runs 2 or more")
    with tempfile.TemporaryDirectory(prefix="volt-compact-") as tmp:
        work = Path(tmp)
        baseline = work / "baseline"
        baseline.mkdir()
        archive = subprocess.run(["git", "archive", args.baseline], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(baseline)], input=archive, check=True)
        repo = make_repo(args.package, work)
        shutil.copy(args.volt_toml, repo / ".volt.toml")
        subprocess.run([*GIT, "add", ".volt.toml"], cwd=repo, check=True)
        subprocess.run([*GIT, "commit", "-q", "-m", "Add .volt.toml"], cwd=repo, check=True)
        started = time.perf_counter()
        old = measure(baseline, repo, work, "baseline", args.runs)
        new = measure(ROOT, repo, work, "this tree", args.runs)
        if old["tests"] != new["tests"]:
            raise SystemExit(f"the two builds differ: {old['tests']} and {new['tests']} test results")
        rows = [("package, test results", f"{args.package}, {new['tests']:,}"),
                ("baseline revision", args.baseline),
                ("Redis grew by the build (used_memory), baseline → this tree",
                 f"{old['grown'] / MIB:.2f} MiB → {new['grown'] / MIB:.2f} MiB ({new['grown'] / old['grown']:.3f})"),
                ("  of it the build's own keys (MEMORY USAGE)", f"{old['own']:,} → {new['own']:,} bytes"),
                ("  of it the repository's durations", f"{old['durations']:,} → {new['durations']:,} bytes")]
        for name, old_s in old["times"].items():
            new_s = new["times"][name]
            rows.append((f"{name}, median ms (ratio)",
                         f"{old_s * 1000:.0f} → {new_s * 1000:.0f} ({new_s / old_s:.2f})"))
        print_table(rows)
        goal = new["grown"] <= MIB
        print(f"{args.package}: one {new['tests']:,}-test build adds {new['grown'] / MIB:.2f} MiB to Redis "
              f"(baseline {old['grown'] / MIB:.2f} MiB; goal ≤ 1 MiB {'met' if goal else 'MISSED'}); "
              f"{time.perf_counter() - started:.0f} s")
    sys.exit(0 if goal else 1)


if __name__ == "__main__":
    main()
