"""A build's first failing test, the moment it is known (store/firstfailure.py): written once with its
time (and, apart, when the attempt's tests began), told once (the first-failures channel, a
`build.first_failure` webhook message in the outbox), kept when the build ends, forgotten by a new
attempt; found at the end when nobody saw it while the build ran, from a shard that ends early, and
from a matrix leg for its build; read from the results files within a tenth of a second. Real Redis."""

from __future__ import annotations

import json
import time

from support import SHA_A, outcome

from voltci import keys, report
from voltci.clock import parse
from voltci.config import Settings
from voltci.models import Build, Counts, Leg, Outcome, RunOutcome, Status, TestResult
from voltci.runner.build import Progress, Watch
from voltci.store import Store


def started(store: Store, sha: str = SHA_A) -> Build:
    build = Build(id=keys.build_id("proj", sha), repo="proj", url="/r", commit=sha, branch="main", subject="s")
    assert store.builds.submit(build)
    running = store.builds.start_attempt(build.id, 1, "r1")
    assert running is not None
    return running


def failed(*outcomes: Outcome) -> RunOutcome:
    tests = [TestResult(f"t.T.test_{n}", o, 0.1, order=n) for n, o in enumerate(outcomes)]
    counts = Counts.of(tests)
    return RunOutcome(Status.FAILED if counts.failed or counts.errors else Status.PASSED, tests, counts)


def messages(store: Store, event: str) -> list[dict]:
    found = [json.loads(m) for m in store.r.lrange(keys.outbox(), 0, -1)]
    return [m for m in reversed(found) if m.get("event", "build.ended") == event]  # oldest first


def test_the_first_failure_is_written_once_with_its_time_told_once_and_kept_when_the_build_ends(conn) -> None:
    store = Store(conn, Settings(max_attempts=2))
    build = started(store)
    told = store.r.pubsub(ignore_subscribe_messages=True)
    told.subscribe(keys.first_failures())
    store.builds.set_progress(build.id, 3)
    assert store.records.get_build(build.id).first_failure_s is None
    time.sleep(0.2)  # some time passes before the test fails
    store.builds.set_progress(build.id, 5, 1, "tests/test_x.py::test_one")
    store.builds.set_progress(build.id, 9, 2, "tests/test_x.py::test_two")  # not the first: nothing changes
    running = store.records.get_build(build.id)
    assert (running.failing, running.first_failure) == (2, "tests/test_x.py::test_one")
    assert 0.2 <= running.first_failure_s < 60
    assert parse(running.first_failure_at) is not None
    sent = messages(store, "build.first_failure")
    assert [(m["build"], m["first_failure"], m["attempt"]) for m in sent] == [
        (build.id, "tests/test_x.py::test_one", 1)]
    assert sent[0]["first_failure_s"] == running.first_failure_s
    heard = [told.get_message(timeout=2.0) for _ in range(2)]
    assert [json.loads(m["data"]) for m in heard if m] == [{"build": build.id, "test": "tests/test_x.py::test_one"}]
    told.close()

    assert store.builds.finish(build.id, 1, "r1", failed(Outcome.PASSED, Outcome.FAILED))
    ended = store.records.get_build(build.id)
    assert (ended.status, ended.first_failure, ended.first_failure_at) == (
        Status.FAILED, "tests/test_x.py::test_one", running.first_failure_at)  # what was known, and when
    assert ended.first_failure_s == running.first_failure_s
    assert len(messages(store, "build.first_failure")) == 1 and len(messages(store, "build.ended")) == 1


def test_a_new_attempt_forgets_the_last_ones_first_failure_and_may_tell_its_own(conn) -> None:
    store = Store(conn, Settings(max_attempts=3))
    build = started(store)
    store.builds.set_progress(build.id, 1, 1, "t::a")
    assert store.builds.redispatch(build.id, 1, "lost") == "requeued"
    queued = conn.hgetall(keys.build(build.id))
    assert not {"failing", "first_failure", "first_failure_at"} & set(queued)
    store.builds.set_progress(build.id, 2, 1, "t::late")  # the lost attempt's runner, too late: not its to say
    assert not conn.hexists(keys.build(build.id), "first_failure")
    assert store.builds.start_attempt(build.id, 2, "r2") is not None
    store.builds.set_progress(build.id, 1, 1, "t::b")
    second = store.records.get_build(build.id)
    assert second.first_failure == "t::b" and second.first_failure_s is not None
    assert store.builds.finish(build.id, 2, "r2", failed(Outcome.FAILED))
    assert store.builds.rebuild(build.id) is not None
    assert not {"failing", "first_failure", "first_failure_at"} & set(conn.hgetall(keys.build(build.id)))
    assert [m["first_failure"] for m in messages(store, "build.first_failure")] == ["t::a", "t::b"]


def test_a_failure_nobody_saw_while_it_ran_is_found_at_the_end_and_told_before_it(conn) -> None:
    store = Store(conn, Settings())
    build = started(store)
    assert store.builds.finish(build.id, 1, "r1", failed(Outcome.PASSED, Outcome.ERROR, Outcome.FAILED))
    ended = store.records.get_build(build.id)
    assert ended.first_failure == "t.T.test_1" and ended.first_failure_at == ended.finished_at
    assert ended.first_failure_s == ended.duration_s or abs(ended.first_failure_s - ended.duration_s) < 0.01
    events = [m.get("event", "build.ended") for m in messages(store, "build.first_failure")
              + messages(store, "build.ended")]
    order = [json.loads(m).get("event", "build.ended") for m in reversed(conn.lrange(keys.outbox(), 0, -1))]
    assert sorted(events) == sorted(order) == ["build.ended", "build.first_failure"]
    assert order == ["build.first_failure", "build.ended"]


def test_a_passing_build_has_no_first_failure(conn) -> None:
    store = Store(conn, Settings())
    build = started(store)
    store.builds.set_progress(build.id, 3)
    assert store.builds.finish(build.id, 1, "r1", outcome(Status.PASSED))
    ended = store.records.get_build(build.id)
    assert (ended.first_failure, ended.first_failure_s) == ("", None)
    assert messages(store, "build.first_failure") == []


def test_a_shard_that_ends_first_with_a_failure_makes_it_the_builds(conn) -> None:
    store = Store(conn, Settings())
    build = started(store)
    assert store.shards.start(build.id, 1, [["t.T.test_0"], ["t.T.test_1"]], "r1")
    assert store.shards.claim(build.id, 1, 1, 1, "r2") is not None
    early = RunOutcome(Status.FAILED, [TestResult("t.T.test_1", Outcome.FAILED, 0.1)], Counts(total=1, failed=1))
    assert store.shards.finish(build.id, 1, 1, 1, "r2", early) == "stored"
    running = store.records.get_build(build.id)
    assert (running.status, running.first_failure) == (Status.RUNNING, "t.T.test_1")
    late = RunOutcome(Status.FAILED, [TestResult("t.T.test_0", Outcome.FAILED, 0.1)], Counts(total=1, failed=1))
    assert store.shards.finish(build.id, 1, 0, 1, "r1", late) == "merged"
    ended = store.records.get_build(build.id)
    assert (ended.first_failure, ended.first_failure_at) == ("t.T.test_1", running.first_failure_at)
    assert len(messages(store, "build.first_failure")) == 1


def test_a_matrix_builds_first_failure_is_the_first_any_leg_found(conn) -> None:
    store = Store(conn, Settings())
    build = started(store)
    legs = store.legs.start(build.id, 1, [Leg.of("3.11", {}), Leg.of("3.12", {})], "r1")
    assert legs is not None
    for n, leg in enumerate(legs):
        assert store.builds.start_attempt(leg.id, 1, f"r{n}") is not None
    store.builds.set_progress(legs[1].id, 4, 1, "t::in_312")
    store.builds.set_progress(legs[0].id, 6, 1, "t::in_311")
    store.builds.set_progress(legs[1].id, 7, 2, "t::in_312")
    parent = store.records.get_build(build.id)
    assert parent.first_failure == "t::in_312" and parent.first_failure_s is not None
    assert parent.failing == 3  # its legs' together
    assert [leg.first_failure for leg in store.records.get_legs(build.id)] == ["t::in_311", "t::in_312"]
    sent = messages(store, "build.first_failure")
    assert [(m["build"], m["first_failure"]) for m in sent] == [(build.id, "t::in_312")]  # the build's, not a leg's
    for n, leg in enumerate(legs):
        assert store.builds.finish(leg.id, 1, f"r{n}", failed(Outcome.FAILED))
    ended = store.records.get_build(build.id)
    assert (ended.status, ended.first_failure) == (Status.FAILED, "t::in_312")
    assert len(messages(store, "build.first_failure")) == 1


def test_a_hostile_test_id_is_kept_cut(conn) -> None:
    store = Store(conn, Settings())
    build = started(store)
    store.builds.set_progress(build.id, 1, 1, "t::" + "\x1b]0;x\x07" * 2000)
    assert len(store.records.get_build(build.id).first_failure) == 1024


def test_the_start_of_the_tests_is_recorded_once_per_attempt_and_the_first_failure_counted_from_it(conn) -> None:
    store = Store(conn, Settings(max_attempts=2))
    build = started(store)
    time.sleep(0.3)  # the checkout and setup
    store.builds.tests_started(build.id)
    first = store.records.get_build(build.id).tests_started_at
    store.builds.tests_started(build.id)  # a shard's later start: the build's tests began at the first
    assert store.records.get_build(build.id).tests_started_at == first
    assert store.records.get_build(build.id).first_failure_in_tests_s is None  # nothing failed yet
    time.sleep(0.2)
    store.builds.set_progress(build.id, 1, 1, "t::a")
    running = store.records.get_build(build.id)
    assert running.first_failure_in_tests_s is not None and running.first_failure_s is not None
    assert 0.2 <= running.first_failure_in_tests_s <= running.first_failure_s - 0.3
    data = report.as_dict(running, [], [])
    assert (data["tests_started_at"], data["first_failure_in_tests_s"]) == (first, running.first_failure_in_tests_s)
    assert store.builds.redispatch(build.id, 1, "lost") == "requeued"
    assert not conn.hexists(keys.build(build.id), "tests_started_at")  # the next attempt's are its own
    store.builds.tests_started(build.id)  # a queued build has no tests running: nothing is written
    assert not conn.hexists(keys.build(build.id), "tests_started_at")


class Owned:
    def owns(self) -> bool:
        return True


def test_a_failing_test_is_recorded_within_a_tenth_of_a_second_not_at_the_next_round_of_duties(conn,
                                                                                              tmp_path) -> None:
    store = Store(conn, Settings())
    build = started(store)
    results, early = tmp_path / "results.jsonl", tmp_path / "prepass.jsonl"
    results.write_text(json.dumps({"id": "t::ok", "outcome": "passed"}) + "\n")
    watch = Watch(Owned(), None, Progress(store, build.id, results, early))  # type: ignore[arg-type]
    assert watch() is None  # the once-a-second duties: one passing test counted
    assert store.records.get_build(build.id).progress == 1
    early.write_text(json.dumps({"id": "t::bad", "outcome": "failed", "message": "boom"}) + "\n")
    time.sleep(0.15)
    assert watch() is None  # well within the second
    running = store.records.get_build(build.id)
    assert (running.first_failure, running.failing) == ("t::bad", 1)
    assert [m["first_failure"] for m in messages(store, "build.first_failure")] == ["t::bad"]
    with results.open("a") as more:
        more.write(json.dumps({"id": "t::worse", "outcome": "failed"}) + "\n")
    time.sleep(0.15)
    assert watch() is None
    assert store.records.get_build(build.id).first_failure == "t::bad"  # named once; counts wait their second


def test_a_shards_run_names_its_first_failure_at_once_and_leaves_the_counts_to_the_build(conn, tmp_path) -> None:
    store = Store(conn, Settings())
    build = started(store)
    assert store.shards.start(build.id, 1, [["t.T.test_0"], ["t.T.test_1"]], "r1")
    assert store.shards.claim(build.id, 1, 1, 1, "r2") is not None
    store.builds.set_progress(build.id, 7)  # shard 0's count, the build's
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps({"id": "t.T.test_1", "outcome": "error", "message": "boom"}) + "\n")
    watch = Watch(Owned(), None, Progress(store, build.id, results, counting=False))  # type: ignore[arg-type]
    assert watch() is None
    running = store.records.get_build(build.id)
    assert (running.status, running.first_failure, running.progress) == (Status.RUNNING, "t.T.test_1", 7)
    assert [m["first_failure"] for m in messages(store, "build.first_failure")] == ["t.T.test_1"]
    with results.open("a") as more:
        more.write(json.dumps({"id": "t.T.test_2", "outcome": "failed"}) + "\n")
    watch._last = 0.0
    assert watch() is None
    assert store.records.get_build(build.id).first_failure == "t.T.test_1"
    assert len(messages(store, "build.first_failure")) == 1
