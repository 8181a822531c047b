"""Faults to inject into a real project's source, for bench/first_failure.py: each a one-token change
that makes some of the project's tests fail, found deterministically and checked once, by hand.

A candidate is one of three kinds, read from the package's own modules with `ast`:

- comparison: `<` → `<=`, `<=` → `<`, `>` → `>=`, `>=` → `>`, `==` → `!=`, `!=` → `==`;
- constant: `0` → `1`, `1` → `0`, `True` → `False`, `False` → `True`;
- return: `return X` → `return None`.

The candidates of each kind are shuffled by a seeded generator and taken in turn (one of each kind,
then the next of each), so the list is the same on every machine for the same sdist and seed. Each is
checked by running the suite by hand on a clone of the project in a virtual environment of its own
(the project installed editable): first the test files that name the mutated module, stopping at the
first failure, and, when they all pass, the whole suite the same way. A candidate is kept when tests
ran and some failed; one that breaks the collection of the suite, or runs past its time, is not.
Every verdict is kept in a file under the system temp dir, so a candidate is checked once.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

GENERATOR = 1  # raise when the candidates or the check change: the cached verdicts are then not reused
OUTPUT_CAP = 64 * 1024  # what is kept of a by-hand run's output: the tail, for the collection-error checks

COMPARISONS = {ast.Lt: ("<", "<="), ast.LtE: ("<=", "<"), ast.Gt: (">", ">="), ast.GtE: (">=", ">"),
               ast.Eq: ("==", "!="), ast.NotEq: ("!=", "==")}
CONSTANTS: dict[object, str] = {True: "False", False: "True"}


@dataclass(frozen=True)
class Mutant:
    """One change of `old` into `new` at characters [start, end) of `path` (relative to the tree)."""

    path: str
    line: int
    start: int
    end: int
    old: str
    new: str
    kind: str  # comparison, constant or return

    @property
    def key(self) -> str:
        return f"{self.path}:{self.start}:{self.end}:{self.new}"

    def label(self) -> str:
        old = self.old if len(self.old) <= 30 else self.old[:27] + "..."
        return f"{self.path}:{self.line} {old} -> {self.new}"

    def apply(self, text: str) -> str:
        """The module's text with this fault in it; refuses a text it was not read from."""
        if text[self.start:self.end] != self.old:
            raise SystemExit(f"mutant {self.label()}: the module is not the one it was read from")
        return text[:self.start] + self.new + text[self.end:]


@dataclass(frozen=True)
class Suite:
    """How a project's tests are run by hand: its setup in a fresh venv, the command, and its kind."""

    setup: tuple[tuple[str, ...], ...]  # each run with the venv's python first on PATH
    command: tuple[str, ...]
    runner: str  # "pytest" or "unittest"
    tests_dir: str


# ------------------------------------------------------------------ candidates

def _offsets(text: str) -> list[int]:
    starts, at = [], 0
    for line in text.splitlines(keepends=True):
        starts.append(at)
        at += len(line)
    return starts + [at]


def _position(text: str, lines: list[str], starts: list[int], lineno: int, col: int) -> int:
    """A character offset from ast's line and UTF-8 byte column."""
    return starts[lineno - 1] + len(lines[lineno - 1].encode()[:col].decode(errors="ignore"))


def candidates(tree: Path, package: str) -> list[Mutant]:
    """Every candidate of the package's modules (tests and generated files left out), in file order."""
    found: list[Mutant] = []
    for module in sorted((tree / package).rglob("*.py")):
        rel = module.relative_to(tree).as_posix()
        if "/tests/" in f"/{rel}" or module.name.startswith(("test_", "_version")):
            continue
        text = module.read_text(encoding="utf-8")
        try:
            parsed = ast.parse(text)
        except SyntaxError:
            continue
        found += _sites(rel, text, parsed)
    return found


def _sites(rel: str, text: str, parsed: ast.Module) -> Iterator[Mutant]:
    lines, starts = text.splitlines(keepends=True), _offsets(text)

    def span(node: ast.expr) -> tuple[int, int]:
        assert node.end_lineno is not None and node.end_col_offset is not None
        return (_position(text, lines, starts, node.lineno, node.col_offset),
                _position(text, lines, starts, node.end_lineno, node.end_col_offset))

    docstrings = {id(body[0].value) for body in _bodies(parsed)
                  if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)}
    data = {id(item) for node in ast.walk(parsed) if isinstance(node, (ast.List, ast.Tuple, ast.Set))
            for item in node.elts}  # tables of data (licence lists, ...), not logic
    data |= {id(item) for node in ast.walk(parsed) if isinstance(node, ast.Dict)
             for item in [*node.keys, *node.values] if item is not None}
    for node in ast.walk(parsed):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for op, left, right in zip(node.ops, operands, operands[1:], strict=False):
                symbols = COMPARISONS.get(type(op))
                if symbols is None:
                    continue
                gap_start, gap_end = span(left)[1], span(right)[0]
                gap = text[gap_start:gap_end]
                if re.sub(r"[\s()\\]", "", gap) != symbols[0]:
                    continue  # a comment or something else between the operands: not one clean token
                at = gap_start + gap.index(symbols[0])
                yield Mutant(rel, left.end_lineno or node.lineno, at, at + len(symbols[0]), symbols[0], symbols[1],
                             "comparison")
        elif isinstance(node, ast.Constant) and id(node) not in docstrings and id(node) not in data:
            value = node.value
            if isinstance(value, bool):
                new = CONSTANTS[value]
            elif type(value) is int and value in (0, 1):
                new = "1" if value == 0 else "0"
            else:
                continue
            start, end = span(node)
            if text[start:end] != repr(value):
                continue  # 0x0, 0_0, ...
            yield Mutant(rel, node.lineno, start, end, text[start:end], new, "constant")
        elif isinstance(node, ast.Return) and node.value is not None:
            if isinstance(node.value, ast.Constant) and node.value.value is None:
                continue
            start, end = span(node.value)
            yield Mutant(rel, node.lineno, start, end, text[start:end], "None", "return")


def _bodies(parsed: ast.Module) -> Iterator[list[ast.stmt]]:
    yield parsed.body
    for node in ast.walk(parsed):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.body


def ordered(found: list[Mutant], seed: int) -> list[Mutant]:
    """The candidates in the order they are tried: each kind shuffled by `seed`, the kinds taken in turn."""
    rng = random.Random(seed)
    by_kind = {kind: [m for m in found if m.kind == kind] for kind in ("comparison", "constant", "return")}
    for items in by_kind.values():
        rng.shuffle(items)
    turns: list[Mutant] = []
    for n in range(max((len(items) for items in by_kind.values()), default=0)):
        turns += [items[n] for items in by_kind.values() if n < len(items)]
    return turns


# ------------------------------------------------------------------ by hand

def run_bounded(argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[int | None, str]:
    """`argv` in its own process group, its output's tail kept; (None, tail) when it ran past `timeout`.
    The group is killed on the way out, also on Ctrl-C."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            code: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=30)
        out.seek(max(0, out.seek(0, os.SEEK_END) - OUTPUT_CAP))
        return code, out.read().decode(errors="replace")


class Checker:
    """The suite run by hand on a clone of the project, to tell which candidates make tests fail.

    Lifecycle: made on a work dir and the project's repository; `prepare()` clones it, makes the venv
    and times the whole suite once (which must pass); `fails(mutant)` runs the suite with the fault in.
    """

    def __init__(self, repo: Path, suite: Suite, work: Path):
        self.repo, self.suite, self.work = repo, suite, work
        self.tree, self.venv = work / "hand-tree", work / "hand-venv"
        self.env: dict[str, str] = {}
        self.suite_s = 0.0

    def prepare(self) -> None:
        subprocess.run(["git", "clone", "-q", str(self.repo), str(self.tree)], check=True, timeout=300)
        subprocess.run([sys.executable, "-m", "venv", str(self.venv)], check=True, timeout=300)
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOLT_") and k not in ("PYTHONPATH",)}
        self.env = {**env, "VIRTUAL_ENV": str(self.venv), "PATH": f"{self.venv / 'bin'}{os.pathsep}{env['PATH']}"}
        for step in self.suite.setup:
            code, tail = run_bounded(list(step), self.tree, self.env, 1200)
            if code != 0:
                raise SystemExit(f"by hand: `{' '.join(step)}` failed: {tail[-500:]}")
        started = time.perf_counter()
        code, tail = run_bounded([*self.suite.command], self.tree, self.env, 1800)
        self.suite_s = time.perf_counter() - started
        if code != 0:
            raise SystemExit(f"by hand: the suite does not pass before any fault is injected: {tail[-800:]}")

    def related(self, mutant: Mutant) -> list[str]:
        """The test files whose text names the mutated module."""
        if Path(mutant.path).name == "__init__.py":
            return []
        stem = Path(mutant.path).stem.lstrip("_")
        found = []
        for path in sorted((self.tree / self.suite.tests_dir).rglob("test*.py")):
            if re.search(rf"\b_?{re.escape(stem)}\b", path.read_text(encoding="utf-8", errors="replace")):
                found.append(path.relative_to(self.tree).as_posix())
        return found

    def _failfast(self, files: list[str]) -> tuple[str, float]:
        """The suite (or these files of it), stopping at the first failure: "fails", "passes" or "broken"."""
        if self.suite.runner == "pytest":
            argv = [*self.suite.command, "-x", "-q", "-p", "no:cacheprovider", *files]
        else:
            modules = [f[:-3].replace("/", ".") for f in files]
            argv = [*self.suite.command, "-f", *modules]
        started = time.perf_counter()
        code, tail = run_bounded(argv, self.tree, self.env, 3 * self.suite_s + 60)
        took = time.perf_counter() - started
        if code == 0:
            return "passes", took
        broken = code is None or (self.suite.runner == "pytest" and code != 1) or \
            (self.suite.runner == "unittest" and ("_FailedTest" in tail or "Failed to import test module" in tail))
        return ("broken" if broken else "fails"), took

    def fails(self, mutant: Mutant) -> str:
        """The verdict on one candidate: "fails" (kept), "passes" or "broken"."""
        module = self.tree / mutant.path
        original = module.read_text(encoding="utf-8")
        module.write_text(mutant.apply(original), encoding="utf-8")
        try:
            related = self.related(mutant)
            verdict = self._failfast(related)[0] if related else "passes"
            if verdict == "passes":
                verdict = self._failfast([])[0]
            return verdict
        finally:
            module.write_text(original, encoding="utf-8")


def cache_file(requirement: str, seed: int) -> Path:
    """Where the verdicts on one sdist's candidates are kept, under the system temp dir."""
    name = re.sub(r"[^A-Za-z0-9_.=-]", "_", requirement)
    return Path(tempfile.gettempdir()) / "volt-first-failure-mutants" / f"{name}-seed{seed}-g{GENERATOR}.json"


def good_mutants(requirement: str, repo: Path, package: str, suite: Suite, seed: int, wanted: int, work: Path,
                 say: Callable[[str], None] = print) -> list[Mutant]:
    """The first `wanted` candidates, in their seeded order, that make some tests fail by hand; verdicts
    read from the cache where there are, the others checked and added to it. At most 8 × `wanted`
    candidates are tried."""
    order = ordered(candidates(repo, package), seed)
    tree_hash = hashlib.sha256("".join(m.key + m.old for m in order).encode()).hexdigest()[:16]
    path = cache_file(requirement, seed)
    cached: dict = {}
    if path.exists():
        try:
            cached = json.loads(path.read_text())
        except ValueError:
            cached = {}
    verdicts: dict[str, str] = cached.get("verdicts", {}) if cached.get("tree") == tree_hash else {}
    checker: Checker | None = None
    kept: list[Mutant] = []
    for mutant in order[:8 * wanted]:
        if len(kept) >= wanted:
            break
        if mutant.key not in verdicts:
            if checker is None:
                checker = Checker(repo, suite, work / "hand")
                say(f"  checking candidates by hand (venv in {checker.venv.parent})")
                checker.prepare()
            verdicts[mutant.key] = checker.fails(mutant)
            say(f"  {verdicts[mutant.key]:<7} {mutant.label()}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"tree": tree_hash, "verdicts": verdicts,
                                        "kept": [asdict(m) for m in order if verdicts.get(m.key) == "fails"]},
                                       indent=1))
        if verdicts[mutant.key] == "fails":
            kept.append(mutant)
    if len(kept) < wanted:
        raise SystemExit(f"{requirement}: only {len(kept)} of the first {8 * wanted} candidates make tests fail "
                         f"by hand; ask for fewer with --mutants")
    return kept
