"""Runs unittest discovery and writes one JSON line per test result as each test ends.

This file runs inside the build's own test process, under the project's Python, so it uses the
standard library only and imports nothing from Volt. It behaves like `python -m unittest discover`
(same sys.path, same loader, same text output on stderr) — or, given `--names`, like `python -m unittest
NAMES` — and adds a JSON-lines record:

    {"id": ..., "outcome": "passed|failed|error|skipped", "duration_s": ..., "message": ..., "cost_s": ...}
    ...
    {"summary": {"tests_run": N, "failures": N, "errors": N, "skipped": N, ...}}

Lines are flushed one by one, so the tests that finished before a hang or a crash are kept.
`cost_s` is what the test took of the run's wall clock, from the end of the test before it to its
own (class and module fixtures included): what a shard pays for it, which the next split is
balanced on.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import traceback
import unittest
from collections.abc import Iterable, Iterator
from typing import IO, Any

IMPORT_FAILURE_CLASSES = ("_FailedTest",)


class JsonLinesResult(unittest.TextTestResult):
    """A TextTestResult that also writes each outcome to a JSON-lines file."""

    def __init__(self, stream: Any, descriptions: bool, verbosity: int, *, out: IO[str], **kwargs: Any) -> None:
        super().__init__(stream, descriptions, verbosity, **kwargs)
        self._out = out
        self._started: dict[str, float] = {}
        self._reported: set[str] = set()
        self._failed_subtests: dict[str, list[str]] = {}
        self.import_failures: list[tuple[str, str]] = []
        self.unexpected = 0
        self._last_end = time.perf_counter()

    def _write(self, test_id: str, outcome: str, message: str = "", duration: float | None = None,
               **extra: Any) -> None:
        record = {"id": test_id, "outcome": outcome, "duration_s": round(duration or 0.0, 6),
                  "message": message}
        record.update(extra)
        self._out.write(json.dumps(record) + "\n")
        self._out.flush()

    def _describe(self, err: Any, test: unittest.TestCase) -> str:
        """The traceback text unittest's own report shows (TestResult's formatter, which typeshed omits)."""
        return str(self._exc_info_to_string(err, test))  # type: ignore[attr-defined]

    def _elapsed(self, test: unittest.TestCase) -> float:
        started = self._started.get(test.id())
        return time.perf_counter() - started if started is not None else 0.0

    def _record(self, test: unittest.TestCase, outcome: str, message: str = "", **extra: Any) -> None:
        self._reported.add(test.id())
        if type(test).__name__ in IMPORT_FAILURE_CLASSES:
            self.import_failures.append((test.id(), message))
        ended = time.perf_counter()
        self._write(test.id(), outcome, message, self._elapsed(test), cost_s=round(ended - self._last_end, 6), **extra)
        self._last_end = ended

    def startTest(self, test: unittest.TestCase) -> None:
        self._started[test.id()] = time.perf_counter()
        super().startTest(test)

    def stopTest(self, test: unittest.TestCase) -> None:
        super().stopTest(test)
        test_id = test.id()
        if test_id not in self._reported:
            # unittest calls neither addSuccess nor addFailure for a test whose subtests failed or skipped:
            # it ran and, unless a subtest failed, its summary counts it as passed.
            failed = self._failed_subtests.get(test_id, [])
            if failed:
                outcome = "failed" if "failed" in failed else "error"
                self._record(test, outcome, f"{len(failed)} subtest(s) did not pass", via_subtests=True)
            else:
                self._record(test, "passed")
        self._started.pop(test_id, None)

    def addSuccess(self, test: unittest.TestCase) -> None:
        super().addSuccess(test)
        self._record(test, "passed")

    def addFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addFailure(test, err)
        self._record(test, "failed", self._describe(err, test))

    def addError(self, test: unittest.TestCase, err: Any) -> None:
        super().addError(test, err)
        self._record(test, "error", self._describe(err, test))

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        super().addSkip(test, reason)
        parent = getattr(test, "test_case", None)
        if isinstance(parent, unittest.TestCase) and parent is not test:  # a subtest's skipTest: beside its test
            self._write(test.id(), "skipped", reason, self._elapsed(parent), subtest_of=parent.id())
            return
        self._record(test, "skipped", reason)

    def addExpectedFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addExpectedFailure(test, err)
        self._record(test, "passed", "expected failure")

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        super().addUnexpectedSuccess(test)
        self.unexpected += 1
        self._record(test, "failed", "unexpected success")

    def addSubTest(self, test: unittest.TestCase, subtest: unittest.TestCase, err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is None:
            return
        is_failure = issubclass(err[0], test.failureException)
        outcome = "failed" if is_failure else "error"
        self._failed_subtests.setdefault(test.id(), []).append(outcome)
        self._write(subtest.id(), outcome, self._describe(err, test),
                    self._elapsed(test), subtest_of=test.id())


def flatten(suite: Iterable[Any]) -> Iterator[unittest.TestCase]:
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from flatten(item)
        else:
            yield item


def test_ids(suite: unittest.TestSuite) -> list[str]:
    return [test.id() for test in flatten(suite)]


def load_named(test_ids: list[str], start_dir: str, top_level_dir: str | None) -> unittest.TestSuite:
    """The tests `test_ids` names, importable as discovery would make them (top-level dir on sys.path)."""
    top = os.path.abspath(top_level_dir or start_dir)
    if top not in sys.path:
        sys.path.insert(0, top)
    suite = unittest.TestSuite()
    for test_id in test_ids:
        try:
            found = unittest.defaultTestLoader.loadTestsFromName(test_id)
        except Exception:  # no longer loadable by name (e.g. added by load_tests): not re-run
            continue
        if not _vanished(found, test_id):
            suite.addTests(found)
    return suite


def _vanished(found: unittest.TestSuite | unittest.TestCase, test_id: str) -> bool:
    """Whether unittest's loader answered `test_id` with a failed import of the test's own module — the
    module is gone (a test named by an earlier build) — rather than with a module that fails as it
    imports, which is the test's failure to report."""
    tests = list(flatten(found)) if isinstance(found, unittest.TestSuite) else [found]
    if len(tests) != 1 or type(tests[0]).__name__ != "_FailedTest":
        return False
    failure = getattr(tests[0], "_exception", None)
    if isinstance(failure, AttributeError):
        return True  # the module is there, the class or method no longer
    said = str(failure)
    missing = re.search(r"ModuleNotFoundError: No module named '([\w.]+)'", said)
    return missing is not None and (test_id + ".").startswith(missing.group(1) + ".")


def load_names(names: list[str]) -> unittest.TestSuite:
    """The tests `python -m unittest NAMES` runs: modules, classes, methods by dotted name, or a test
    file's path (made a module name, as unittest makes it), loaded from the current directory."""
    return unittest.defaultTestLoader.loadTestsFromNames([_module_name(name) for name in names])


def _module_name(name: str) -> str:
    """`tests/test_x.py` -> `tests.test_x`, as unittest's own command line reads a path (unittest.main)."""
    if not (os.path.isfile(name) and name.lower().endswith(".py")):
        return name
    if os.path.isabs(name):
        relative = os.path.relpath(name, os.getcwd())
        if os.path.isabs(relative) or relative.startswith(os.pardir):
            return name
        name = relative
    return os.path.normpath(name)[:-3].replace("\\", ".").replace("/", ".")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--append", action="store_true",
                        help="Add to --out, after the runs before it (a build of several test runs).")
    parser.add_argument("--start-dir", default=".")
    parser.add_argument("--pattern", default="test*.py")
    parser.add_argument("--top-level-dir", default=None)
    parser.add_argument("--tests", nargs="+", default=None, help="Run these test ids instead of discovering.")
    parser.add_argument("--names", nargs="+", default=None,
                        help="Load these names as `python -m unittest NAMES` does, instead of discovering.")
    parser.add_argument("--only-file", default=None,
                        help="Discover, then run only the tests whose ids are lines of this file (a shard).")
    parser.add_argument("--except-file", default=None,
                        help="Discover, then run every test but those whose ids are lines of this file (a shard).")
    parser.add_argument("--list", action="store_true", help="Discover and write the test ids, without running.")
    parser.add_argument("-k", dest="patterns", action="append", default=None,
                        help="As unittest's own -k: only the tests whose names match (the maintainers' command's).")
    args = parser.parse_args(argv)
    if args.patterns:  # as unittest.main reads them: a pattern without a wildcard matches as a substring
        unittest.defaultTestLoader.testNamePatterns = [p if "*" in p else f"*{p}*" for p in args.patterns]

    # `python -m unittest discover` puts the current directory first on sys.path; so do we.
    sys.path[0] = os.getcwd()
    began_at = time.time()  # the process's start is what came before: any other process pays it again
    with open(args.out, "a" if args.append else "w", encoding="utf-8") as out:
        try:
            if args.tests:
                suite = load_named(args.tests, args.start_dir, args.top_level_dir)
            elif args.names:
                suite = load_names(args.names)
            else:
                suite = unittest.defaultTestLoader.discover(args.start_dir, args.pattern, args.top_level_dir)
        except Exception as exc:  # discovery itself failed (bad start dir, broken package)
            out.write(json.dumps({"discovery_error": "".join(traceback.format_exception_only(exc)).strip()}) + "\n")
            return 2
        if args.list:
            for test_id in sorted(test_ids(suite)):
                out.write(json.dumps({"id": test_id}) + "\n")
            return 0
        if args.only_file:
            with open(args.only_file, encoding="utf-8") as fh:
                wanted = set(fh.read().splitlines())
            suite = unittest.TestSuite(t for t in flatten(suite) if t.id() in wanted)
        if args.except_file:
            with open(args.except_file, encoding="utf-8") as fh:
                others = set(fh.read().splitlines())
            suite = unittest.TestSuite(t for t in flatten(suite) if t.id() not in others)
        runner = unittest.TextTestRunner(
            stream=sys.stderr, verbosity=2,
            resultclass=lambda *a, **k: JsonLinesResult(*a, out=out, **k),
        )
        result = runner.run(suite)
        assert isinstance(result, JsonLinesResult)
        summary = {
            "tests_run": result.testsRun, "failures": len(result.failures), "errors": len(result.errors),
            "skipped": len(result.skipped), "expected_failures": len(result.expectedFailures),
            "unexpected_successes": len(result.unexpectedSuccesses),
            "import_failures": result.import_failures, "began_at": round(began_at, 3),
        }
        out.write(json.dumps({"summary": summary}) + "\n")
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
