"""A real project with its own .volt.toml, built by Volt and run by hand, side by side; and how fast
Volt stores, reports and renders its results.

    python bench/project_suite.py --package dateparser==1.5.0 --volt-toml bench/projects/dateparser.toml
    python bench/project_suite.py --package Markdown==3.8 --volt-toml bench/projects/markdown.toml

Downloads the package's source distribution, makes it a git repository with the given .volt.toml,
then: (1) by hand, in a fresh virtual environment, runs the toml's setup steps and its test command
(reading the JUnit file with ElementTree) or stock unittest discovery; (2) builds the same commit with
`volt up --burst` against a private redis-server. It prints both counts, the per-test disagreements
(id by id, outcome by outcome), and the times Volt takes to store the results, report them as JSON
and JUnit, and render the build page, each the median of --runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

import redis  # noqa: E402
from real_project import GIT, make_repo  # noqa: E402
from table import print_table  # noqa: E402
from unittest_oracle import run_unittest  # noqa: E402

from voltci import report  # noqa: E402
from voltci.config import Settings  # noqa: E402
from voltci.models import Build, RunOutcome, Status  # noqa: E402
from voltci.redis_server import RedisServer  # noqa: E402
from voltci.store import Store  # noqa: E402


def by_hand(repo: Path, config: dict, workdir: Path) -> tuple[dict[str, str], float]:
    """The suite run as a developer would: a fresh venv, the setup steps, the test command."""
    tree = workdir / "by-hand"
    subprocess.run([*GIT, "clone", "-q", str(repo), str(tree)], check=True)
    venv = workdir / "by-hand-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**os.environ, "VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env = {k: v for k, v in env.items() if not k.startswith("VOLT_")}
    tests = config.get("tests", {})
    for step in tests.get("setup", []):
        subprocess.run(step, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL, timeout=1800)
    started = time.perf_counter()
    if "command" in tests:
        subprocess.run(tests["command"], cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=3600)
        elapsed = time.perf_counter() - started
        return junit_outcomes(tree / tests["junit"]), elapsed
    oracle = run_unittest(tree, python=str(venv / "bin" / "python"), start_dir=tests.get("start_dir", "."))
    return dict(oracle.outcomes), time.perf_counter() - started


def junit_outcomes(path: Path) -> dict[str, str]:
    outcomes: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        test_id = f"{case.get('classname')}.{case.get('name')}" if case.get("classname") else case.get("name", "")
        tags = {child.tag for child in case}
        outcome = "failed" if "failure" in tags else "error" if "error" in tags else \
            "skipped" if "skipped" in tags else "passed"
        while test_id in outcomes:
            test_id += " [2]" if not test_id.endswith("]") else ""
            break
        outcomes[test_id] = outcome
    return outcomes


def build_with_volt(repo: Path, workdir: Path, server: RedisServer) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOLT_")}
    env.update({"PYTHONPATH": str(ROOT), "VOLT_WORKSPACE_DIR": str(workdir / "ws"), "VOLT_RETRIES": "0"})
    started = time.perf_counter()
    up = subprocess.run([sys.executable, "-m", "voltci", "up", "--repo", str(repo), "--burst", "--workers", "1",
                         "--redis-url", server.url, "--timeout", "3600"], env=env, capture_output=True, text=True,
                        timeout=3700)
    if up.returncode != 0:
        raise SystemExit(f"volt up failed: {up.stderr[-3000:]}")
    sha = subprocess.run([*GIT, "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    return time.perf_counter() - started, sha


def timed(func, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", required=True)
    parser.add_argument("--volt-toml", required=True, type=Path)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if args.runs < 2:
        raise SystemExit("refusing to print a median of a single run: use --runs 2 or more")
    config = tomllib.loads(args.volt_toml.read_text())
    with tempfile.TemporaryDirectory(prefix="volt-suite-") as tmp:
        workdir = Path(tmp)
        repo = make_repo(args.package, workdir)
        shutil.copy(args.volt_toml, repo / ".volt.toml")
        subprocess.run([*GIT, "add", ".volt.toml"], cwd=repo, check=True)
        subprocess.run([*GIT, "commit", "-q", "-m", "Add .volt.toml"], cwd=repo, check=True)
        hand, hand_s = by_hand(repo, config, workdir)
        with RedisServer(workdir / "redis") as server:
            volt_s, sha = build_with_volt(repo, workdir, server)
            conn = redis.Redis.from_url(server.url, decode_responses=True)
            store = Store(conn)
            build_id = store.records.resolve_commit(sha)
            build = store.records.get_build(build_id)
            tests = store.records.get_tests(build_id)
            ours = {t.id: t.report_dict()["outcome"] for t in tests}

            def store_results() -> None:
                copy = Build(id=f"copy-{time.perf_counter_ns()}", repo="copy", url="", commit="0" * 40, branch="b")
                store.builds.add(copy, 0)
                store.builds.start_attempt(copy.id, 1, "bench")
                store.builds.finish(copy.id, 1, "bench", RunOutcome(Status.PASSED, tests, build.counts))

            store_s = timed(store_results, args.runs)
            json_s = timed(lambda: json.dumps(report.as_dict(build, store.records.get_tests(build_id),
                                                             store.records.get_attempts(build_id))), args.runs)
            junit_s = timed(lambda: report.as_junit(build, store.records.get_tests(build_id)), args.runs)
            from voltci.web import create_app
            client = create_app(Settings(redis_url=server.url)).test_client()
            page = f"/build/{build.repo}/{sha}"
            assert client.get(page).status_code == 200
            page_s = timed(lambda: client.get(page), args.runs)
            cli_s = timed(lambda: subprocess.run(
                [sys.executable, "-m", "voltci", "report", sha, "--json", "--redis-url", server.url],
                env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=600), args.runs)
        disagreements = sorted(set(ours.items()) ^ set(hand.items()))
        c = build.counts
        hand_counts = {o: sum(1 for v in hand.values() if v == o) for o in ("passed", "failed", "error", "skipped")}
        rows = [
            ("package", args.package),
            ("build status in Volt", f"{build.status.value} {build.reason}".strip()),
            ("results by hand (passed/failed/error/skipped)",
             f"{len(hand)} ({hand_counts['passed']}/{hand_counts['failed']}/{hand_counts['error']}/"
             f"{hand_counts['skipped']})"),
            ("results in Volt (passed/failed/error/skipped)",
             f"{len(ours)} ({c.passed}/{c.failed}/{c.errors}/{c.skipped})"),
            ("per-test disagreements", str(len(disagreements))),
            ("tests by hand, s", f"{hand_s:.1f}"),
            ("volt up --burst (cold: venv, setup, tests), s", f"{volt_s:.1f}"),
            ("store all results (one transaction), median ms", f"{store_s * 1000:.0f}"),
            ("report as JSON (read + build), median ms", f"{json_s * 1000:.0f}"),
            ("report as JUnit XML, median ms", f"{junit_s * 1000:.0f}"),
            ("render the build page, median ms", f"{page_s * 1000:.0f}"),
            ("`volt report --json` command, median ms", f"{cli_s * 1000:.0f}"),
        ]
        print_table(rows)
        for item in disagreements[:20]:
            print("  differs:", item)
        print(f"{args.package}: {len(ours)} results in Volt, {len(hand)} by hand, {len(disagreements)} disagreements; "
              f"store {store_s * 1000:.0f} ms, JSON {json_s * 1000:.0f} ms, page {page_s * 1000:.0f} ms")


if __name__ == "__main__":
    main()
