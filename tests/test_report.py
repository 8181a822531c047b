"""The reporter's three forms: the JSON contract, the human text, and JUnit XML valid against both
common schemas (tests/schemas, with their sources)."""

from pathlib import Path

import pytest
import xmlschema
from support import SCHEMAS

from voltci import report
from voltci.models import Attempt, AttemptState, Build, Counts, Outcome, Status, TestResult

CONTRACT_KEYS = {"repo", "commit", "branch", "status", "attempts", "runner", "queued_at", "started_at",
                 "finished_at", "duration_s", "counts", "tests", "log_tail"}


def sample() -> tuple[Build, list[TestResult], list[Attempt]]:
    build = Build(id="proj-" + "a" * 40, repo="proj", url="/p", commit="a" * 40, branch="main",
                  subject="Fix <things> & stuff", status=Status.FAILED, attempt=1, runner="host-1.1234",
                  queued_at="2026-11-24T10:00:00.000+00:00", started_at="2026-11-24T10:00:01.000+00:00",
                  finished_at="2026-11-24T10:00:03.500+00:00", duration_s=2.5,
                  counts=Counts(total=4, passed=1, failed=2, errors=1, skipped=1), log_tail="out\x1b[0m\x00")
    tests = [
        TestResult("pkg.test_a.T.test_ok", Outcome.PASSED, 0.00001, order=0),
        TestResult("pkg.test_a.T.test_bad", Outcome.FAILED, 0.2, "Traceback...\nAssertionError: 1 != 2", 1),
        TestResult("pkg.test_a.T.test_err", Outcome.ERROR, 0.1, "Traceback...\nKeyError: 'x'", 2),
        TestResult("pkg.test_a.T.test_skip", Outcome.SKIPPED, 0.0, "not <today>", 3),
        TestResult("pkg.test_a.T.test_sub (n=3)", Outcome.FAILED, 0.1, "AssertionError", 4,
                   subtest_of="pkg.test_a.T.test_sub"),
        TestResult("pkg.test_a.T.test_sub", Outcome.FAILED, 0.1, "1 subtest(s) did not pass", 5,
                   via_subtests=True),
    ]
    attempts = [Attempt(1, AttemptState.FINISHED, "host-1.1234", "2026-11-24T10:00:01", "2026-11-24T10:00:03")]
    return build, tests, attempts


def test_json_follows_the_contract() -> None:
    data = report.as_dict(*sample())
    assert set(data) >= CONTRACT_KEYS
    assert data["counts"] == {"total": 4, "passed": 1, "failed": 2, "errors": 1, "skipped": 1, "flaky": 0}
    assert data["tests"][1] == {"id": "pkg.test_a.T.test_bad", "outcome": "failed", "duration_s": 0.2,
                                "message": "Traceback...\nAssertionError: 1 != 2"}
    assert {t["outcome"] for t in data["tests"]} <= {"passed", "failed", "error", "skipped"}
    assert data["tests"][4]["subtest_of"] == "pkg.test_a.T.test_sub"


def test_text_shows_status_counts_runner_and_failing_tracebacks() -> None:
    text = report.as_text(*sample())
    assert "FAILED" in text and "4 total, 1 passed, 2 failed, 1 errors, 1 skipped" in text
    assert "host-1.1234" in text and "2.50 s" in text
    assert "FAILED: pkg.test_a.T.test_bad" in text and "AssertionError: 1 != 2" in text
    assert "ERROR: pkg.test_a.T.test_err" in text and "KeyError" in text
    assert "FAILED: pkg.test_a.T.test_sub (n=3)" in text


@pytest.mark.parametrize("status, code", [(Status.PASSED, 0), (Status.FAILED, 1), (Status.ERROR, 1),
                                          (Status.TIMEOUT, 1), (Status.QUEUED, 3), (Status.RUNNING, 3)])
def test_exit_status(status: Status, code: int) -> None:
    build = sample()[0]
    build.status = status
    assert report.exit_status(build) == code


@pytest.mark.parametrize("schema", ["junit-windyroad.xsd", "junit-jenkins.xsd"])
def test_junit_is_valid_against_the_schema(schema: str, tmp_path: Path) -> None:
    path = SCHEMAS / schema
    assert path.is_file(), f"JUnit schema missing: {path}"
    build, tests, _ = sample()
    xml = report.as_junit(build, tests)
    out = tmp_path / "report.xml"
    out.write_bytes(xml)
    xmlschema.XMLSchema(str(path)).validate(str(out))
    assert b"&lt;today&gt;" in xml  # text is escaped, not markup


def test_the_first_failure_and_when_it_was_known_are_in_json_and_text() -> None:
    build, tests, attempts = sample()
    data = report.as_dict(build, tests, attempts)
    assert (data["first_failure"], data["first_failure_s"]) == (None, None)  # the name is a contract
    build.first_failure, build.first_failure_at = "pkg.test_a.T.test_bad", "2026-11-24T10:00:04.237+00:00"
    data = report.as_dict(build, tests, attempts)
    assert (data["first_failure"], data["first_failure_s"]) == ("pkg.test_a.T.test_bad", 3.24)
    text = report.as_text(build, tests, attempts)
    assert "first failure after 3.2 s: pkg.test_a.T.test_bad" in text.splitlines()[3]
    build.first_failure_at = "2026-11-24T10:00:00.900+00:00"  # another runner's clock, a little behind
    assert report.as_dict(build, tests, attempts)["first_failure_s"] == 0.0
