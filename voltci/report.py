"""The reporter: a build as the JSON contract, as text for people, and as JUnit XML for other tools.

Called by `volt report`; reads only what the results store returns.
"""

from __future__ import annotations

import json
import re
import socket
import xml.etree.ElementTree as ET
from datetime import datetime
from typing import Any

from voltci.models import Attempt, AttemptState, Build, Counts, Outcome, Shard, Status, TestResult

# Exit status of `volt report`, by build status.
EXIT_PASSED, EXIT_FAILED, EXIT_NOT_FINISHED = 0, 1, 3

_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def exit_status(build: Build) -> int:
    if not build.status.is_final:
        return EXIT_NOT_FINISHED
    return EXIT_PASSED if build.status is Status.PASSED else EXIT_FAILED


def as_dict(build: Build, tests: list[TestResult], attempts: list[Attempt],
            shards: list[Shard] | None = None, legs: list[Build] | None = None) -> dict[str, Any]:
    """The `volt report --json` contract of DESIGN.md, plus `reason`, `subject`, `attempt_history`, for a
    build split across runners `shards`, for a matrix build `legs` (each test then names its `leg`),
    `cut`: what its results lost to the bounds on what Volt keeps of a build (each count 0: nothing), and
    `first_failure` / `first_failure_s`: its first failing test and how many seconds after the start of
    its attempt it was known (both null when no test failed), `tests_started_at` / `first_failure_in_tests_s`:
    when the attempt's tests began and how many seconds after that its first failure was known (what the
    order of its tests decides; null when not known), and `order_dependent`: the tests that failed
    when run first, in the pre-pass, and passed in the suite's own order (prepass.py)."""
    return {
        "repo": build.repo, "commit": build.commit, "branch": build.branch, "status": build.status.value,
        "attempts": build.attempt, "runner": build.runner, "queued_at": build.queued_at,
        "started_at": build.started_at, "finished_at": build.finished_at, "duration_s": build.duration_s,
        "counts": build.counts.to_dict(),
        "tests": [t.report_dict() for t in tests],
        "log_tail": build.log_tail,
        "reason": build.reason,
        "subject": build.subject,
        "author": build.author,
        "first_failing_commit": json.loads(build.first_failing.to_json()) if build.first_failing else None,
        "first_failure": build.first_failure or None,
        "first_failure_s": build.first_failure_s,
        "tests_started_at": build.tests_started_at or None,
        "first_failure_in_tests_s": build.first_failure_in_tests_s,
        "order_dependent": build.order_dependent,
        "attempt_history": [
            {"attempt": a.number, "state": a.state.value, "runner": a.runner, "started_at": a.started_at,
             "ended_at": a.ended_at, "status": a.status, "reason": a.reason} for a in attempts],
        "shards": [json.loads(shard.to_json()) for shard in shards or []],
        "legs": [leg_dict(leg) for leg in legs or []],
        "cut": build.cut.to_dict(),
        **({"pull_request": build.pull_request.to_dict()} if build.pull_request else {}),
    }


def leg_dict(leg: Build) -> dict[str, Any]:
    """One matrix leg in the report contract."""
    return {"name": leg.leg, "python": leg.python, "env": leg.env, "status": leg.status.value,
            "counts": leg.counts.to_dict(), "duration_s": leg.duration_s, "runner": leg.runner, "reason": leg.reason,
            "attempts": leg.attempt}


def summary_dict(build: Build) -> dict[str, Any]:
    """A build without its tests, for listings (`volt history --json`)."""
    return {"repo": build.repo, "commit": build.commit, "branch": build.branch, "status": build.status.value,
            "subject": build.subject, "queued_at": build.queued_at, "duration_s": build.duration_s,
            "attempts": build.attempt, "counts": build.counts.to_dict(), "reason": build.reason,
            **({"pull_request": build.pull_request.to_dict()} if build.pull_request else {})}


def one_line(build: Build) -> str:
    """A build as one line: status, repo, short sha, branch, duration, passed/total, subject."""
    c = build.counts
    counts = f"{c.passed}/{c.total} passed" if build.status.is_final and c.total else ""
    took = f"{build.duration_s:.1f}s" if build.status.is_final else ""
    branch = f"#{build.pull_request.number}→{build.branch}" if build.pull_request else build.branch
    return (f"{build.status.value:<9} {build.repo} {build.commit[:10]} {branch:<12} {took:>7} "
            f"{counts:<16} {build.subject[:60]}").rstrip()


def as_text(build: Build, tests: list[TestResult], attempts: list[Attempt], shards: list[Shard] | None = None,
            legs: list[Build] | None = None) -> str:
    """The human form: status, counts, duration, runner, then each failing test with its traceback (a
    matrix build: each leg's line, then the failing tests grouped by leg)."""
    c = build.counts
    lines = [
        f"{build.repo} {build.commit[:12]} ({build.branch}) {build.subject}",
        f"status:   {build.status.value.upper()}" + (f" — {build.reason}" if build.reason else ""),
        f"tests:    {c.total} total, {c.passed} passed, {c.failed} failed, {c.errors} errors, {c.skipped} skipped"
        + (f" ({c.flaky} flaky)" if c.flaky else ""),
        _timing(build),
        f"runner:   {build.runner or '-'}   attempt {build.attempt}",
    ]
    if build.cut:
        lines.append(build.cut.line())
    if build.first_failure:
        lines.insert(3, first_failure_line(build))
    if build.pull_request is not None:
        pull = build.pull_request
        lines.insert(1, f"pull request #{pull.number}: its head {pull.head[:12]} merged into {build.branch} at "
                        f"{pull.base[:12] or '(not yet merged)'}")
    if build.first_failing is not None:
        lines.insert(2, build.first_failing.line() + f" (its parent {build.first_failing.parent[:10] or '-'} passed)")
    if len(attempts) > 1 or any(a.state is AttemptState.LOST for a in attempts):
        lines += [f"  {attempt_line(a)}" for a in attempts]
    for shard in shards or []:
        state = shard.status or shard.state.value
        lines.append(f"  shard {shard.number}: {state} on {shard.runner or '-'}, {shard.tests} test result(s)"
                     + (f", attempt {shard.attempt}" if shard.attempt > 1 else ""))
    for leg in legs or []:
        lines.append(f"  leg {leg_line(leg)}")
    bad = [t for t in tests if t.outcome in (Outcome.FAILED, Outcome.ERROR) and not t.via_subtests]
    shown_leg = ""
    for test in bad:
        if test.leg and test.leg != shown_leg:
            shown_leg = test.leg
            count = sum(1 for t in bad if t.leg == test.leg)
            lines += ["", f"=== leg {test.leg}: {count} failing " + "=" * max(3, 50 - len(test.leg))]
        lines += ["", f"{test.outcome.value.upper()}: {test.id}", "-" * 70, test.message.rstrip()]
    if build.order_dependent:
        lines += ["", f"order-dependent ({len(build.order_dependent)}): failed when run first, in the pre-pass, "
                      "passed in the suite's own order:"]
        lines += [f"  {test_id}" for test_id in build.order_dependent]
    flaky = [t for t in tests if t.outcome is Outcome.FLAKY and not t.subtest_of]
    if flaky:
        lines += ["", f"flaky ({len(flaky)}): failed, then passed when run again on its own:"]
        lines += [f"  {t.id}" + (f" [{t.leg}]" if t.leg else "") for t in flaky]
    if build.status in (Status.ERROR, Status.TIMEOUT) and build.log_tail:
        lines += ["", "last lines of the output:", build.log_tail]
    return "\n".join(lines)


def first_failure_line(build: Build) -> str:
    """"first failure after 3.2 s: tests/test_x.py::test_y" — when the build's first failing test was
    known (a record from before that was kept says only which one it was)."""
    seconds = build.first_failure_s
    after = f" after {seconds:.1f} s" if seconds is not None else ""
    return f"first failure{after}: {build.first_failure}"


def leg_line(leg: Build) -> str:
    """One matrix leg: name, status, passed/total, duration, runner, why it errored."""
    c = leg.counts
    took = f", {leg.duration_s:.1f} s" if leg.status.is_final and leg.started_at else ""
    on = f" on {leg.runner}" if leg.runner else ""
    return (f"{leg.leg}: {leg.status.value}, {c.passed}/{c.total} passed{took}{on}"
            + (f", attempt {leg.attempt}" if leg.attempt > 1 else "") + (f" — {leg.reason}" if leg.reason else ""))


def attempt_line(attempt: Attempt) -> str:
    """One attempt: number, state (or the status it reported), runner, times, why it was lost."""
    what = attempt.status if attempt.state is AttemptState.FINISHED and attempt.status else attempt.state.value
    when = f" {attempt.started_at or '?'} → {attempt.ended_at}" if attempt.ended_at else \
        (f" since {attempt.started_at}" if attempt.started_at else "")
    return (f"attempt {attempt.number}: {what} on {attempt.runner or '-'}{when}"
            + (f" ({attempt.reason})" if attempt.reason else ""))


def _timing(build: Build) -> str:
    if build.status.is_final:
        return f"duration: {build.duration_s:.2f} s (started {build.started_at or '-'})"
    if build.status is Status.RUNNING:
        return f"started:  {build.started_at}"
    return f"queued:   {build.queued_at}"


def _xml_text(text: str) -> str:
    return _XML_INVALID.sub("\ufffd", text)


def _split_id(test_id: str) -> tuple[str, str]:
    """unittest id → (classname, name); a subtest keeps its description in the name."""
    head, sep, sub = test_id.partition(" ")
    classname, _, name = head.rpartition(".")
    return (classname or head), (name or head) + (sep + sub if sep else "")


def as_junit(build: Build, tests: list[TestResult], legs: list[Build] | None = None) -> bytes:
    """JUnit XML that both the Ant (windyroad) schema and Jenkins' schema accept: one <testsuite>, or for
    a matrix build one per leg in a <testsuites>."""
    if not legs:
        suite = _suite(build, build.repo, build.counts, build.duration_s, build.runner, build.status, build.reason,
                       tests, build.log_tail, {})
        return ET.tostring(suite, encoding="utf-8", xml_declaration=True)
    root = ET.Element("testsuites")  # no attributes: the Ant schema allows none there
    for number, leg in enumerate(legs):
        mine = [t for t in tests if t.leg == leg.leg]
        suite = _suite(build, f"{build.repo} [{leg.leg}]", Counts.of(mine), leg.duration_s, leg.runner, leg.status,
                       leg.reason, mine, leg.log_tail,
                       {"leg": leg.leg, "python": leg.python, **{f"env.{k}": v for k, v in leg.env.items()}})
        suite.set("package", build.repo)
        suite.set("id", str(number))
        root.append(suite)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _suite(build: Build, name: str, c: Counts, duration_s: float, runner: str, status: Status, reason: str,
           tests: list[TestResult], log_tail: str, more: dict[str, str]) -> ET.Element:
    started = build.started_at or build.queued_at
    try:
        timestamp = datetime.fromisoformat(started).strftime("%Y-%m-%dT%H:%M:%S")
    except ValueError:
        timestamp = datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    host = (runner.split(".")[0] if runner else "") or socket.gethostname()
    suite = ET.Element("testsuite", {
        "name": _xml_text(name), "timestamp": timestamp, "hostname": _xml_text(host),
        "tests": str(c.total), "failures": str(c.failed), "errors": str(c.errors), "skipped": str(c.skipped),
        "time": f"{duration_s:.3f}",
    })
    props = ET.SubElement(suite, "properties")
    for key, value in (("commit", build.commit), ("branch", build.branch), ("status", status.value),
                       ("reason", reason), *more.items()):
        ET.SubElement(props, "property", {"name": key, "value": _xml_text(value)})
    for test in tests:
        classname, test_name = _split_id(test.id)
        case = ET.SubElement(suite, "testcase", {"name": _xml_text(test_name), "classname": _xml_text(classname),
                                                 "time": f"{test.duration_s:.6f}"})
        message = _xml_text(test.message)
        first_line = message.strip().splitlines()[-1] if message.strip() else ""
        if test.outcome is Outcome.FAILED:
            ET.SubElement(case, "failure", {"type": "AssertionError", "message": first_line}).text = message
        elif test.outcome is Outcome.ERROR:
            ET.SubElement(case, "error", {"type": first_line.split(":")[0] or "Error",
                                          "message": first_line}).text = message
        elif test.outcome is Outcome.SKIPPED:
            ET.SubElement(case, "skipped").text = message
    ET.SubElement(suite, "system-out").text = _xml_text(log_tail)
    ET.SubElement(suite, "system-err").text = ""
    return suite
