"""The compact encoding of finished results (pure, and through the store on fakeredis): every field
round-trips, the listed tests read alone, and a build's reports — JSON, text, JUnit — are the same
whether it was stored compact or as one hash field per test, as earlier versions stored it."""

from __future__ import annotations

import json
import zlib

import pytest
from support import SHA_A, add

from voltci import keys, report
from voltci.models import Counts, Outcome, RunOutcome, Status, TestResult, Timings
from voltci.store import CorruptRecord, Store, codec


def suite() -> list[TestResult]:
    """Every kind of entry a run produces, in an order that is not the order of the ids."""
    tests = [TestResult(f"tests.test_m{m}.T.test_{n}[{'é' if n % 7 == 0 else 'x'}-{n}]", Outcome.PASSED,
                        round(0.000123 * n, 6), order=m * 50 + n) for m in range(4) for n in range(50)]
    tests += [
        TestResult("tests.test_z.T.test_fail", Outcome.FAILED, 0.25, "Traceback …\nAssertionError: 1 != 2", 200),
        TestResult("tests.test_z.T.test_error", Outcome.ERROR, 1 / 3, "Traceback …\nKeyError: 'x'", 201),
        TestResult("tests.test_z.T.test_skip", Outcome.SKIPPED, 0.0, "not on Tuesdays", 202),
        TestResult("tests.test_z.T.test_flaky", Outcome.FLAKY, 0.5, "failed once: AssertionError", 203),
        TestResult("tests.test_z.T.test_sub (n=3)", Outcome.FAILED, 0.1, "AssertionError: 3", 205,
                   subtest_of="tests.test_z.T.test_sub"),
        TestResult("tests.test_z.T.test_sub", Outcome.FAILED, 0.1, "1 subtest(s) did not pass", 204,
                   via_subtests=True),
        TestResult("tests.test_z.T.test_line\nbreak", Outcome.PASSED, 1e-7, order=207),
    ]
    return tests[::-1]  # stored in any order; read back in the order they ran


def test_every_field_round_trips_in_run_order() -> None:
    tests = suite()
    fields = codec.encode_tests(tests)
    assert set(fields) == {"all", "listed"}
    assert codec.decode_tests(fields) == sorted(tests, key=lambda t: t.order)


def test_listed_tests_decode_without_the_others() -> None:
    listed = codec.decode_listed(codec.encode_tests(suite())["listed"])
    assert [(t.id, t.outcome) for t in listed] == [
        ("tests.test_z.T.test_fail", Outcome.FAILED), ("tests.test_z.T.test_error", Outcome.ERROR),
        ("tests.test_z.T.test_flaky", Outcome.FLAKY), ("tests.test_z.T.test_sub", Outcome.FAILED),
        ("tests.test_z.T.test_sub (n=3)", Outcome.FAILED)]
    assert listed[0].message.endswith("AssertionError: 1 != 2") and listed[3].via_subtests


def test_a_repeated_id_keeps_the_last_result_as_a_hash_did() -> None:
    first = TestResult("t.T.test_a", Outcome.FAILED, 0.1, "boom", 0)
    again = TestResult("t.T.test_a", Outcome.PASSED, 0.2, "", 1)
    assert codec.decode_tests(codec.encode_tests([first, again])) == [again]


def test_timings_ids_and_logs_round_trip() -> None:
    timings = Timings({t.id: t.duration_s for t in suite()}, {"tests/test_a.py": 0.125, "tests/b.rst": 1 / 3})
    assert codec.decode_timings(codec.encode_timings(timings)) == timings
    assert codec.decode_timings(codec.encode_timings(Timings({"t.T.test_a": 1.5}))) == Timings({"t.T.test_a": 1.5})
    started = Timings({"t.T.test_a": 1.5}, start_s=0.375)  # the test process's own start
    assert codec.decode_timings(codec.encode_timings(started)) == started
    ids = sorted(timings.tests)
    assert codec.decode_ids(codec.encode_ids(ids)) == ids
    text = "line ü\n".encode() * 1000
    assert codec.decompress_log(codec.compress_log(text)) == text


def test_a_large_suite_is_small() -> None:
    tests = [TestResult(f"tests.test_version.test_parse[{major}.{minor}.post{n}]", Outcome.PASSED, 0.001, order=i)
             for i, (major, minor, n) in enumerate((a, b, c) for a in range(10) for b in range(30) for c in range(90))]
    size = sum(map(len, codec.encode_tests(tests).values()))
    assert len(tests) == 27_000 and size < 100_000, size  # a hash of one field per test took over 2 MB


def test_a_damaged_blob_is_one_clear_error() -> None:
    with pytest.raises(CorruptRecord, match="does not decode"):
        codec.decode_tests({"all": b"not zlib"})
    with pytest.raises(CorruptRecord, match="format 9"):
        codec.decode_tests({"all": zlib.compress(json.dumps({"v": 9}).encode())})


def stored_both_ways(fake) -> tuple[Store, str, str]:
    """The same run stored by the store (compact) and as earlier versions stored it (a field per test)."""
    store = Store(fake)
    tests = suite()
    outcome = RunOutcome(Status.FAILED, tests, Counts.of(tests), "", "the last lines",
                         Timings({t.id: t.duration_s + 0.001 for t in tests if not t.subtest_of}, {"tests/x.py": 0.5}))
    compact = add(fake, "proj", SHA_A)
    store.builds.start_attempt(compact.id, 1, "host.1")
    assert store.builds.finish(compact.id, 1, "host.1", outcome)
    legacy = add(fake, "old", SHA_A)
    store.builds.start_attempt(legacy.id, 1, "host.1")
    assert store.builds.finish(legacy.id, 1, "host.1",
                               RunOutcome(Status.FAILED, [], outcome.counts, "", "the last lines"))
    fake.hset(keys.build_tests(legacy.id), mapping={t.id: t.to_json() for t in tests})
    return store, compact.id, legacy.id


def test_reports_are_the_same_whether_stored_compact_or_per_test(fake) -> None:
    store, compact, legacy = stored_both_ways(fake)
    assert fake.exists(keys.build_results(compact)) and not fake.exists(keys.build_tests(compact))

    def reports(build_id: str) -> tuple:
        build = store.records.get_build(build_id)
        # the two records differ only in their repository's name and times
        build.repo, build.started_at, build.finished_at, build.duration_s = "same", "2026-11-24T10:00:00", "", 1.5
        build.first_failure = build.first_failure_at = ""  # earlier versions kept no first failure at the end
        tests, attempts = store.records.get_tests(build_id), store.records.get_attempts(build_id)
        for attempt in attempts:
            attempt.started_at = attempt.ended_at = "2026-11-24T10:00:00"
        return (json.dumps(report.as_dict(build, tests, attempts)), report.as_junit(build, tests),
                report.as_text(build, tests, attempts),
                report.as_text(build, store.records.listed_tests(build_id), attempts))
    compact_reports, legacy_reports = reports(compact), reports(legacy)
    assert compact_reports == legacy_reports
    assert compact_reports[2] == compact_reports[3]  # the text report needs only the listed tests
    data = json.loads(compact_reports[0])
    assert len(data["tests"]) == len(suite()) and data["counts"]["flaky"] == 1
    assert {"id": "tests.test_z.T.test_flaky", "outcome": "passed", "duration_s": 0.5,
            "message": "failed once: AssertionError", "flaky": True} in data["tests"]


def test_timings_are_kept_compact_and_an_older_hash_is_still_read(fake) -> None:
    store, compact, _ = stored_both_ways(fake)
    timings = store.history.timings("proj")
    assert timings.tests["tests.test_z.T.test_fail"] == 0.251 and timings.files == {"tests/x.py": 0.5}
    assert "tests.test_z.T.test_sub (n=3)" not in timings.tests and fake.type(keys.repo_timings("proj")) == "string"
    fake.hset(keys.repo_durations("older"), mapping={"t.T.test_a": "1.5"})
    assert store.history.timings("older") == Timings({"t.T.test_a": 1.5})


def test_an_ended_build_keeps_its_output_compressed(fake) -> None:
    store = Store(fake)
    build = add(fake, "proj", SHA_A)
    store.builds.start_attempt(build.id, 1, "host.1")
    text = "".join(f"tick {n} ü\n" for n in range(5000))
    assert store.logs.append(build.id, 1, text) == len(text.encode())
    assert store.logs.read(build.id, 10) == text.encode()[10:].decode()
    assert store.builds.finish(build.id, 1, "host.1", RunOutcome(Status.PASSED, [], Counts()))
    assert store.records.get_build(build.id).log_compressed
    assert len(fake.execute_command("GET", keys.build_log(build.id), NEVER_DECODE=[])) < len(text) / 4
    assert store.logs.read(build.id) == text and store.logs.read(build.id, 10) == text.encode()[10:].decode()
    assert store.logs.append(build.id, 1, "late\n") is None  # an ended attempt writes nothing more
    assert store.logs.read(build.id) == text
