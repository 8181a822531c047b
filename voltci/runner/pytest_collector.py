"""Runs pytest with the maintainers' own arguments and writes one JSON line per test as each ends.

The pytest counterpart of collector.py: this file runs inside the build's test process, under the
project's Python and its pytest, so it uses the standard library and pytest only and imports nothing
from Volt. It adds nothing to what pytest collects or how it runs; a plugin of its own records

    {"id": <node id>, "outcome": "passed|failed|error|skipped", "duration_s": ..., "message": ...,
     "cost_s": ...}
    ...
    {"summary": {"tests_run": N, "collect_errors": [[node id, message]], "exitstatus": N,
                 "collect_s": {file: seconds}}}

as pytest's summary counts them: an error in setup is an `error`; an error in teardown is an
`error` entry of its own beside the test's outcome; xfail is `skipped` (with its reason), xpass
`passed` (`failed` when strict); a failing subtest is an entry of its own; a module skipped as it is
collected (`pytest.importorskip` at its top) is one skipped test named by its node id, as pytest's
summary and JUnit file count it. A test in the environment's own site-packages (`pytest
--doctest-modules {envsitepackagesdir}/pkg`) is named from there, `site-packages/pkg/mod.py::...`:
pytest names it from whatever directory holds both it and the tree, which would put the environment's
path, and so the next environment's, into its id. Lines are flushed one by
one, so the tests that finished before a hang or a crash are kept.

`duration_s` is pytest's own (set-up, call and tear-down). `cost_s` is what the test took of the
run's wall clock, from the end of the test before it to its own end, pytest's work around it
included; `collect_s`, what collecting each file took. They are what a shard of the suite pays for
a test and a file, and the next split is balanced on them. It must raise no warning, so
projects that turn warnings into errors are unaffected (files are opened with an explicit encoding).

Selection happens after the project's own collection (its testpaths, doctests and deselections
stay): `--only-file` keeps the ids listed, `--except-file` keeps every other one, `--list` writes
the collected ids and runs nothing. An entry of those files without `::` names a whole file (as a
split plans a module it does not cut): `--only-file` keeps every test in it, `--except-file` does
not collect it at all. An entry with `::` but no `[` names a whole function, every parametrization
of it. In a file it runs part of, a shard does not collect the functions (and classes) it has no
test of: their parametrizations are never expanded.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import sysconfig
import time
from typing import IO, Any

SITE = "site-packages"  # how the ids of tests in the environment's site-packages begin


class VoltRecorder:
    """A pytest plugin object: selects, and records each test's outcome."""

    def __init__(self, out: IO[str], only: set[str] | None = None, others: set[str] | None = None,
                 list_only: bool = False) -> None:
        self.out = out
        self.only, self.others, self.list_only = only, others, list_only
        self.tests_run = 0
        self.collect_errors: list[list[str]] = []
        self._files: set[str] | None = None  # with `only`: the files its tests are in, and their directories
        self._dirs: set[str] = set()
        self._skipped: set[str] = set()  # with `others`: the files they run whole
        self._needed: set[str] | None = None  # with `only`: its functions and classes, and what holds them
        self._elsewhere: set[str] = set()  # with `others`: the functions they run whole
        self._open: dict[str, tuple[str, str, float]] = {}  # node id -> (outcome, message, duration) so far
        self.collect_s: dict[str, float] = {}  # file -> seconds its collectors took, their own
        self._collecting: list[list[Any]] = []  # [node id, started, seconds of collectors inside it]
        self._last_end = time.perf_counter()  # when the last test (or the collection) ended
        self.began_at = 0.0  # when the session began (wall clock): the process's start is what came before
        self._root = ""  # pytest's rootdir, once configured
        self._site = os.path.normpath(sysconfig.get_path("purelib"))
        self._named: dict[str, str] = {}  # a node id's file part -> its id's, for those in site-packages

    def _id(self, nodeid: str) -> str:
        """The id Volt records for a node id: pytest's own, but for a file in site-packages (see above)."""
        file, sep, rest = nodeid.partition("::")
        if file not in self._named:
            path = os.path.normpath(os.path.join(self._root, file)) if self._root else ""
            inside = path.startswith(self._site + os.sep) and len(self._named) < 100_000
            self._named[file] = f"{SITE}/{os.path.relpath(path, self._site)}" if inside else file
        return self._named[file] + sep + rest

    def _write(self, record: dict[str, Any]) -> None:
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()

    def pytest_configure(self, config: Any) -> None:
        """A share that lists its tests (`only`) needs only their files collected: the rest of the suite is
        not imported at all, which is most of what a shard of a large suite would otherwise spend. A
        share that runs all but the others' tests (`others`) never collects a file the others run whole."""
        root = self._root = str(config.rootpath)
        if self.others is not None:
            self._skipped = {_absolute(root, entry, self._site) for entry in self.others if _whole_file(entry)}
            self._elsewhere = {entry for entry in self.others if not _whole_file(entry) and "[" not in entry}
        if self.only is None:
            return
        self._needed = set()
        for entry in self.only:
            parts = _function(entry).split("::")
            self._needed.update("::".join(parts[:n]) for n in range(1, len(parts) + 1))
        self._files = {_absolute(root, entry.split("::", 1)[0], self._site) for entry in self.only}
        for path in self._files:
            parent = os.path.dirname(path)
            while parent not in self._dirs and len(parent) >= len(root):
                self._dirs.add(parent)
                parent = os.path.dirname(parent)

    def pytest_ignore_collect(self, collection_path: Any, config: Any) -> bool | None:
        path = os.path.normpath(str(collection_path))
        if path in self._skipped:
            return True
        if self._files is None or path in self._files or path in self._dirs:
            return None  # pytest's own rules decide
        return True

    def pytest_pycollect_makeitem(self, collector: Any, name: str, obj: Any) -> list[Any] | None:
        """Nothing for a function or class of a file this shard runs part of, when it has no test of it:
        collecting it (expanding a large parametrization) would be most of what the file costs."""
        node = self._id(f"{collector.nodeid}::{name}".replace("::()", ""))
        if node in self._elsewhere:
            return []
        needed, only = self._needed, self.only
        if needed is None or only is None or node.split("::", 1)[0] in only or node in needed:
            return None  # pytest's own rules decide
        return []

    def pytest_sessionstart(self, session: Any) -> None:
        self.began_at = time.time()

    def pytest_collectstart(self, collector: Any) -> None:
        self._collecting.append([collector.nodeid, time.perf_counter(), 0.0])

    def pytest_collectreport(self, report: Any) -> None:
        """A collector's own time goes to its file: collectors run inside others (a directory's
        inside the session's), and each counts only what its children did not take."""
        ended = time.perf_counter()
        while self._collecting:
            nodeid, started, inner = self._collecting.pop()
            if self._collecting:
                self._collecting[-1][2] += ended - started
            if nodeid == report.nodeid:
                file = nodeid.split("::", 1)[0]
                self.collect_s[file] = self.collect_s.get(file, 0.0) + ended - started - inner
                break
        if report.failed:
            self.collect_errors.append([self._id(report.nodeid) or ".", _text(report)])
        elif report.skipped and not self.list_only:  # a module skipped whole (importorskip): one skipped test
            self.tests_run += 1
            outcome, message = _skipped(report)
            self._write({"id": self._id(report.nodeid) or ".", "outcome": outcome, "duration_s": 0.0,
                         "message": message})

    def pytest_collection_modifyitems(self, session: Any, config: Any, items: list[Any]) -> None:
        if self.only is None and self.others is None:
            return
        keep: list[Any] = []
        dropped: list[Any] = []
        for item in items:
            nodeid = self._id(item.nodeid)
            file, function = nodeid.split("::", 1)[0], _function(nodeid)
            wanted = (self.only is None or nodeid in self.only or file in self.only or function in self.only) \
                and (self.others is None or not {nodeid, file, function} & self.others)
            (keep if wanted else dropped).append(item)
        if dropped:
            config.hook.pytest_deselected(items=dropped)
        items[:] = keep

    def pytest_collection_finish(self, session: Any) -> None:
        self._last_end = time.perf_counter()
        if self.list_only:
            for item in session.items:
                self._write({"id": self._id(item.nodeid)})

    def pytest_runtest_logreport(self, report: Any) -> None:
        if hasattr(report, "context"):  # a subtest's own report
            if report.failed:
                label = _subtest_label(report)
                self._write({"id": f"{self._id(report.nodeid)} {label}", "outcome": "failed",
                             "duration_s": round(report.duration, 6), "message": _text(report),
                             "subtest_of": self._id(report.nodeid)})
                outcome, message, duration = self._open.get(report.nodeid, ("passed", "", 0.0))
                self._open[report.nodeid] = ("failed", message or "a subtest failed", duration)
            return
        nodeid = report.nodeid
        outcome, message, duration = self._open.get(nodeid, ("passed", "", 0.0))
        duration += report.duration
        if report.when == "setup":
            if report.failed:
                outcome, message = "error", _text(report)
            elif report.skipped:
                outcome, message = _skipped(report)
        elif report.when == "call":
            if hasattr(report, "wasxfail"):
                if report.skipped:
                    outcome, message = "skipped", _xfail_reason(report)
                else:
                    outcome, message = ("failed", f"[XPASS(strict)] {report.wasxfail}") if report.failed \
                        else ("passed", f"xpass: {report.wasxfail}")
            elif report.failed:
                outcome, message = "failed", _text(report)
            elif report.skipped:
                outcome, message = _skipped(report)
        elif report.when == "teardown":
            self._open.pop(nodeid, None)
            self.tests_run += 1
            ended = time.perf_counter()
            self._write({"id": self._id(nodeid), "outcome": outcome, "duration_s": round(duration, 6),
                         "message": message,
                         "cost_s": round(ended - self._last_end, 6)})
            self._last_end = ended
            if report.failed:
                self._write({"id": f"{self._id(nodeid)} [teardown]", "outcome": "error",
                             "duration_s": round(report.duration, 6), "message": _text(report)})
            return
        self._open[nodeid] = (outcome, message, duration)

    def summary(self, exitstatus: int) -> dict[str, Any]:
        return {"summary": {"tests_run": self.tests_run, "collect_errors": self.collect_errors,
                            "import_failures": [], "exitstatus": int(exitstatus),
                            "collect_s": {file: round(s, 6) for file, s in sorted(self.collect_s.items())},
                            "began_at": round(self.began_at, 3)}}


def _whole_file(entry: str) -> bool:
    return "::" not in entry


def _function(node_id: str) -> str:
    """`tests/t.py::T::test_x[1-a]` → `tests/t.py::T::test_x`: every parametrization of the function."""
    return node_id.split("[", 1)[0]


def _absolute(root: str, relative: str, site: str) -> str:
    """The path of a file an id names: below rootdir, or below site-packages for one named from there."""
    if relative.startswith(SITE + "/"):
        return os.path.normpath(os.path.join(site, relative[len(SITE) + 1:]))
    return os.path.normpath(os.path.join(root, relative))


def _text(report: Any) -> str:
    try:
        return str(report.longreprtext)
    except Exception:
        return str(report.longrepr)


def _skipped(report: Any) -> tuple[str, str]:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
        return "skipped", reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason
    return "skipped", _text(report)


def _xfail_reason(report: Any) -> str:
    reason = str(report.wasxfail or "")
    return f"xfail: {reason}" if reason else "xfail"


def _subtest_label(report: Any) -> str:
    context = report.context
    parts = []
    message = getattr(context, "msg", None)
    if message:
        parts.append(f"[{message}]")
    kwargs = getattr(context, "kwargs", None) or {}
    if kwargs:
        parts.append("(" + ", ".join(f"{k}={v}" for k, v in kwargs.items()) + ")")
    return " ".join(parts) or "(subtest)"


def _lines(path: str | None) -> set[str] | None:
    if not path:
        return None
    with open(path, encoding="utf-8") as fh:
        return set(fh.read().splitlines())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--append", action="store_true",
                        help="Add to --out, after the runs before it (a build of several test runs).")
    parser.add_argument("--only-file", default=None, help="Run only the collected tests listed in this file.")
    parser.add_argument("--except-file", default=None, help="Run every collected test but those listed here.")
    parser.add_argument("--list", action="store_true", help="Write the collected test ids, run nothing.")
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, help="pytest's arguments, after `--`.")
    args = parser.parse_args(argv)
    pytest_args = args.pytest_args[1:] if args.pytest_args[:1] == ["--"] else args.pytest_args

    # `python -m pytest` puts the current directory first on sys.path; so do we.
    sys.path[0] = os.getcwd()
    import pytest

    with open(args.out, "a" if args.append else "w", encoding="utf-8") as out:
        recorder = VoltRecorder(out, _lines(args.only_file), _lines(args.except_file), args.list)
        extra = ["--collect-only", "-q"] if args.list else []
        exitstatus = pytest.main([*pytest_args, *extra], plugins=[recorder])
        if not args.list:
            recorder._write(recorder.summary(exitstatus))
    return int(exitstatus)


if __name__ == "__main__":
    status = main()
    # What the run made (every collected item, every report) is garbage now, and the interpreter's
    # last collection at exit would walk all of it: 1.7 s of packaging's 17 s suite. Frozen, it is
    # left to the OS; atexit handlers, thread joins and stream flushes still happen.
    gc.freeze()
    sys.exit(status)
