"""The readers of what a build writes, and what a build keeps, on files made here: every bound holds
before parsing, every value is checked, a fault is one line naming the line and what was wrong, and
what is cut is counted. (tests/test_bounded_results.py tries the same through real builds.)"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import resource
from pathlib import Path

import pytest

from voltci import keys, report
from voltci.models import Build, Counts, Cut, Outcome, RunOutcome, Status, TestResult, Timings
from voltci.runner import bounds, junitxml
from voltci.runner.testrun import parse_results, read_listing
from voltci.store import Store, budget, codec
from voltci.store.tx import raw

SUMMARY = json.dumps({"summary": {"tests_run": 2, "failures": 1, "errors": 0, "skipped": 0,
                                  "import_failures": []}})


def results(tmp_path: Path, *lines: str | bytes, summary: bool = True) -> Path:
    path = tmp_path / "results.jsonl"
    with open(path, "wb") as fh:
        for line in lines:
            fh.write((line.encode() if isinstance(line, str) else line) + b"\n")
        if summary:
            fh.write(SUMMARY.encode() + b"\n")
    return path


def record(test_id: object = "t.T.test_a", outcome: object = "passed", duration: object = 0.5, **more: object) -> str:
    return json.dumps({"id": test_id, "outcome": outcome, "duration_s": duration, "message": "", **more})


def good(tmp_path: Path) -> list[str]:
    return [record(), record("t.T.test_b", "failed", 0.25, message="Traceback: boom")]


def test_a_well_formed_file_reads_as_before(tmp_path) -> None:
    outcome = parse_results(results(tmp_path, *good(tmp_path)), 1)
    assert outcome.status is Status.FAILED and outcome.reason == ""
    assert [(t.id, t.outcome, t.duration_s) for t in outcome.tests] == [
        ("t.T.test_a", Outcome.PASSED, 0.5), ("t.T.test_b", Outcome.FAILED, 0.25)]
    assert not outcome.cut


def test_a_process_start_is_until_its_session_began_and_never_more_than_it_took(tmp_path) -> None:
    lines = [record(cost_s=0.5), record("t.T.test_b", "failed", 0.25, cost_s=0.25)]

    def start(summary: dict | None, took_s: float | None = 2.0, launched_at: float | None = 1000.0) -> float:
        path = results(tmp_path, *lines, *([json.dumps({"summary": summary})] if summary else []), summary=False)
        return parse_results(path, 1, took_s=took_s, launched_at=launched_at).timings.start_s

    counted = {"tests_run": 2, "import_failures": []}
    assert start({**counted, "began_at": 1000.375}) == 0.375  # from Volt's launch to the session's start
    assert start({**counted, "began_at": 1000.375}, took_s=None) == 0.0  # not timed: not known
    assert start(None) == 1.25  # no summary (a crash): what it took besides its tests
    assert start({**counted, "began_at": 1e9}) == 2.0  # the build's own numbers: never more than it took
    assert start({**counted, "began_at": 10.0}) == 0.0
    for forged in ("soon", True, None):  # not a time: the start is counted as without one
        assert start({**counted, "began_at": forged}) == 1.25
    forged_costs = [record(cost_s=900.0)]
    assert parse_results(results(tmp_path, *forged_costs, summary=False), 0, took_s=1.0).timings.start_s == 0.0


@pytest.mark.parametrize(("raw", "named"), [
    ("1e999", "inf"), ("NaN", "nan"), ("-1", "-1"), ('"x"', "'x'"), ("1" + "0" * 400, "1000"),
    ("true", "True"), ("2000000", "2000000")])
def test_a_forged_duration_ends_the_run_error_naming_the_line(tmp_path, raw, named) -> None:
    forged = f'{{"id": "t.T.test_c", "outcome": "passed", "duration_s": {raw}}}'
    outcome = parse_results(results(tmp_path, *good(tmp_path), forged), 0)
    assert outcome.status is Status.ERROR
    assert outcome.reason.startswith("the test results are not valid: results.jsonl line 3: duration_s is not a "
                                     "number of seconds"), outcome.reason
    assert named in outcome.reason and "\n" not in outcome.reason
    assert [t.id for t in outcome.tests] == ["t.T.test_a", "t.T.test_b"]  # what came before is kept


@pytest.mark.parametrize(("line", "fault"), [
    ("[1, 2]", "line 3: not a JSON object"),
    ('"just a string"', "line 3: not a JSON object"),
    (record(42), "line 3: id is not a string (42)"),
    (record(None), "line 3: id is not a string (None)"),
    (record(outcome="flaky"), "line 3: outcome is not one of passed, failed, error, skipped ('flaky')"),
    (record(outcome=["passed"]), "line 3: outcome is not one of"),
    (record(message=["a"]), "line 3: message is not a string"),
    (record(subtest_of=7), "line 3: subtest_of is not a string"),
    (record(via_subtests="yes"), "line 3: via_subtests is not true or false"),
    ('{"summary": [1]}', "line 3: the summary is not a JSON object"),
    ('{"summary": {"tests_run": -4}}', "line 3: summary's tests_run is not a count (-4)"),
    ('{"summary": {"tests_run": 2, "import_failures": [["a", 1]]}}', "summary's import_failures is not a list"),
    ('{"summary": {"tests_run": 2, "collect_errors": "x"}}', "summary's collect_errors is not a list"),
    ('{"summary": {"tests_run": 2, "exitstatus": 1.5}}', "summary's exitstatus is not a whole number"),
    ('{"discovery_error": {"a": 1}}', "line 3: discovery_error is not a string"),
    ("[" * 100_000 + "]" * 100_000, "line 3 nests deeper than 8 levels"),
    ('{"id": "' + "[" * 50 + '", "outcome": "passed", "x": [[[[[[[[[[1]]]]]]]]]]}', "line 3 nests deeper"),
    (b"\x89PNG\r\n\x1a\x00\xff\xfe garbage", "line 3 is not JSON"),
    ("{not json}", "line 3 is not JSON"),
])
def test_a_record_that_makes_no_sense_is_one_line_naming_it(tmp_path, line, fault) -> None:
    outcome = parse_results(results(tmp_path, *good(tmp_path), line), 0)
    assert outcome.status is Status.ERROR
    assert outcome.reason.startswith("the test results are not valid: results.jsonl ")
    assert fault in outcome.reason, outcome.reason
    assert "\n" not in outcome.reason and len(outcome.reason) < 300


def test_brackets_inside_strings_are_no_nesting(tmp_path) -> None:
    line = record("t.T.test_[[[[[[[[[[[[]]]]", message="{{{{{{{{{{{{[[[[[[[[[")
    outcome = parse_results(results(tmp_path, line), 0)
    assert outcome.reason == "" and outcome.tests[0].id == "t.T.test_[[[[[[[[[[[[]]]]"


def test_a_line_cut_by_a_kill_at_the_end_is_not_a_fault(tmp_path) -> None:
    path = results(tmp_path, *good(tmp_path), summary=False)
    with open(path, "ab") as fh:
        fh.write(b'{"id": "t.T.test_c", "outcome": "pas')
    outcome = parse_results(path, -9)
    assert outcome.status is Status.ERROR and "before reporting all results" in outcome.reason
    assert len(outcome.tests) == 2


def test_a_line_without_end_larger_than_the_bound_is_refused_unread(tmp_path) -> None:
    path = results(tmp_path, *good(tmp_path), summary=False)
    with open(path, "ab") as fh:
        fh.write(b'{"id": "' + b"x" * (100 * 1024 * 1024))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcome = parse_results(path, 0)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert outcome.status is Status.ERROR
    assert outcome.reason == "the test results are not valid: results.jsonl line 3 is longer than 8 MiB"
    assert grown_mib < 40, f"reading it took {grown_mib:.0f} MiB"


def test_a_file_over_its_size_bound_is_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(bounds, "FILE_MAX", 4 * 1024 * 1024)
    monkeypatch.setattr(bounds.lines, "__defaults__", (bounds.FILE_MAX,))
    lines = [record(f"t.T.test_{n}") for n in range(60_000)]
    outcome = parse_results(results(tmp_path, *lines), 0)
    assert outcome.reason == "the test results are not valid: results.jsonl is larger than 4 MiB"


def test_too_many_records_is_a_fault(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(bounds, "RECORDS_MAX", 100)
    outcome = parse_results(results(tmp_path, *(record(f"t.T.test_{n}") for n in range(150))), 0)
    assert outcome.reason == "the test results are not valid: results.jsonl has more than 100 lines"


def test_a_fifo_or_a_link_in_place_of_the_results_is_refused(tmp_path) -> None:
    fifo = tmp_path / "results.jsonl"
    os.mkfifo(fifo)
    outcome = parse_results(fifo, 0)  # would block forever if it were opened for reading as a file
    assert outcome.status is Status.ERROR and "results.jsonl" in outcome.reason
    assert "not a regular file" in outcome.reason
    secret = tmp_path.parent / "host-secret"
    secret.write_text(SUMMARY + "\n")
    fifo.unlink()
    fifo.symlink_to(secret)
    linked = parse_results(fifo, 0)
    assert linked.status is Status.ERROR and "link" in linked.reason


def test_harmless_values_are_dropped_and_counted(tmp_path) -> None:
    lines = [record(cost_s=float("inf")), record("t.T.test_b", cost_s="slow"), record("t.T.test_c", cost_s=0.25),
             json.dumps({"summary": {"tests_run": 3, "collect_s": {"a.py": -1, "b.py": 0.5, "c.py": "x"}}})]
    outcome = parse_results(results(tmp_path, *lines, summary=False), 0)
    assert outcome.status is Status.PASSED
    assert outcome.cut.values_dropped == 4
    assert outcome.timings.tests == {"t.T.test_c": 0.25}


def test_lone_surrogates_are_replaced_not_carried_to_redis(tmp_path, fake) -> None:
    line = '{"id": "t.T.test_\\ud800", "outcome": "failed", "message": "bad \\udfff"}'
    outcome = parse_results(results(tmp_path, line), 1)
    assert outcome.tests[0].id == "t.T.test_\ufffd" and outcome.tests[0].message == "bad \ufffd"
    store = stored(fake, outcome)
    assert store.records.get_tests("b")[0].id == "t.T.test_\ufffd"


def test_many_long_random_messages_are_kept_within_the_budget(tmp_path) -> None:
    rng = random.Random(7)
    lines = [record(f"t.T.test_{n:05}", "failed", message=base64.b64encode(rng.randbytes(768)).decode())
             for n in range(20_000)]
    outcome = parse_results(results(tmp_path, *lines), 1)
    assert outcome.counts.failed == 20_000 and len(outcome.tests) == 20_000
    kept = sum(len(t.message) for t in outcome.tests)
    assert kept <= budget.LISTED_MESSAGES_MAX
    assert outcome.cut.messages_dropped == 20_000 - sum(1 for t in outcome.tests if t.message)
    assert outcome.cut.messages_dropped > 10_000


def test_listing_of_ids_is_bounded_and_checked(tmp_path) -> None:
    path = tmp_path / "test-ids.jsonl"
    path.write_text("".join(json.dumps({"id": f"t.T.test_{n}"}) + "\n" for n in range(5)))
    assert read_listing(path, tmp_path) == [f"t.T.test_{n}" for n in range(5)]
    for bad in ('{"id": 5}', "[" * 10_000, '{"id": "' + "x" * 5000 + '"}', "\x00\xff"):
        path.write_text(json.dumps({"id": "ok"}) + "\n" + bad + "\n")
        assert read_listing(path, tmp_path) == []


# ------------------------------------------------------------------ what a build keeps


def test_a_long_message_keeps_its_head_and_tail_with_a_marker() -> None:
    text = "HEAD" + "é" * 50_000 + "TAIL"
    kept, cut = budget.clip_message(text)
    assert kept.startswith("HEAD") and kept.endswith("TAIL")
    assert f"[volt: {cut} bytes of this message were cut here]" in kept
    assert len(kept.encode()) <= budget.MESSAGE_MAX
    assert cut == len(text.encode()) - len(kept.encode()) + len(kept.split("\n")[-2].encode()) + 2
    assert budget.clip_message(kept) == (kept, 0)  # cutting again changes nothing


def test_a_long_id_keeps_its_head_and_a_hash_so_it_stays_distinct_and_stable() -> None:
    a, b = "t." + "x" * 5000 + "a", "t." + "x" * 5000 + "b"
    (clipped_a, cut_a), (clipped_b, _) = budget.clip_id(a), budget.clip_id(b)
    assert cut_a and clipped_a != clipped_b and len(clipped_a) <= budget.ID_MAX
    assert budget.clip_id(a) == (clipped_a, True) and budget.clip_id(clipped_a) == (clipped_a, False)


def test_the_keeper_keeps_failures_before_passing_tests_and_counts_the_rest() -> None:
    keeper = budget.Keeper(tests_max=10)
    tests = [TestResult(f"t.T.test_{n:02}", Outcome.FAILED if n % 7 == 0 else Outcome.PASSED, order=n)
             for n in range(40)]
    for test in tests:
        keeper.add(test)
    kept, cut = keeper.done()
    failures = [t.id for t in tests if t.outcome is Outcome.FAILED]
    assert len(kept) == 10 and set(failures) <= {t.id for t in kept}
    assert [t.order for t in kept] == list(range(10)) and kept == sorted(kept, key=lambda t: t.order)
    assert cut.tests_not_kept == 30 and Counts.of(kept) + cut.counts == Counts.of(tests)


def test_stored_results_fit_the_budget_and_say_what_was_cut(fake, monkeypatch) -> None:
    rng = random.Random(3)

    def noise(k: int) -> str:
        return base64.b64encode(rng.randbytes(k * 3 // 4)).decode()
    tests = [TestResult(f"t.{noise(60)}", Outcome.FAILED if n % 2 else Outcome.PASSED, float("inf") if n == 3 else 0.1,
                        noise(2000), order=n) for n in range(30_000)]
    outcome = RunOutcome(Status.FAILED, tests, Counts.of(tests), "x" * 100_000, "y" * 200_000,
                         Timings({t.id: 0.1 for t in tests}))
    store = stored(fake, outcome)
    blobs = raw(fake, "HGETALL", keys.build_results("b"))
    assert sum(len(v) for v in blobs.values()) <= budget.RESULTS_MAX_BYTES
    build = store.records.get_build("b")
    assert build.counts == Counts.of(tests)  # every test that ran is counted, kept or not
    assert build.cut.tests_not_kept > 0 and build.cut.messages_dropped > 0 and build.cut.values_dropped == 1
    assert len(build.reason.encode()) <= budget.REASON_MAX and len(build.log_tail.encode()) <= budget.LOG_TAIL_MAX
    shown = report.as_dict(build, store.records.get_tests("b"), [])
    assert shown["cut"] == build.cut.to_dict() and shown["cut"]["tests_not_kept"] == build.cut.tests_not_kept
    text = report.as_text(build, store.records.listed_tests("b"), [])
    assert [line for line in text.splitlines() if line.startswith("cut:")] == [build.cut.line()]
    assert len(outcome.tests) == 30_000 and outcome.tests[3].duration_s == float("inf")  # the caller's is untouched


def test_a_report_with_nothing_cut_says_zeros_and_no_line(fake) -> None:
    tests = [TestResult("t.T.test_a", Outcome.PASSED, 0.1)]
    store = stored(fake, RunOutcome(Status.PASSED, tests, Counts.of(tests)))
    build = store.records.get_build("b")
    assert report.as_dict(build, tests, [])["cut"] == dict.fromkeys(Cut.FIELDS, 0)
    assert "cut:" not in report.as_text(build, tests, [])
    assert not fake.hexists(keys.build("b"), "cut")


def test_shards_merge_what_each_cut(fake) -> None:
    from voltci.models import Shard
    from voltci.store import merge
    cut = Cut(tests_not_kept=5, counts=Counts(total=5, passed=5))
    merged = merge({0: Shard(0, status="passed"), 1: Shard(1, status="passed")},
                   {0: [TestResult("a", Outcome.PASSED)], 1: [TestResult("b", Outcome.FAILED)]}, "", Timings(), cut)
    assert merged.counts == Counts(total=7, passed=6, failed=1) and merged.cut.tests_not_kept == 5
    assert merged.status is Status.FAILED


def stored(fake, outcome: RunOutcome) -> Store:
    store = Store(fake)
    store.builds.add(Build(id="b", repo="proj", url="/r", commit="a" * 40, branch="main"), 1.0)
    assert store.builds.start_attempt("b", 1, "r1") is not None
    assert store.builds.finish("b", 1, "r1", outcome)
    return store


# ------------------------------------------------------------------ JUnit XML


def junit(*cases: str, head: str = "") -> io.BytesIO:
    return io.BytesIO((head + "<testsuite>" + "".join(cases) + "</testsuite>").encode())


def test_junit_reads_outcomes_messages_and_times() -> None:
    found = junitxml.parse(junit('<testcase classname="a.B" name="t1" time="0.5"/>', '<testcase name="t3"/>',
                                '<testcase classname="a.B" name="t2" time="x"><failure message="m">'
                                "Traceback\n  boom</failure></testcase>",
                                '<testcase name="t3"><skipped message="why"/></testcase>'), "r.xml")
    assert [(t.id, t.outcome, t.duration_s, t.message) for t in found.tests] == [
        ("a.B.t1", Outcome.PASSED, 0.5, ""), ("t3", Outcome.PASSED, 0.0, ""),
        ("a.B.t2", Outcome.FAILED, 0.0, "Traceback\n  boom"),
        ("t3 [2]", Outcome.SKIPPED, 0.0, "why")]
    assert found.counts == Counts(total=4, passed=2, failed=1, skipped=1) and found.cut.values_dropped == 1


@pytest.mark.parametrize(("document", "fault"), [
    ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">]>'
     "<testsuite><testcase name='&lol2;'/></testsuite>", "declares a DOCTYPE"),
    ('<!DOCTYPE x SYSTEM "file:///etc/passwd"><testsuite/>', "declares a DOCTYPE"),
    ("<testsuite>" + "<a>" * 100_000 + "</a>" * 100_000 + "</testsuite>", "nests elements deeper than 32"),
    ("<html><body/></html>", "is not JUnit XML (its root element is <html>)"),
    ("<testsuite><testcase name='a'><testcase name='b'/></testcase></testsuite>", "a <testcase> inside"),
    ("<testsuite><testcase", "is not well-formed XML"),
    ("\x00\x01binary", "is not well-formed XML"),
    ("", "is not well-formed XML"),
])
def test_junit_faults_are_one_line(document, fault) -> None:
    with pytest.raises(junitxml.JUnitError) as raised:
        junitxml.parse(io.BytesIO(document.encode()), "r.xml")
    assert fault in str(raised.value) and "\n" not in str(raised.value)


def test_junit_with_a_huge_attribute_or_comment_is_refused_before_it_is_buffered() -> None:
    for document in (b"<testsuite><testcase name='" + b"x" * (6 << 20) + b"'/></testsuite>",
                     b"<testsuite><!--" + b"x" * (6 << 20) + b"--></testsuite>"):
        with pytest.raises(junitxml.JUnitError, match="larger than 4 MiB"):
            junitxml.parse(io.BytesIO(document), "r.xml")


def test_junit_text_of_megabytes_streams_into_head_and_tail(tmp_path) -> None:
    class Stream(io.RawIOBase):
        """A JUnit document with a failure of 100 MB of text, made as it is read."""

        def __init__(self) -> None:
            self.parts = iter([b"<testsuite><testcase name='big'><failure>HEAD", *([b"y" * (1 << 20)] * 100),
                               b"TAIL</failure></testcase><testcase name='next'/></testsuite>"])

        def read(self, size: int = -1) -> bytes:
            return next(self.parts, b"")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    found = junitxml.parse(Stream(), "r.xml")  # type: ignore[arg-type]
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    big = found.tests[0]
    assert big.message.startswith("HEAD") and big.message.endswith("TAIL")
    assert "bytes of this message were cut" in big.message
    assert len(big.message.encode()) <= budget.MESSAGE_MAX and found.cut.messages_shortened == 1
    assert [t.id for t in found.tests] == ["big", "next"]
    assert grown_mib < 40, f"reading it took {grown_mib:.0f} MiB"


def test_junit_with_more_test_cases_than_kept_counts_them_all(monkeypatch) -> None:
    monkeypatch.setattr(budget, "TESTS_MAX", 1000)
    monkeypatch.setattr(budget.Keeper.__init__, "__defaults__", (1000, budget.LISTED_MESSAGES_MAX,
                                                               budget.OTHER_MESSAGES_MAX, False))
    cases = "".join(f"<testcase name='t{n}'/>" for n in range(5000)) + "<testcase name='bad'><error/></testcase>"
    found = junitxml.parse(junit(cases), "r.xml")
    assert len(found.tests) == 1000 and found.tests[-1].id == "bad"
    assert found.counts == Counts(total=5001, passed=5000, errors=1) and found.cut.tests_not_kept == 4001


def test_junit_with_more_test_cases_than_read_is_a_fault(monkeypatch) -> None:
    monkeypatch.setattr(junitxml, "RECORDS_MAX", 100)
    with pytest.raises(junitxml.JUnitError, match="more than 100 test cases"):
        junitxml.parse(junit(*(f"<testcase name='t{n}'/>" for n in range(101))), "r.xml")


def test_junit_link_is_refused(tmp_path) -> None:
    (tmp_path / "host.xml").write_text("<testsuite><testcase name='host'/></testsuite>")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "report.xml").symlink_to(tmp_path / "host.xml")
    with pytest.raises(junitxml.JUnitError, match="cannot read report.xml"):
        junitxml.read(tree / "report.xml", tree)


def test_stored_counts_and_cut_read_back_as_zero_when_damaged() -> None:
    assert Cut.from_json("{not json") == Cut()
    assert Cut.from_json('{"tests_not_kept": -3, "ids_shortened": "x"}') == Cut()
    assert codec._seconds_out(float("inf")) == 0


def test_results_that_cannot_be_encoded_end_the_build_error_not_the_runner(fake, monkeypatch) -> None:
    def broken(tests):
        raise OverflowError("cannot convert float infinity to integer")
    monkeypatch.setattr(codec, "encode_tests", broken)
    tests = [TestResult("t.T.test_a", Outcome.PASSED, 0.1)]
    store = stored(fake, RunOutcome(Status.PASSED, tests, Counts.of(tests)))
    build = store.records.get_build("b")
    assert build.status is Status.ERROR and build.results_stored == 1
    assert build.reason == "the results could not be stored: OverflowError: cannot convert float infinity to integer"
    assert build.counts == Counts.of(tests)


def test_matrix_legs_merge_what_each_cut_and_share_the_output_budget(fake, tmp_path) -> None:
    from voltci.logstream import LogPump
    from voltci.store import merge_legs
    legs = [Build(id=f"b~{n}", repo="proj", url="/r", commit="a" * 40, branch="main", parent="b", leg=f"py3.1{n}",
                  status=Status.PASSED, cut=Cut(tests_not_kept=3, counts=Counts(total=3, passed=3))) for n in range(2)]
    merged = merge_legs(legs, {"b~0": [TestResult("a", Outcome.PASSED)], "b~1": [TestResult("a", Outcome.PASSED)]})
    assert merged.counts == Counts(total=8, passed=8) and merged.cut.tests_not_kept == 6
    store = Store(fake)
    store.builds.add(Build(id="b", repo="proj", url="/r", commit="a" * 40, branch="main", legs=4), 1.0)
    store.builds.add(legs[0], 1.0)
    assert LogPump(store, "b~0", 1, tmp_path / "out.log", cap_bytes=10_000).cap == 2_500
    assert LogPump(store, "b", 1, tmp_path / "out.log", cap_bytes=10_000).cap == 10_000
