"""What stock unittest says about a tree, for comparing Volt's per-test results with it.

Runs discovery in a subprocess with unittest's own TextTestRunner and TextTestResult (none of
Volt's code), and reads the ids back from the result's own lists.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ORACLE = r"""
import io, json, sys, unittest
sys.path.insert(0, '.')

def ids(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from ids(item)
        else:
            yield item.id()

suite = unittest.defaultTestLoader.discover(sys.argv[2], top_level_dir='.')
all_ids = list(ids(suite))
result = unittest.TextTestRunner(stream=io.StringIO(), verbosity=2).run(suite)
json.dump({
    "tests_run": result.testsRun,
    "all": all_ids,
    "failures": [t.id() for t, _ in result.failures] + [t.id() for t in result.unexpectedSuccesses],
    "errors": [t.id() for t, _ in result.errors],
    "skipped": [t.id() for t, _ in result.skipped],
}, open(sys.argv[1], "w"))
"""


@dataclass
class OracleRun:
    tests_run: int
    outcomes: dict[str, str]  # id -> passed / failed / error / skipped
    failures: int
    errors: int
    skipped: int


def run_unittest(tree: Path, python: str = sys.executable, start_dir: str = ".") -> OracleRun:
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        subprocess.run([python, "-c", ORACLE, out.name, start_dir], cwd=tree, capture_output=True, timeout=1800,
                       stdin=subprocess.DEVNULL, check=True)
        data = json.load(out)
    outcomes = dict.fromkeys(data["all"], "passed")
    for test_id in data["skipped"]:
        outcomes[test_id] = "skipped"
    for kind, outcome in (("errors", "error"), ("failures", "failed")):
        for test_id in data[kind]:
            outcomes[test_id] = outcome
            parent = test_id.split(" (", 1)[0]
            if parent != test_id and outcomes.get(parent) == "passed":
                outcomes[parent] = outcome  # a parent whose subtest failed did not pass
    return OracleRun(data["tests_run"], outcomes, len(data["failures"]), len(data["errors"]), len(data["skipped"]))
