"""Volt on a project we did not write: per-test agreement with stock unittest, and build overhead.

    python bench/real_project.py [--package more-itertools==11.2.1] [--runs 3]

Downloads the package's source distribution from the package index, makes it a git repository,
then, side by side in one run: builds it with `volt up --burst` against a private redis-server and
runs stock unittest on the same tree. Prints per-test agreement (every id and outcome) and the ratio
of Volt's push-to-result time to bare `python -m unittest discover`, each the median of --runs runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from table import print_table  # noqa: E402
from unittest_oracle import run_unittest  # noqa: E402

from voltci.redis_server import RedisServer  # noqa: E402

GIT = ["git", "-c", "user.name=Bench", "-c", "user.email=bench@volt.invalid", "-c", "safe.directory=*"]


def make_repo(package: str, workdir: Path) -> Path:
    dl = workdir / "dl"
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                    "-d", str(dl), package], check=True, timeout=300)
    archive = next(dl.iterdir())
    with tarfile.open(archive) as tar:
        tar.extractall(workdir / "src", filter="data")
    repo = next((workdir / "src").iterdir())
    subprocess.run([*GIT, "init", "-q", "-b", "main"], cwd=repo, check=True)
    subprocess.run([*GIT, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", f"{archive.name}"], cwd=repo, check=True)
    return repo


def time_bare(repo: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "unittest", "discover"], cwd=repo, capture_output=True, timeout=1800)
    return time.perf_counter() - started


def time_volt(repo: Path, workdir: Path, run: int) -> tuple[float, dict]:
    """One cold build (fresh Redis, fresh mirror cache): push → result, and the JSON report."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOLT_")}
    env.update({"PYTHONPATH": str(ROOT), "VOLT_WORKSPACE_DIR": str(workdir / f"ws{run}")})
    with RedisServer(workdir / f"redis{run}") as server:
        started = time.perf_counter()
        up = subprocess.run([sys.executable, "-m", "voltci", "up", "--repo", str(repo), "--burst", "--workers", "1",
                             "--redis-url", server.url], env=env, capture_output=True, text=True, timeout=1800)
        elapsed = time.perf_counter() - started
        if up.returncode != 0:
            raise SystemExit(f"volt up failed: {up.stderr[-2000:]}")
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
        rep = subprocess.run([sys.executable, "-m", "voltci", "report", sha, "--json", "--redis-url", server.url],
                             env=env, capture_output=True, text=True, timeout=300)
    return elapsed, json.loads(rep.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", default="more-itertools==11.2.1")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if args.runs < 2:
        raise SystemExit("refusing to print a ratio from a single run: use --runs 2 or more")
    with tempfile.TemporaryDirectory(prefix="volt-bench-") as tmp:
        workdir = Path(tmp)
        repo = make_repo(args.package, workdir)
        oracle = run_unittest(repo)
        bare, volt, report = [], [], None
        for run in range(args.runs):  # alternate, so both see the same machine load
            bare.append(time_bare(repo))
            elapsed, report = time_volt(repo, workdir, run)
            volt.append(elapsed)
        ours = {t["id"]: t["outcome"] for t in report["tests"]}
        disagreements = sorted(set(ours.items()) ^ set(oracle.outcomes.items()))
        counts = report["counts"]
        rows = [
            ("package", args.package),
            ("tests run (unittest / volt)", f"{oracle.tests_run} / {counts['total']}"),
            ("failures, errors, skipped (unittest)", f"{oracle.failures}, {oracle.errors}, {oracle.skipped}"),
            ("failures, errors, skipped (volt)", f"{counts['failed']}, {counts['errors']}, {counts['skipped']}"),
            ("per-test disagreements", str(len(disagreements))),
            ("bare unittest, median s", f"{statistics.median(bare):.2f}"),
            ("volt up --burst (cold), median s", f"{statistics.median(volt):.2f}"),
        ]
        print_table(rows)
        for item in disagreements[:20]:
            print("  differs:", item)
        ratio = statistics.median(volt) / statistics.median(bare)
        print(f"{args.package}: {len(ours)} results, {len(disagreements)} disagreements with unittest; "
              f"volt cold build / bare unittest = {ratio:.2f} (median of {args.runs})")


if __name__ == "__main__":
    main()
