"""Matrix builds on a project we did not write: per-leg agreement with stock unittest run by hand on
each interpreter, and the wall time of a matrix against its legs run one by one.

    python bench/matrix.py [--package more-itertools==10.5.0] [--runs 3] [--wall 3.11,3.12,3.13]

Downloads the package's source distribution, makes it a git repository with a `.volt.toml` whose
`[matrix] python` lists every interpreter this host has from 3.9 up (`[tests] retries = 0`, so that
each outcome is the first run's, as by hand), and:

1. builds it with `volt up --burst --workers 2` and, on each interpreter, runs stock unittest on the
   same tree by hand; prints each leg's counts and its per-test disagreements (every id and outcome);
2. times (--runs times, alternating) a 3-leg matrix of the `--wall` interpreters on 2 runners, and
   each of those legs alone on 1 runner (the same commit with only that version in `[matrix]`), each
   on a fresh Redis and workspace; prints the matrix's push-to-result time against the sum and the
   maximum of the legs' own, and the same for the builds' own durations (start to end, which leave
   out starting Redis and the runners).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from real_project import GIT, make_repo  # noqa: E402
from table import print_table  # noqa: E402
from unittest_oracle import run_unittest  # noqa: E402

from voltci.redis_server import RedisServer  # noqa: E402
from voltci.runner.interpreters import interpreters  # noqa: E402


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def commit_matrix(repo: Path, pythons: list[str]) -> str:
    """Commit a .volt.toml whose matrix is `pythons`; the new sha."""
    (repo / ".volt.toml").write_text(f"[matrix]\npython = {json.dumps(pythons)}\n\n[tests]\nretries = 0\n")
    subprocess.run([*GIT, "add", ".volt.toml"], cwd=repo, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", f"matrix {' '.join(pythons)}"], cwd=repo, check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()


def build(repo: Path, sha: str, workdir: Path, name: str, workers: int) -> tuple[float, dict]:
    """One cold build with `volt up --burst` (fresh Redis, fresh workspace): push-to-result seconds and
    the JSON report."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOLT_")}
    env.update({"PYTHONPATH": str(ROOT), "VOLT_WORKSPACE_DIR": str(workdir / f"ws-{name}")})
    with RedisServer(workdir / f"redis-{name}") as server:
        started = time.perf_counter()
        up = subprocess.run([sys.executable, "-m", "voltci", "up", "--repo", str(repo), "--burst", "--workers",
                             str(workers), "--redis-url", server.url], env=env, capture_output=True, text=True,
                            timeout=1800)
        elapsed = time.perf_counter() - started
        if up.returncode not in (0, 1):
            raise SystemExit(f"volt up failed ({up.returncode}): {up.stderr[-2000:]}")
        rep = subprocess.run([sys.executable, "-m", "voltci", "report", sha, "--json", "--redis-url", server.url],
                             env=env, capture_output=True, text=True, timeout=300)
    if not rep.stdout:
        raise SystemExit(f"volt report failed: {rep.stderr[-2000:]}")
    return elapsed, json.loads(rep.stdout)


def agreement(repo: Path, workdir: Path, pythons: dict[str, str]) -> None:
    sha = commit_matrix(repo, list(pythons))
    elapsed, report = build(repo, sha, workdir, "all", workers=2)
    rows = [("legs", f"{len(report['legs'])} ({', '.join(leg['name'] for leg in report['legs'])}), "
                     f"built in {elapsed:.1f} s on 2 runners, status {report['status']}")]
    mismatched = 0
    for leg in report["legs"]:
        python = leg["python"]
        oracle = run_unittest(repo, pythons[python])
        ours = {t["id"]: t["outcome"] for t in report["tests"] if t["leg"] == leg["name"]}
        differs = sorted(set(ours.items()) ^ set(oracle.outcomes.items()))
        mismatched += len(differs)
        c = leg["counts"]
        rows.append((f"{leg['name']} ({pythons[python]})",
                     f"volt {c['total']} run, {c['failed']} failed, {c['errors']} errors, {c['skipped']} skipped | "
                     f"by hand {oracle.tests_run} run, {oracle.failures} failed, {oracle.errors} errors, "
                     f"{oracle.skipped} skipped | {len(differs)} per-test disagreements"))
        for item in differs[:10]:
            rows.append(("  differs", str(item)))
    print_table(rows)
    print(f"per-leg agreement: {len(report['legs'])} legs, {mismatched} per-test disagreements with stock unittest "
          f"run by hand on each interpreter")


def wall(repo: Path, workdir: Path, legs: list[str], runs: int) -> None:
    matrix, alone = [], {python: [] for python in legs}  # (push-to-result s, build duration s)
    for run in range(runs):  # alternating, so that all see the same machine load
        sha = commit_matrix(repo, legs)
        elapsed, report = build(repo, sha, workdir, f"matrix{run}", workers=2)
        matrix.append((elapsed, report["duration_s"]))
        for python in legs:
            sha = commit_matrix(repo, [python])
            elapsed, report = build(repo, sha, workdir, f"{python}-{run}", workers=1)
            alone[python].append((elapsed, report["duration_s"]))

    def median(pairs: list[tuple[float, float]], which: int) -> float:
        return statistics.median(pair[which] for pair in pairs)

    rows = []
    for which, what in ((0, "push to result (volt up --burst)"), (1, "build duration (start to end)")):
        each = {python: median(alone[python], which) for python in legs}
        whole = median(matrix, which)
        rows += [(f"{what}: {len(legs)}-leg matrix on 2 runners, median s", f"{whole:.2f}"),
                 (f"{what}: legs one by one, median s", ", ".join(f"py{p} {s:.2f}" for p, s in each.items())),
                 (f"{what}: matrix / sum of legs", f"{whole / sum(each.values()):.2f}"),
                 (f"{what}: matrix / longest leg", f"{whole / max(each.values()):.2f}")]
    print_table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", default="more-itertools==10.5.0")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--wall", default="", help="the 3 interpreters of the timed matrix (default: the newest 3)")
    args = parser.parse_args()
    if args.runs < 2:
        raise SystemExit("refusing to print a ratio from a single run: use --runs 2 or more")
    pythons = {v: p for v, p in interpreters().items() if version_key(v) >= (3, 9)}
    legs = args.wall.split(",") if args.wall else sorted(pythons, key=version_key)[-3:]
    if len(legs) != 3 or not set(legs) <= set(pythons):
        raise SystemExit(f"--wall needs 3 of this host's interpreters ({', '.join(pythons)}), got {legs}")
    with tempfile.TemporaryDirectory(prefix="volt-matrix-") as tmp:
        workdir = Path(tmp)
        repo = make_repo(args.package, workdir)
        print(f"{args.package} on python {', '.join(pythons)}")
        agreement(repo, workdir, pythons)
        wall(repo, workdir, legs, args.runs)


if __name__ == "__main__":
    main()
