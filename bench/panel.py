"""Zero-configuration builds of real projects, test by test against their maintainers' own command.

    python bench/panel.py                          # every project of bench/panel.toml with a [project.hand]
    python bench/panel.py --only six iniconfig     # some of them
    python bench/panel.py --list                   # the panel: each project's convention and command by hand

For each project of bench/panel.toml that has a `[project.hand]` table, from its source distribution
made into a git repository (bench/real_project.py's make_repo), with NO .volt.toml:

1. by hand: a clone of that repository, a fresh virtual environment, the maintainers' own setup steps
   and test command as recorded in `[project.hand]` (from their tox, nox or CI configuration; coverage
   wrappers and --cov options left out) — or, for a tox environment of several commands, each of its
   commands in order and in its directory, stopping where tox stops (`commands`) —, its per-test
   results read from pytest's own `--junitxml`
   file, or, for `python -m unittest ...`, from unittest's own result object: the same command line
   given to `unittest.main(module=None)` (what `python -m unittest` runs) with a runner that keeps the
   result (none of Volt's code);
2. through Volt: `volt up --burst --workers 1 --repo REPO` against a private redis-server, then
   `volt report SHA --json`;
3. compared test by test. unittest ids are compared as they are. A pytest JUnit file names a test by
   (classname, name), pytest's own mangling of the node id (`tests/test_x.py::T::test_y[1]` ->
   `tests.test_x.T`, `test_y[1]`); Volt's node ids are mangled the same way and must give exactly the
   file's entries, outcome by outcome. Volt maps xfail to skipped and xpass to passed, as the JUnit file
   does; Volt's teardown error, an entry `<id> [teardown]` of its own, is in the JUnit file an error of
   the test (or, after a failed call, a second entry). An id longer than Volt keeps of an id (1024 characters) is
   compared as Volt stores it, its head and a hash of the whole.

It prints one row per project: tests by hand / in Volt, disagreements, seconds by hand (venv, setup,
tests) / through Volt (`volt up --burst`: venv, setup, tests, all cold), and the verdict; then the
first disagreements of each project. A project recorded with `cannot = "why"` is expected to disagree
and is listed with why; the script exits 1 if any other project disagrees.

Setup steps and tests run on this machine, by hand outside any sandbox: use a machine you do not mind
them running on. Runs one project at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from real_project import GIT, make_repo  # noqa: E402

from voltci.redis_server import RedisServer  # noqa: E402
from voltci.store.budget import ID_MAX, clip_id  # noqa: E402

PANEL = ROOT / "bench" / "panel.toml"
TEARDOWN = " [teardown]"
REPEAT = re.compile(r" \[(\d+)\]$")  # Volt's name for a node id pytest ran again: `<id> [2]`

# `python -m unittest ARGS`, with unittest's own argument parsing, loader and runner; the runner keeps
# the result, and every test it started, and they are written as JSON: [id, outcome] per test run (two
# tests of one id, as a suite built by load_tests may hold, are two entries), subtests' own beside them.
UNITTEST_RESULTS = r"""
import json, os, sys, unittest
out, args = sys.argv[1], sys.argv[2:]
sys.path[0] = os.getcwd()  # as `python -m unittest` has it
started = []

class Result(unittest.TextTestResult):
    def startTest(self, test):
        started.append(test)
        super().startTest(test)

class Runner(unittest.TextTestRunner):
    resultclass = Result

program = unittest.main(module=None, argv=["python -m unittest", *args], testRunner=Runner, exit=False)
result = program.result
entries = {id(test): [test.id(), "passed"] for test in started}
def put(test, outcome):
    entries.setdefault(id(test), [test.id(), outcome])[1] = outcome
for test, _ in result.skipped:
    put(test, "skipped")
for test in result.unexpectedSuccesses:
    put(test, "failed")
for kind, pairs in (("error", result.errors), ("failed", result.failures)):
    for test, _ in pairs:
        put(test, kind)
        parent = getattr(test, "test_case", None)  # a failing subTest: its parent did not pass either
        if parent is not None and parent is not test and entries.get(id(parent), [0, ""])[1] == "passed":
            entries[id(parent)][1] = "failed" if kind == "failed" else "error"
json.dump({"tests_run": result.testsRun, "outcomes": list(entries.values())}, open(out, "w"))
sys.exit(0 if result.wasSuccessful() else 1)
"""


@dataclass
class Side:
    entries: Counter = field(default_factory=Counter)  # (test key, outcome) -> how many
    tests: int = 0
    seconds: float = 0.0
    note: str = ""         # why there are no results, when there are none
    shown: dict = field(default_factory=dict)  # test key -> the id as this side names it


@dataclass
class Row:
    name: str
    convention: str
    hand: Side
    volt: Side
    differs: list[tuple[str, str, str]]  # (id, by hand, in Volt)
    cannot: str                          # why this project cannot agree, when it cannot
    excused: list[tuple[str, str, str]] = field(default_factory=list)  # outcomes of its `cannot_tests` that differ
    partial: bool = False                # `cannot` is about the outcomes of some tests only (`cannot_tests`)

    @property
    def expected(self) -> bool:
        """Its disagreement was recorded: the whole project (`cannot`), or only `cannot_tests` (excused)."""
        return self.agrees or (bool(self.cannot) and not self.partial)

    @property
    def agrees(self) -> bool:
        return not self.differs and not self.hand.note and not self.volt.note


# ------------------------------------------------------------------ pytest's JUnit names

def junit_key(node_id: str) -> tuple[str, str]:
    """pytest's mangling of a node id into JUnit's (classname, name) (_pytest.junitxml.mangle_test_address)."""
    path, bracket, params = node_id.partition("[")
    names = path.split("::")
    names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
    names[-1] += bracket + params
    return ".".join(names[:-1]), names[-1]


def junit_side(path: Path) -> Counter:
    """A JUnit file's entries; a test of the venv's site-packages, which pytest names from a directory
    that holds both it and the tree (the venv's path), named from site-packages on, as Volt names it."""
    entries: Counter = Counter()
    for case in ET.parse(path).getroot().iter("testcase"):
        tags = {child.tag for child in case}
        outcome = "error" if "error" in tags else "failed" if "failure" in tags else \
            "skipped" if "skipped" in tags else "passed"
        classname = re.sub(r"^(?:.*\.)?site-packages\.", "site-packages.", case.get("classname") or "")
        entries[((classname, case.get("name") or ""), outcome)] += 1
    return entries


def volt_as_junit(tests: list[dict]) -> tuple[Counter, dict]:
    """Volt's pytest results as the JUnit file would list them."""
    outcome = {t["id"]: ("flaky" if t.get("flaky") else t["outcome"]) for t in tests}
    entries: Counter = Counter()
    shown = {}
    for test_id, result in outcome.items():
        if test_id.endswith(TEARDOWN) and test_id[:-len(TEARDOWN)] in outcome:
            continue
        torn = outcome.get(test_id + TEARDOWN) == "error"
        repeated = REPEAT.search(test_id)
        if repeated and test_id[:repeated.start()] in outcome:
            test_id = test_id[:repeated.start()]  # two items of one node id: two entries of it in the file too
        key = junit_key(test_id)
        shown[key] = test_id
        if torn and result == "failed":
            entries[(key, "failed")] += 1
            entries[(key, "error")] += 1
        else:
            entries[(key, "error" if torn else result)] += 1
    return entries, shown


def volt_as_unittest(tests: list[dict]) -> Counter:
    """Volt's unittest results as unittest's own result lists them: a second test of one id, which Volt
    keeps as `<id> [2]`, is a second entry of that id."""
    ids = {t["id"] for t in tests}
    entries: Counter = Counter()
    for test in tests:
        test_id = test["id"]
        repeated = REPEAT.search(test_id)
        if repeated and test_id[:repeated.start()] in ids:
            test_id = test_id[:repeated.start()]
        entries[(test_id, "flaky" if test.get("flaky") else test["outcome"])] += 1
    return entries


# ------------------------------------------------------------------ by hand

def hand_commands(hand: dict) -> list[dict]:
    """The maintainers' commands in order: `commands` (tables of command, results, cwd, ignore_exit), or
    the one `command` with the project's `results`."""
    return hand.get("commands") or [{"command": hand["command"], "results": hand["results"]}]


def run_hand_command(item: dict, number: int, tree: Path, tmp: Path, venv: Path, env: dict, work: Path, out,
                     side: Side) -> bool:
    """One of the maintainers' commands, its results added to `side`; whether the next one runs (as tox:
    a failing command stops the rest unless `ignore_exit`, tox's `-`, or `keep_going`, its ignore_errors)."""
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    names = {"{tmp}": str(tmp), "{tree}": str(tree), "{site}": str(site), "{venv}": str(venv)}

    def fill(word: str) -> str:
        for name, value in names.items():
            word = word.replace(name, value)
        return word

    command = [fill(word) for word in item["command"]]
    cwd = Path(fill(item.get("cwd", "{tree}")))
    cwd.mkdir(parents=True, exist_ok=True)
    results, kind = work / f"by-hand-results-{number}", item.get("results", "none")
    if kind == "junitxml":
        argv = [*command, f"--junitxml={results}.xml"]
    elif kind == "unittest" and command[:3] == ["python", "-m", "unittest"]:
        argv = ["python", "-c", UNITTEST_RESULTS, f"{results}.json", *command[3:]]
    elif kind == "none":
        argv = command
    else:
        raise SystemExit(f"{item['command']}: results = 'unittest' needs a `python -m unittest` command")
    out.write(f"\n$ {' '.join(command)}\n")
    out.flush()
    code = subprocess.run(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                          timeout=3600).returncode
    if kind == "junitxml":
        if not Path(f"{results}.xml").exists():
            side.note = f"no JUnit file from `{' '.join(command)}`"
            return False
        found = junit_side(Path(f"{results}.xml"))
        side.entries += found
        side.tests += sum(found.values())
    elif kind == "unittest":
        if not Path(f"{results}.json").exists():
            side.note = f"no unittest results from `{' '.join(command)}`"
            return False
        data = json.loads(Path(f"{results}.json").read_text())
        side.entries += Counter((test_id, outcome) for test_id, outcome in data["outcomes"])
        side.tests += data["tests_run"]
    return code == 0 or item.get("ignore_exit", False) or item.get("keep_going", False)


def by_hand(repo: Path, hand: dict, work: Path, log: Path) -> Side:
    """The maintainers' setup and command in a fresh venv on a clone of `repo`: per-test results."""
    tree, venv, tmp = work / "by-hand", work / "by-hand-venv", work / "by-hand-tmp"
    subprocess.run([*GIT, "clone", "-q", str(repo), str(tree)], check=True)
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOLT_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update({"VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{env['PATH']}"})
    env.update({k: v.replace("{tmp}", str(tmp)).replace("{tree}", str(tree)) for k, v in hand.get("env", {}).items()})
    side = Side()
    started = time.perf_counter()
    with log.open("w") as out:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        for step in hand["setup"]:
            argv = [word.replace("{tmp}", str(tmp)) for word in step]
            out.write(f"\n$ {' '.join(argv)}\n")
            out.flush()
            if subprocess.run(argv, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, timeout=1800).returncode:
                side.note = f"setup failed: {' '.join(argv)} (see {log})"
                return side
        for number, item in enumerate(hand_commands(hand)):
            if not run_hand_command(item, number, tree, tmp, venv, env, work, out, side):
                break
    side.seconds = time.perf_counter() - started
    if not side.note and not side.entries:
        side.note = f"no results (see {log})"
    return side


# ------------------------------------------------------------------ through Volt

def through_volt(repo: Path, work: Path, kind: str, log: Path) -> tuple[Side, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOLT_") and k != "VIRTUAL_ENV"}
    env.update({"PYTHONPATH": str(ROOT), "VOLT_WORKSPACE_DIR": str(work / "ws")})
    sha = subprocess.run([*GIT, "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                         check=True).stdout.strip()
    side = Side()
    with RedisServer(work / "redis") as server:
        started = time.perf_counter()
        up = subprocess.run([sys.executable, "-m", "voltci", "up", "--repo", str(repo), "--burst", "--workers", "1",
                             "--redis-url", server.url, "--timeout", "3600"], env=env, capture_output=True,
                            text=True, timeout=3700)
        side.seconds = time.perf_counter() - started
        report = subprocess.run([sys.executable, "-m", "voltci", "report", sha, "--json", "--redis-url", server.url],
                                env=env, capture_output=True, text=True, timeout=600)
        build_log = subprocess.run([sys.executable, "-m", "voltci", "log", sha, "--redis-url", server.url],
                                   env=env, capture_output=True, text=True, timeout=600)
    log.write_text(f"$ volt up --burst (exit {up.returncode})\n{up.stdout}\n{up.stderr}\n\n$ volt log\n"
                   f"{build_log.stdout}")
    try:
        data = json.loads(report.stdout)
    except json.JSONDecodeError:
        side.note = f"no report (volt up exit {up.returncode}): {(up.stderr or report.stderr).strip()[-300:]}"
        return side, {}
    tests = data.get("tests", [])
    if kind == "junitxml":
        side.entries, side.shown = volt_as_junit(tests)
    else:
        side.entries = volt_as_unittest(tests)
    side.tests = data.get("counts", {}).get("total", 0)
    if not tests:
        side.note = f"build {data.get('status')}: {data.get('reason', '')}"
    return side, data


# ------------------------------------------------------------------ the panel

def as_volt_keeps(hand: Side, volt: Side) -> None:
    """The hand side's ids longer than Volt keeps of an id (ID_MAX), named as Volt stores them: their
    head and a hash of the whole (`…#<16 hex>`). A JUnit key is made a node id again (`a.b.C`, `t` ->
    `a/b.py::C::t`, each split of its classname tried) and shortened as Volt shortens it: it is renamed
    only when that gives a key Volt reported, so nothing else is matched by its head alone."""
    known = {key for key, _ in volt.entries}
    renamed: Counter = Counter()
    for (key, outcome), count in hand.entries.items():
        if isinstance(key, str):
            clipped = clip_id(key)[0] if len(key) > ID_MAX else key
            key = clipped if clipped in known else key
        elif len(key[0]) + len(key[1]) > ID_MAX - 16:
            parts = key[0].split(".")
            for split in range(len(parts), 0, -1):
                clipped, shortened = clip_id("/".join(parts[:split]) + ".py::" + "::".join([*parts[split:], key[1]]))
                if shortened and junit_key(clipped) in known:
                    key = junit_key(clipped)
                    break
        renamed[(key, outcome)] += count
    hand.entries = renamed


def differences(hand: Side, volt: Side) -> list[tuple[str, str, str]]:
    only_hand, only_volt = hand.entries - volt.entries, volt.entries - hand.entries
    keys = sorted({key for key, _ in only_hand} | {key for key, _ in only_volt}, key=str)
    rows = []
    for key in keys:
        mine = ",".join(sorted(o for (k, o), n in only_hand.items() for _ in range(n) if k == key)) or "-"
        theirs = ",".join(sorted(o for (k, o), n in only_volt.items() for _ in range(n) if k == key)) or "-"
        name = volt.shown.get(key) or ("::".join(key) if isinstance(key, tuple) else key)
        rows.append((name, mine, theirs))
    return rows


def run_project(entry: dict, keep: Path | None) -> Row:
    name = entry["requirement"].split("==")[0]
    hand = entry["hand"]
    with tempfile.TemporaryDirectory(prefix=f"volt-panel-{name}-") as tmp:
        work = Path(tmp)
        logs = keep or work
        logs.mkdir(parents=True, exist_ok=True)
        repo = make_repo(entry["requirement"], work)
        if (repo / ".volt.toml").exists():
            raise SystemExit(f"{entry['requirement']}: the sdist has a .volt.toml: not a zero-configuration build")
        print(f"[{name}] by hand: {' ; '.join(' '.join(c['command']) for c in hand_commands(hand))}", flush=True)
        mine = by_hand(repo, hand, work, logs / f"{name}.hand.log")
        print(f"[{name}] through Volt: volt up --burst --repo {repo.name}", flush=True)
        volt, report = through_volt(repo, work, hand["results"], logs / f"{name}.volt.log")
        if keep:  # the raw results of both sides, beside the logs
            for found in work.glob("by-hand-results*.*"):
                shutil.copy(found, keep / f"{name}.hand{found.name[len('by-hand-results'):]}")
            (keep / f"{name}.volt.json").write_text(json.dumps(report, indent=1))
    as_volt_keeps(mine, volt)
    differs = differences(mine, volt)
    loaded = set(entry.get("cannot_tests", []))
    excused = [d for d in differs if d[0] in loaded and d[1] != "-" and d[2] != "-"]  # outcome only, never the id
    return Row(name, hand.get("label", entry["convention"][:44]), mine, volt, [d for d in differs if d not in excused],
               entry.get("cannot", ""), excused, bool(loaded))


def verdict(row: Row) -> str:
    if row.agrees and row.excused:
        return f"agrees but for {len(row.excused)} outcome(s) it cannot: {row.cannot}"
    if row.agrees:
        return "agrees" + (" (recorded as cannot: it now does)" if row.cannot and not row.partial else "")
    why = row.hand.note or row.volt.note or f"{len(row.differs)} tests differ"
    return f"CANNOT: {row.cannot}" if row.expected else f"DISAGREES: {why}"


def print_rows(rows: list[Row]) -> None:
    header = ("project", "convention", "tests hand/Volt", "disagreements", "s hand/Volt", "verdict")
    table = [header] + [(r.name, r.convention, f"{r.hand.tests}/{r.volt.tests}",
                         str(len(r.differs)) + (f" (+{len(r.excused)} cannot)" if r.excused else ""),
                         f"{r.hand.seconds:.0f}/{r.volt.seconds:.0f}", verdict(r)) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header) - 1)]
    for line in table:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line[:-1])) + "  " + line[-1])
    for row in rows:
        for note in (row.hand.note, row.volt.note):
            if note:
                print(f"  {row.name}: {note}")
        for test_id, mine, theirs in row.excused:
            print(f"  {row.name}: {test_id}: by hand {mine}, in Volt {theirs} (an outcome it cannot agree on)")
        for test_id, mine, theirs in row.differs[:10]:
            print(f"  {row.name}: {test_id}: by hand {mine}, in Volt {theirs}")
        if len(row.differs) > 10:
            print(f"  {row.name}: ... and {len(row.differs) - 10} more")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these projects only (names as in panel.toml)")
    parser.add_argument("--list", action="store_true", help="list the panel and exit")
    parser.add_argument("--logs", type=Path, default=None, help="keep each project's logs here")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON to this file")
    args = parser.parse_args()
    panel = [e for e in tomllib.loads(PANEL.read_text())["project"] if "hand" in e]
    if args.only:
        wanted = {n.lower() for n in args.only}
        unknown = wanted - {e["requirement"].split("==")[0].lower() for e in panel}
        if unknown:
            raise SystemExit(f"not in the panel (with a [project.hand]): {', '.join(sorted(unknown))}")
        panel = [e for e in panel if e["requirement"].split("==")[0].lower() in wanted]
    if args.list:
        for entry in panel:
            hand = entry["hand"]
            shown = " ; ".join(" ".join(c["command"]) for c in hand_commands(hand))
            print(f"{entry['requirement']:<24} {hand['results']:<9} {shown}  [{hand['source']}]")
        return
    rows = []
    for entry in panel:
        rows.append(run_project(entry, args.logs))
        print_rows(rows[-1:])
    print()
    print_rows(rows)
    if args.json:
        args.json.write_text(json.dumps([{
            "project": r.name, "convention": r.convention, "tests_by_hand": r.hand.tests, "tests_in_volt": r.volt.tests,
            "disagreements": [list(d) for d in r.differs], "seconds_by_hand": round(r.hand.seconds, 1),
            "seconds_in_volt": round(r.volt.seconds, 1), "verdict": verdict(r)} for r in rows], indent=1))
    failing = [r.name for r in rows if not r.expected]
    agreeing = sum(r.agrees and not r.excused for r in rows)
    cannot = [r.name for r in rows if r.excused or (r.expected and not r.agrees)]
    print(f"\npanel: {agreeing} of {len(rows)} projects agree on every test id and outcome"
          + (f"; cannot agree (listed with why): {', '.join(cannot)}" if cannot else "")
          + (f"; DISAGREE: {', '.join(failing)}" if failing else ""))
    sys.exit(1 if failing else 0)


if __name__ == "__main__":
    main()
