"""How soon a build says what broke: injected regressions, built with the pre-pass and without it.

    python bench/first_failure.py [--projects NAME ...] [--mutants 20] [--seed 1] [--strict]
    python bench/first_failure.py --quick            # 3 mutants of jinja2: a smoke run

On real suites (more-itertools' unittest suite, packaging's and jinja2's pytest suites), each made a
git repository from its source distribution (bench/real_project.py's make_repo), faults are injected
into the package's own modules one at a time: a comparison, a constant or a return value changed
(bench/mutants.py: --mutants per project, chosen by --seed, each kept only if the suite run by hand
fails with it; the verdicts are cached under the system temp dir). For each fault, three commits:

- a passing one (the sdist for the first fault, then the previous fault taken out);
- (a) "fault in a changed module": the fault, in the module the commit changes;
- (b) "failed in the previous build": one more commit that touches only the README, so the tests that
  failed in (a) fail again.

Two Volts (observer, scheduler, one `volt worker`, each with a private redis-server from
voltci.redis_server) build every commit of that one history in turn, woken by `volt notify`: one with
the pre-pass as configured by default, the other with `VOLT_PREPASS=false`, the suite in its normal
order. Which goes first alternates from commit to commit. Each builds the sdist once first, to make its
environment; that build is not counted.

It prints, per project and situation, the median and the worst of (seconds to the first failure with
the pre-pass ÷ without), counted from the start of the build's tests (`first_failure_in_tests_s` of
`volt report --json`: what the order of the tests decides; the checkout and setup before them take the
same on both sides), the same from the build's start (`first_failure_s`) beside it, and the median of
(the build's `duration_s` with ÷ without), passing builds too; the goals are printed beside them:
median ≤ 0.2 for a fault in a changed module, ≤ 0.1 for a test that failed in the previous build,
total ≤ 1.05. With --strict it exits 1 when a goal is missed.

Verdicts: every injected build's test-by-test outcomes with the pre-pass must equal those without
(same ids, same outcomes, same status); any difference is printed and the script exits 1. A test the
pre-pass saw fail that then passed in the suite (the build's `order_dependent`) is printed as a note.

Every wait has a timeout (--build-timeout per build); the Volts' processes, the Redis servers and the
temp dir are removed on the way out, on Ctrl-C and on SIGTERM too; a run interrupted, or stopped by a build
that did not end, prints what it measured until then.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from fast import Volt  # noqa: E402
from mutants import Mutant, Suite, good_mutants  # noqa: E402
from real_project import GIT, make_repo  # noqa: E402
from table import print_table  # noqa: E402

from voltci import keys  # noqa: E402
from voltci.redis_server import RedisServer  # noqa: E402
from voltci.store import Store  # noqa: E402

PIP = ("python", "-m", "pip", "install", "-q")


@dataclass(frozen=True)
class Project:
    requirement: str
    package: str  # the package's directory in the sdist, where faults go
    suite: Suite


PROJECTS = {
    "more-itertools": Project("more-itertools==11.2.1", "more_itertools",
                              Suite(((*PIP, "-e", "."),), ("python", "-m", "unittest"), "unittest", "tests")),
    "packaging": Project("packaging==25.0", "src/packaging",
                         Suite(((*PIP, "-r", "tests/requirements.txt"), (*PIP, "-e", ".")), ("python", "-m", "pytest"),
                               "pytest", "tests")),
    "jinja2": Project("jinja2==3.1.6", "src/jinja2",
                      Suite(((*PIP, "-r", "requirements/tests.txt"), (*PIP, "-e", ".")),
                            ("python", "-m", "pytest", "--tb=short"), "pytest", "tests")),
}
QUICK = ("jinja2", 3)
SITUATIONS = {"passing": "passing build (after a fault is taken out)",
              "changed": "fault in a changed module",
              "previous": "failed in the previous build"}
GOALS = {"changed": 0.2, "previous": 0.1}
TOTAL_GOAL = 1.05
NAME = "suite"  # the repository's name in both Volts


@dataclass
class Built:
    """One build of one commit by one Volt, as its record and report say."""

    status: str
    duration_s: float
    first_failure_s: float | None  # from the build's start: its checkout and setup too
    in_tests_s: float | None  # from the start of its tests: what their order decides
    tests: dict[str, str]  # id -> outcome (a flaky test: "passed (flaky)")
    order_dependent: list[str] = field(default_factory=list)
    reason: str = ""


@dataclass
class Pair:
    project: str
    situation: str
    label: str
    with_prepass: Built
    without: Built


class Side:
    """One Volt of the two: its processes, its Redis, and how it builds a commit."""

    def __init__(self, work: Path, server: RedisServer, prepass: bool, build_timeout: float):
        self.volt = Volt(work, server)
        if not prepass:
            self.volt.env["VOLT_PREPASS"] = "false"
        self.prepass, self.build_timeout = prepass, build_timeout
        self.store = Store(self.volt.conn)

    def build(self, sha: str) -> Built:
        """`volt notify`, then the build's record read every 50 ms until it ends; then its report."""
        build_id = keys.build_id(NAME, sha)
        subprocess.run([sys.executable, "-m", "voltci", "notify", "--repo", NAME], env=self.volt.env, check=True,
                       capture_output=True, timeout=60)
        deadline = time.monotonic() + self.build_timeout
        while True:
            record = self.store.records.get_build(build_id)
            if record is not None and record.status.is_final:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"the build of {sha[:10]} ({'with' if self.prepass else 'without'} the pre-pass) "
                                 f"did not end within {self.build_timeout:.0f} s")
            time.sleep(0.05)
        report = subprocess.run([sys.executable, "-m", "voltci", "report", sha, "--json", "--repo", NAME],
                                env=self.volt.env, capture_output=True, text=True, timeout=300)
        try:
            data = json.loads(report.stdout)
        except json.JSONDecodeError:
            raise SystemExit(f"volt report {sha[:10]} --json gave no JSON: {report.stderr.strip()[-300:]}") from None
        tests = {t["id"]: t["outcome"] + (" (flaky)" if t.get("flaky") else "") for t in data.get("tests", [])}
        in_tests = data.get("first_failure_in_tests_s")
        first = data.get("first_failure_s")
        return Built(data["status"], float(data.get("duration_s") or 0.0), None if first is None else float(first),
                     None if in_tests is None else float(in_tests), tests,
                     list(data.get("order_dependent") or []), str(data.get("reason") or ""))

    def stop(self) -> None:
        self.volt.stop()


def commit(repo: Path, message: str) -> str:
    subprocess.run([*GIT, "add", "-A"], cwd=repo, check=True, timeout=60)
    subprocess.run([*GIT, "commit", "-q", "--allow-empty", "-m", message], cwd=repo, check=True, timeout=60)
    return subprocess.run([*GIT, "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()


def touch_readme(repo: Path, n: int) -> None:
    readme = next((p for p in sorted(repo.glob("README*")) if p.is_file()), repo / "README.txt")
    with readme.open("a", encoding="utf-8") as out:
        out.write(f"\n.. note {n}\n")


def run_project(name: str, work: Path, mutants_wanted: int, seed: int, build_timeout: float,
                pairs: list[Pair]) -> None:
    """Build the project's history on both sides; each commit's two builds are added to `pairs` as they end."""
    project = PROJECTS[name]
    print(f"[{name}] {project.requirement}: the repository, and {mutants_wanted} faults (seed {seed})", flush=True)
    repo = make_repo(project.requirement, work / "src")
    mutants = good_mutants(project.requirement, repo, project.package, project.suite, seed, mutants_wanted, work,
                           say=lambda line: print(f"[{name}] {line}", flush=True))
    base = subprocess.run([*GIT, "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()
    with RedisServer(work / "redis-with") as with_server, RedisServer(work / "redis-without") as without_server:
        sides = [Side(work / "volt-with", with_server, True, build_timeout),
                 Side(work / "volt-without", without_server, False, build_timeout)]
        try:
            for side in sides:
                side.volt.watch(repo, NAME)
            turn = 0

            def both(sha: str) -> tuple[Built, Built]:
                nonlocal turn
                order = sides if turn % 2 == 0 else sides[::-1]
                turn += 1
                done = {id(side): side.build(sha) for side in order}
                return done[id(sides[0])], done[id(sides[1])]

            print(f"[{name}] the sdist, once on each side (environments made; not counted)", flush=True)
            for built in both(base):
                if built.status != "passed":
                    why = built.reason or "no reason given"
                    raise SystemExit(f"{name}: the sdist's build {built.status} in Volt ({why}): nothing to inject")
            previous: Mutant | None = None
            for n, mutant in enumerate(mutants):
                if previous is not None:
                    module = repo / previous.path
                    module.write_text(subprocess.run([*GIT, "show", f"{base}:{previous.path}"], cwd=repo,
                                                     capture_output=True, text=True, check=True).stdout,
                                      encoding="utf-8")
                    sha = commit(repo, f"take out fault {n - 1}")
                    pairs.append(Pair(name, "passing", f"without fault {n - 1}", *both(sha)))
                module = repo / mutant.path
                module.write_text(mutant.apply(module.read_text(encoding="utf-8")), encoding="utf-8")
                sha = commit(repo, f"fault {n}: {mutant.label()}")
                pairs.append(Pair(name, "changed", mutant.label(), *both(sha)))
                touch_readme(repo, n)
                sha = commit(repo, f"README after fault {n}")
                pairs.append(Pair(name, "previous", mutant.label(), *both(sha)))
                print(f"[{name}] {n + 1}/{len(mutants)} {mutant.label()}: {progress_line(pairs[-2:])}", flush=True)
                previous = mutant
        finally:
            for side in sides:
                side.stop()


def progress_line(pairs: list[Pair]) -> str:
    def ff(built: Built) -> str:
        return "-" if built.in_tests_s is None else f"{built.in_tests_s:.1f}"
    return "; ".join(f"{p.situation}: first failure {ff(p.with_prepass)} s with / {ff(p.without)} s without "
                     f"(from the start of the tests), {p.with_prepass.duration_s:.1f} / {p.without.duration_s:.1f} s "
                     "in all, " + (f"{len(differences(p))} differences" if differences(p) else "outcomes equal")
                     for p in pairs)


# ------------------------------------------------------------------ figures and verdicts

def seconds(built: Built, since: str) -> float | None:
    """Seconds to the first failure: from the start of the tests ("tests") or of the build ("build")."""
    return built.in_tests_s if since == "tests" else built.first_failure_s


def ff_ratios(pairs: list[Pair], since: str) -> list[float]:
    found = [(seconds(p.with_prepass, since), seconds(p.without, since)) for p in pairs]
    return [ours / theirs for ours, theirs in found if ours is not None and theirs]


def total_ratios(pairs: list[Pair]) -> list[float]:
    return [p.with_prepass.duration_s / p.without.duration_s for p in pairs if p.without.duration_s > 0]


def differences(pair: Pair) -> list[str]:
    """How the build with the pre-pass differs from the one without, test by test."""
    ours, theirs = pair.with_prepass, pair.without
    found = [f"status {ours.status} with, {theirs.status} without"] if ours.status != theirs.status else []
    for test_id in sorted(set(ours.tests) | set(theirs.tests)):
        mine, plain = ours.tests.get(test_id, "-"), theirs.tests.get(test_id, "-")
        if mine != plain:
            found.append(f"{test_id}: {mine} with the pre-pass, {plain} without")
    return found


def figures(pairs: list[Pair], projects: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """The table's rows, and the goals missed. The goals on the first failure are judged from the start
    of the tests: the checkout and setup before them take the same with the pre-pass and without."""
    rows: list[tuple[str, str]] = []
    missed: list[str] = []
    for name in projects:
        for situation, title in SITUATIONS.items():
            mine = [p for p in pairs if p.project == name and p.situation == situation]
            if not mine:
                continue
            goal = GOALS.get(situation)
            if goal is not None:
                ratios = ff_ratios(mine, "tests")
                median = statistics.median(ratios) if ratios else float("nan")
                rows.append((f"{name}, {title}: first failure with ÷ without, from the start of the tests, "
                             f"median / worst (goal median ≤ {goal})",
                             f"{median:.2f} / {max(ratios, default=float('nan')):.2f}  "
                             f"({len(ratios)} of {len(mine)} builds)"))
                rows.append(("  seconds from the start of the tests, with / without, median",
                             f"{_median([s for p in mine if (s := p.with_prepass.in_tests_s) is not None])} / "
                             f"{_median([s for p in mine if (s := p.without.in_tests_s) is not None])}"))
                from_start = ff_ratios(mine, "build")
                rows.append(("  from the build's start (checkout and setup too): ratio median; seconds with / without",
                             f"{_median(from_start)}; "
                             f"{_median([s for p in mine if (s := p.with_prepass.first_failure_s) is not None])} / "
                             f"{_median([s for p in mine if (s := p.without.first_failure_s) is not None])}"))
                if not median <= goal:
                    missed.append(f"{name}, {title}: first failure {median:.2f} (goal ≤ {goal})")
            totals = total_ratios(mine)
            total = statistics.median(totals) if totals else float("nan")
            rows.append((f"{name}, {title}: total build time with ÷ without, median (goal ≤ {TOTAL_GOAL})",
                         f"{total:.2f}  (with {_median([p.with_prepass.duration_s for p in mine])} s, without "
                         f"{_median([p.without.duration_s for p in mine])} s, median)"))
            if not total <= TOTAL_GOAL:
                missed.append(f"{name}, {title}: total {total:.2f} (goal ≤ {TOTAL_GOAL})")
    return rows, missed


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else "-"


def report(pairs: list[Pair], projects: list[str], strict: bool) -> int:
    rows, missed = figures(pairs, projects)
    print()
    print_table(rows)
    injected = [p for p in pairs if p.situation != "passing"]
    differing = [(p, differences(p)) for p in injected]
    differing = [(p, found) for p, found in differing if found]
    for pair in injected:
        for test_id in pair.with_prepass.order_dependent:
            print(f"  note: {pair.project} {pair.label} ({pair.situation}): {test_id} failed in the pre-pass and "
                  f"passed in the suite (order-dependent)")
    for pair in injected:
        for side, built in (("without", pair.without), ("with", pair.with_prepass)):
            if built.in_tests_s is None:
                failing = sum(outcome in ("failed", "error") for outcome in built.tests.values())
                print(f"  note: {pair.project} {pair.label} ({pair.situation}): no first failure known {side} the "
                      f"pre-pass (build {built.status}, {failing} failing tests); left out of the ratios")
    for pair, found in differing:
        print(f"  DIFFERS: {pair.project} {pair.label} ({pair.situation}):")
        for line in found[:20]:
            print(f"    {line}")
        if len(found) > 20:
            print(f"    ... and {len(found) - 20} more")
    tests = sum(len(p.without.tests) for p in injected)
    print(f"\nfirst failure: {len(injected) - len(differing)} of {len(injected)} injected builds with the pre-pass "
          f"equal to the build without it, test by test ({tests} test results compared)"
          + (f"; goals missed: {'; '.join(missed)}" if missed else "; every goal met"))
    if differing:
        return 1
    return 1 if strict and missed else 0


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--projects", nargs="+", metavar="NAME", default=list(PROJECTS),
                        help=f"of {', '.join(PROJECTS)} (default: all)")
    parser.add_argument("--mutants", type=int, default=20, help="faults per project (default 20)")
    parser.add_argument("--seed", type=int, default=1, help="which faults are chosen (default 1)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK[1]} faults of {QUICK[0]} only: a smoke run")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument("--build-timeout", type=float, default=900.0, help="seconds a build may take (default 900)")
    args = parser.parse_args()
    unknown = sorted(set(args.projects) - set(PROJECTS))
    if unknown:
        raise SystemExit(f"first_failure: unknown project(s) {', '.join(unknown)}; known: {', '.join(PROJECTS)}")
    if args.mutants < 1 or args.build_timeout <= 0:
        raise SystemExit("first_failure: --mutants must be at least 1 and --build-timeout above 0")
    projects, wanted = ([QUICK[0]], QUICK[1]) if args.quick else (list(dict.fromkeys(args.projects)), args.mutants)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started where Ctrl-C was ignored
    work = Path(tempfile.mkdtemp(prefix="volt-first-failure-"))
    code = 1
    pairs: list[Pair] = []
    try:
        for name in projects:
            run_project(name, work / name, wanted, args.seed, args.build_timeout, pairs)
        code = report(pairs, projects, args.strict)
    except (KeyboardInterrupt, SystemExit) as stopped:
        if pairs:
            print(f"\nfirst_failure: stopped ({stopped or 'interrupted'}); what was measured until then:")
            report(pairs, projects, args.strict)
        print("first_failure: stopped; processes and temp files removed", file=sys.stderr)
        code = 130 if isinstance(stopped, KeyboardInterrupt) else 1
        if isinstance(stopped, SystemExit) and stopped.code not in (None, 0, 1):
            print(stopped.code, file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    os.environ.pop("VOLT_PREPASS", None)  # each side says its own
    main()
