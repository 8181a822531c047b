"""Per-test results from the JUnit XML file a project's own test command writes (pytest's
`--junitxml`, and most other runners'). Parsed incrementally, so a file of tens of thousands of
tests, or one test that printed megabytes, keeps memory bounded."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import BinaryIO

from voltci.models import Outcome, TestResult
from voltci.runner import untrusted

MAX_MESSAGE = 64 * 1024


class JUnitError(Exception):
    """The file is missing or is not JUnit XML, in one line."""


def read(path: Path, inside: Path) -> list[TestResult]:
    """The tests of the JUnit file at `path`, which the build wrote somewhere below `inside`."""
    if not path.exists() and not path.is_symlink():
        raise JUnitError(f"no JUnit XML file at {path.name}")
    try:
        source = untrusted.open_binary(path, inside)
    except OSError as exc:
        raise JUnitError(f"cannot read {path.name}: {exc.strerror or exc}") from None
    with source:
        return _parse(source, path.name)


def _parse(source: BinaryIO, name: str) -> list[TestResult]:
    tests: list[TestResult] = []
    seen: dict[str, int] = {}
    root_tag = None
    try:
        for event, element in ET.iterparse(source, events=("start", "end")):
            if event == "start":
                root_tag = root_tag or element.tag
                continue
            if element.tag != "testcase":
                continue
            test_id = _test_id(element)
            seen[test_id] = seen.get(test_id, 0) + 1
            if seen[test_id] > 1:
                test_id = f"{test_id} [{seen[test_id]}]"
            outcome, message = _outcome(element)
            tests.append(TestResult(id=test_id, outcome=outcome, duration_s=_seconds(element.get("time")),
                                    message=message[:MAX_MESSAGE], order=len(tests)))
            element.clear()
    except ET.ParseError as exc:
        raise JUnitError(f"{name} is not well-formed XML: {exc}") from None
    if root_tag not in ("testsuites", "testsuite"):
        raise JUnitError(f"{name} is not JUnit XML (its root element is <{root_tag}>)")
    return tests


def _test_id(case: ET.Element) -> str:
    name, classname = case.get("name", ""), case.get("classname", "")
    if not name:
        return classname or "<unnamed>"
    return f"{classname}.{name}" if classname else name


def _outcome(case: ET.Element) -> tuple[Outcome, str]:
    for tag, outcome in (("failure", Outcome.FAILED), ("error", Outcome.ERROR), ("skipped", Outcome.SKIPPED)):
        child = case.find(tag)
        if child is not None:
            text = (child.text or "").strip()
            summary = child.get("message", "")
            return outcome, text if text else summary
    return Outcome.PASSED, ""


def _seconds(value: str | None) -> float:
    try:
        return round(max(0.0, float(value or 0)), 6)
    except ValueError:
        return 0.0
