"""Matrix builds: `[matrix]` read strictly, interpreters found as a runner host has them, legs recorded,
fenced, re-dispatched and merged by the store, and one report of them all (JSON, text, JUnit).

The end-to-end half (real runners, real interpreters) is in test_matrix_builds.py."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import fakeredis
import pytest
import xmlschema
from support import SCHEMAS, SHA_A

from voltci import jobqueue, keys, report
from voltci.config import Settings, load_settings
from voltci.models import AttemptState, Build, Counts, Leg, Outcome, RunOutcome, Status, TestResult, Timings
from voltci.runner import project
from voltci.runner.interpreters import candidates, discover, own_version
from voltci.store import Store

# ---------------------------------------------------------------- [matrix]

def legs_of(text: str) -> list[Leg]:
    import tomllib
    return list(project.parse(tomllib.loads(text)).matrix)


def test_the_legs_are_the_product_of_pythons_and_variables_less_the_excluded() -> None:
    legs = legs_of('[matrix]\npython = ["3.10", "3.11", "3.12"]\n'
                   'env = [{DJANGO = "4.2"}, {DJANGO = "5.1", DB = "pg"}]\n'
                   'exclude = [{python = "3.10", DJANGO = "5.1"}, {python = "3.12", DB = "pg"}]\n')
    assert [leg.name for leg in legs] == ["py3.10-DJANGO=4.2", "py3.11-DJANGO=4.2", "py3.11-DJANGO=5.1-DB=pg",
                                          "py3.12-DJANGO=4.2"]
    assert (legs[2].python, legs[2].env) == ("3.11", {"DJANGO": "5.1", "DB": "pg"})
    assert [leg.name for leg in legs_of('[matrix]\npython = ["3.12", "3.13"]\n')] == ["py3.12", "py3.13"]
    assert project.parse({"python": "3.12"}).matrix == ()  # the top-level python stays valid: one build, as before


@pytest.mark.parametrize("text, key", [
    ('[matrix]\npython = []\n', "'matrix.python' must be a non-empty list"),
    ('[matrix]\npython = [3.12]\n', "'matrix.python' must list versions as strings"),
    ('[matrix]\npython = ["3.12", "3.12"]\n', "'matrix.python' lists a version twice"),
    ('[matrix]\npython = ["three"]\n', "'matrix.python'"),
    ('[matrix]\npython = ["3.12"]\nfoo = 1\n', "unknown key 'matrix.foo'"),
    ('[matrix]\nenv = [{A = "1"}]\n', "'matrix.python' is required"),
    ('matrix = ["3.12"]\n', "'matrix' must be a table"),
    ('[matrix]\npython = ["3.12"]\nexclude = [{python = "3.12"}]\n', "'matrix.exclude' removes every combination"),
    ('[matrix]\npython = ["3.12"]\nexclude = [{DJANGO = "1"}]\n', "'matrix.exclude[0]' names 'DJANGO'"),
    ('[matrix]\npython = ["3.12"]\nenv = []\n', "'matrix.env' must be a non-empty list"),
    ('[matrix]\npython = ["3.12"]\nenv = [{"DJANGO-VERSION" = "1"}]\n',
     "'matrix.env[0]': 'DJANGO-VERSION' is not a variable name"),
    ('[matrix]\npython = ["3.12"]\nenv = [{1X = "1"}]\n', "'matrix.env[0]': '1X' is not a variable name"),
    ('[matrix]\npython = ["3.12"]\nenv = [{PATH = "/x"}]\n', "PATH is set by Volt itself"),
    ('[matrix]\npython = ["3.12"]\nenv = [{A = 1}]\n', "'matrix.env[0].A' must be a string"),
    ('[matrix]\npython = ["3.12"]\nenv = [{A = "a b"}]\n', "'matrix.env[0].A' must be a string"),
    ('python = "3.12"\n[matrix]\npython = ["3.12"]\n', "'python' and 'matrix.python' exclude each other"),
])
def test_a_wrong_matrix_is_one_line_that_names_the_key(text: str, key: str) -> None:
    with pytest.raises(project.ProjectConfigError) as caught:
        legs_of(text)
    assert key in str(caught.value) and str(caught.value).startswith(".volt.toml: ") and "\n" not in str(caught.value)


# ---------------------------------------------------------------- interpreters

def fake_python(path: Path, says: str | None) -> Path:
    """An executable that answers the version probe as an interpreter of `says` would (None: a pyenv
    shim of a version that is not selected, which fails)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = f"echo {says}\n" if says else "echo \"pyenv: $(basename $0): command not found\" >&2\nexit 127\n"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_interpreters_are_found_in_the_setting_in_pyenv_and_on_path_and_a_failing_shim_is_none(tmp_path) -> None:
    pyenv = tmp_path / "pyenv"
    in_pyenv = fake_python(pyenv / "versions" / "3.97.1" / "bin" / "python3.97", "3.97")
    shims = tmp_path / "shims"
    fake_python(shims / "python3.97", "3.97")  # the same version again: never run
    fake_python(shims / "python3.96", None)  # a shim whose version is not installed
    on_path = fake_python(tmp_path / "bin" / "python3.95", "3.95")
    liar = fake_python(tmp_path / "bin" / "python3.94", "3.93")  # counts as what it runs
    given = fake_python(tmp_path / "opt" / "py", "3.98")
    found = discover(str(given), path=[str(shims), str(tmp_path / "bin")], pyenv_root=str(pyenv))
    assert found == {"3.93": str(liar), "3.95": str(on_path), own_version(): found[own_version()],
                     "3.97": str(in_pyenv), "3.98": str(given)}
    assert list(found) == sorted(found, key=lambda v: tuple(map(int, v.split("."))))
    assert candidates(str(given), path=[str(shims)], pyenv_root=str(pyenv))[:2] == [str(given), str(in_pyenv)]


def test_the_pythons_setting_takes_absolute_paths_as_a_list_or_a_string(tmp_path) -> None:
    config = tmp_path / "volt.toml"
    config.write_text('pythons = ["/opt/a/python3.14", "/opt/b/python3.15"]\n')
    assert load_settings(str(config), environ={}).pythons == "/opt/a/python3.14, /opt/b/python3.15"
    assert load_settings(environ={"VOLT_PYTHONS": "/x/python3.9 /y/python3.10"}).pythons == "/x/python3.9 /y/python3.10"
    config.write_text('pythons = "python3.14"\n')
    with pytest.raises(Exception, match="setting 'pythons' must list absolute paths"):
        load_settings(str(config), environ={})


# ---------------------------------------------------------------- the store

@pytest.fixture
def store() -> Store:
    return Store(fakeredis.FakeRedis(decode_responses=True), Settings(max_attempts=2))


def split(store: Store, *legs: Leg) -> tuple[Build, list[Build]]:
    build = Build(id=keys.build_id("proj", SHA_A), repo="proj", url="/r", commit=SHA_A, branch="main", subject="s")
    assert store.builds.submit(build)
    assert store.builds.start_attempt(build.id, 1, "coordinator") is not None
    recorded = store.legs.start(build.id, 1, list(legs or (Leg.of("3.11", {}), Leg.of("3.12", {"A": "1"}))),
                                "coordinator")
    assert recorded is not None
    return store.records.get_build(build.id), recorded  # type: ignore[return-value]


def ran(*outcomes: Outcome, failing: str = "AssertionError") -> RunOutcome:
    tests = [TestResult(f"t.T.test_{n}", o, 0.25, failing if o is Outcome.FAILED else "", n)
             for n, o in enumerate(outcomes)]
    counts = Counts.of(tests)
    return RunOutcome(Status.FAILED if counts.failed else Status.PASSED, tests, counts, "", "tail",
                      Timings({t.id: t.duration_s for t in tests}))


def test_legs_wait_on_their_interpreters_queues_and_the_last_to_end_stores_the_build(store: Store) -> None:
    build, (leg0, leg1) = split(store)
    assert build.legs == 2 and (leg0.leg, leg0.python, leg1.leg, leg1.env) == ("py3.11", "3.11", "py3.12-A=1",
                                                                               {"A": "1"})
    assert store.queue.waiting_job_ids(["volt-py3.11"]) == {keys.job_id(leg0.id, 1)}
    assert store.queue.waiting_job_ids(["volt-py3.12"]) == {keys.job_id(leg1.id, 1)}
    assert store.legs.start(build.id, 1, [Leg.of("3.13", {})], "again") is None  # split once
    assert store.builds.start_attempt(leg0.id, 1, "r1") is not None
    assert store.builds.start_attempt(leg1.id, 1, "r2") is not None
    assert store.builds.finish(leg0.id, 1, "r1", ran(Outcome.PASSED, Outcome.PASSED))
    assert store.records.get_build(build.id).status is Status.RUNNING  # one leg still runs
    assert store.history.timings("proj", "py3.11").tests == {"t.T.test_0": 0.25, "t.T.test_1": 0.25}
    assert store.builds.finish(leg1.id, 1, "r2", ran(Outcome.PASSED, Outcome.FAILED))
    assert not store.builds.finish(leg1.id, 1, "r2", ran(Outcome.PASSED))  # once
    done = store.records.get_build(build.id)
    assert (done.status, done.counts.total, done.counts.failed, done.results_stored) == (Status.FAILED, 4, 1, 1)
    tests = store.records.get_tests(build.id)
    assert [(t.leg, t.id) for t in tests] == [("py3.11", "t.T.test_0"), ("py3.11", "t.T.test_1"),
                                             ("py3.12-A=1", "t.T.test_0"), ("py3.12-A=1", "t.T.test_1")]
    assert [(t.leg, t.id) for t in store.records.listed_tests(build.id)] == [("py3.12-A=1", "t.T.test_1")]
    assert not store.history.timings("proj")  # a matrix build's timings are its legs' own
    legs = store.records.get_legs(build.id)
    assert [(leg.status, leg.runner, leg.counts.total) for leg in legs] == [(Status.PASSED, "r1", 2),
                                                                           (Status.FAILED, "r2", 2)]


def test_two_legs_ending_at_once_store_the_build_exactly_once() -> None:
    server = fakeredis.FakeServer()
    one = Store(fakeredis.FakeRedis(server=server, decode_responses=True))
    build, legs = split(one, *(Leg.of(f"3.{n}", {}) for n in range(10, 16)))
    for n, leg in enumerate(legs):
        assert one.builds.start_attempt(leg.id, 1, f"r{n}") is not None
    ready = threading.Barrier(len(legs))

    def end(leg: Build) -> None:
        mine = Store(fakeredis.FakeRedis(server=server, decode_responses=True))
        ready.wait(timeout=10)
        assert mine.builds.finish(leg.id, 1, leg.runner or "r", ran(Outcome.PASSED))

    threads = [threading.Thread(target=end, args=(leg,)) for leg in legs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    done = one.records.get_build(build.id)
    assert (done.status, done.results_stored, done.counts.total) == (Status.PASSED, 1, len(legs))


def test_a_leg_nobody_can_run_ends_error_naming_its_python_and_the_others_decide_the_rest(store: Store) -> None:
    build, (leg0, leg1) = split(store)
    assert store.builds.start_attempt(leg0.id, 1, "r1") is not None
    assert store.legs.end_unrunnable(leg1.id, 1, "no live runner has python 3.12")
    assert not store.legs.end_unrunnable(leg1.id, 1, "again")
    assert store.records.get_build(build.id).status is Status.RUNNING  # leg 0 still runs
    assert keys.job_id(leg1.id, 1) not in store.queue.waiting_job_ids(["volt-py3.12"])
    assert store.builds.finish(leg0.id, 1, "r1", ran(Outcome.PASSED))
    done = store.records.get_build(build.id)
    assert done.status is Status.ERROR and done.reason == "py3.12-A=1: no live runner has python 3.12"
    assert (done.counts.total, done.counts.passed) == (1, 1)


def test_a_lost_leg_goes_back_on_its_queue_first_and_is_given_up_after_max_attempts(store: Store) -> None:
    build, (leg0, leg1) = split(store)
    assert store.builds.start_attempt(leg1.id, 1, "r1") is not None
    assert store.builds.redispatch(leg1.id, 1, "runner r1 stopped sending heartbeats") == "requeued"
    again = store.records.get_build(leg1.id)
    assert (again.status, again.attempt) == (Status.QUEUED, 2)
    assert jobqueue.waiting_in_order(store.r, Settings(queue="volt-py3.12"), 5)[0] == keys.job_id(leg1.id, 2)
    assert not store.builds.finish(leg1.id, 1, "r1", ran(Outcome.PASSED))  # the lost attempt is fenced off
    assert store.builds.start_attempt(leg1.id, 2, "r2") is not None
    assert store.builds.redispatch(leg1.id, 2, "runner r2 stopped sending heartbeats") == "gave up"
    ended = store.records.get_build(leg1.id)
    assert ended.status is Status.ERROR and "gave up after 2 attempt(s)" in ended.reason
    assert [a.state for a in store.records.get_attempts(leg1.id)] == [AttemptState.LOST, AttemptState.LOST]
    assert store.records.get_build(build.id).status is Status.RUNNING  # leg 0 has not run yet
    assert store.builds.start_attempt(leg0.id, 1, "r3") is not None
    assert store.builds.finish(leg0.id, 1, "r3", ran(Outcome.PASSED))
    assert store.records.get_build(build.id).status is Status.ERROR


def test_cancelling_a_matrix_build_cancels_its_legs(store: Store) -> None:
    build, (leg0, leg1) = split(store)
    assert store.builds.start_attempt(leg0.id, 1, "r1") is not None
    assert store.builds.cancel(build.id) is not None
    assert [leg.status for leg in store.records.get_legs(build.id)] == [Status.CANCELLED, Status.CANCELLED]
    assert not store.records.is_current(leg0.id, 1)  # its runner stops within a second
    assert not store.builds.finish(leg0.id, 1, "r1", ran(Outcome.PASSED))
    assert keys.job_id(leg1.id, 1) not in store.queue.waiting_job_ids(["volt-py3.12"])


def test_a_rebuild_splits_again_under_new_leg_ids_and_retention_removes_every_legs_key(store: Store) -> None:
    build, legs = split(store)
    for leg in legs:
        assert store.builds.start_attempt(leg.id, 1, "r1") is not None
        assert store.builds.finish(leg.id, 1, "r1", ran(Outcome.PASSED))
    assert store.builds.rebuild(build.id) is not None
    assert store.builds.start_attempt(build.id, 2, "r1") is not None
    assert store.records.get_build(build.id).legs == 0
    again = store.legs.start(build.id, 2, [Leg.of("3.11", {})], "r1")
    assert again is not None and again[0].id == keys.leg_id(build.id, 2, 0) != legs[0].id
    assert store.builds.start_attempt(again[0].id, 1, "r1") is not None
    assert store.builds.finish(again[0].id, 1, "r1", ran(Outcome.PASSED))
    assert store.retention.delete([store.records.get_build(build.id)])  # type: ignore[list-item]
    left = [k for k in store.r.keys("*") if SHA_A in k]
    assert left == [], left


# ---------------------------------------------------------------- one report

def matrix_report(store: Store) -> tuple[Build, list[TestResult], list[Build]]:
    build, (leg0, leg1) = split(store)
    for leg, outcome in ((leg0, ran(Outcome.PASSED, Outcome.FAILED, failing="Traceback\nAssertionError: 3.11")),
                         (leg1, ran(Outcome.PASSED, Outcome.SKIPPED))):
        assert store.builds.start_attempt(leg.id, 1, "r1") is not None
        assert store.builds.finish(leg.id, 1, "r1", outcome)
    return store.records.get_build(build.id), store.records.get_tests(build.id), store.records.get_legs(build.id)  # type: ignore[return-value]


def test_the_json_report_lists_the_legs_and_each_tests_leg(store: Store) -> None:
    build, tests, legs = matrix_report(store)
    data = report.as_dict(build, tests, store.records.get_attempts(build.id), [], legs)
    assert data["status"] == "failed" and data["counts"]["total"] == 4
    assert [(leg["name"], leg["python"], leg["env"], leg["status"], leg["counts"]["total"], leg["runner"])
            for leg in data["legs"]] == [("py3.11", "3.11", {}, "failed", 2, "r1"),
                                         ("py3.12-A=1", "3.12", {"A": "1"}, "passed", 2, "r1")]
    assert set(data["legs"][0]) >= {"name", "python", "env", "status", "counts", "duration_s", "runner", "reason"}
    assert [(t["id"], t["leg"]) for t in data["tests"]] == [("t.T.test_0", "py3.11"), ("t.T.test_1", "py3.11"),
                                                          ("t.T.test_0", "py3.12-A=1"), ("t.T.test_1", "py3.12-A=1")]


def test_the_text_report_groups_failures_by_leg(store: Store) -> None:
    build, tests, legs = matrix_report(store)
    text = report.as_text(build, [t for t in tests if t.outcome is Outcome.FAILED], [], [], legs)
    assert "  leg py3.11: failed, 1/2 passed" in text and "  leg py3.12-A=1: passed, 1/2 passed" in text
    header, failure = text.index("=== leg py3.11: 1 failing"), text.index("FAILED: t.T.test_1")
    assert header < failure < text.index("AssertionError: 3.11")


@pytest.mark.parametrize("schema", ["junit-windyroad.xsd", "junit-jenkins.xsd"])
def test_junit_has_one_testsuite_per_leg(store: Store, tmp_path, schema: str) -> None:
    build, tests, legs = matrix_report(store)
    out = tmp_path / "junit.xml"
    out.write_bytes(report.as_junit(build, tests, legs))
    xmlschema.XMLSchema(str(SCHEMAS / schema)).validate(str(out))
    text = out.read_text()
    assert text.count("<testsuite ") == 2 and 'name="proj [py3.12-A=1]"' in text and text.count("<testcase ") == 4
    assert '<property name="env.A" value="1"' in text


def test_only_volts_leg_job_with_its_arguments_runs() -> None:
    from test_trust import job_calling

    assert jobqueue.refusal(job_calling(jobqueue.RUN_LEG, [keys.leg_id("proj-" + "a" * 40, 1, 2), 1])) is None
    for args in (["b"], ["b", 1, 2], ["b", "1"], ["b c", 1]):
        reason = jobqueue.refusal(job_calling(jobqueue.RUN_LEG, args))
        assert reason is not None and "takes (str, int)" in reason


def test_a_runner_listens_on_the_queue_of_each_interpreter_it_has_before_volts_own(monkeypatch) -> None:
    from voltci.runner import worker

    monkeypatch.setattr(worker, "interpreters", lambda pythons: {"3.11": "/a", "3.12": "/b"})
    made = worker.VoltWorker(["volt"], connection=fakeredis.FakeRedis(), settings=Settings(), prepare_for_work=False)
    assert made.queue_names() == ["volt-py3.12", "volt-py3.11", "volt"]
    other = worker.VoltWorker(["elsewhere"], connection=fakeredis.FakeRedis(), settings=Settings(),
                              prepare_for_work=False)
    assert other.queue_names() == ["elsewhere"]


def test_the_build_page_shows_the_legs_and_groups_failures_by_leg(settings, conn, rq_conn) -> None:
    from voltci.web import create_app

    conn.hset(keys.repos(), "proj", '{"url": "/r"}')
    store = Store(rq_conn, settings)
    matrix_report(store)
    web = create_app(settings).test_client()
    page = web.get(f"/build/proj/{SHA_A}").get_data(as_text=True)
    assert 'id="legs"' in page and "py3.12-A=1" in page and page.count('class="leg"') == 1
    assert page.index('<h3 class="leg">leg <code>py3.11</code>') < page.index("AssertionError: 3.11")
    assert web.get(f"/api/builds/proj/{SHA_A}").get_json()["legs"][1]["name"] == "py3.12-A=1"
    assert web.get(f"/api/builds/proj/{SHA_A}/log?leg=py3.11").status_code == 200
    assert web.get(f"/api/builds/proj/{SHA_A}/log?leg=py2.7").status_code == 404
    assert web.get("/badge/proj.svg").status_code == 200


def test_the_scheduler_ends_a_leg_no_live_runner_can_run_and_requeues_a_lost_one(settings, conn, rq_conn,
                                                                                 monkeypatch) -> None:
    from dataclasses import replace

    from voltci import scheduler
    from voltci.heartbeat import Heartbeat
    from voltci.models import RunnerBeat

    fast = replace(settings, heartbeat=1.0, heartbeat_ttl=3.0)
    now = [1000.0]
    monkeypatch.setattr(scheduler.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(scheduler.Scheduler, "_redis_uptime_s", lambda self: 3600.0)
    store = Store(rq_conn, fast)
    build, (leg0, leg1) = split(store, Leg.of("3.11", {}), Leg.of("3.99", {}))
    assert store.builds.start_attempt(leg0.id, 1, "r1") is not None
    beat = Heartbeat(Store(conn), RunnerBeat(name="r1", pythons=["3.10", "3.11"]), 1.0, 3.0)
    beat.beat.build, beat.beat.attempt = leg0.id, 1
    beat.send()
    sched = scheduler.Scheduler(fast)
    assert sched.step() == []  # leg 1 is first seen without a runner for its Python
    now[0] += fast.heartbeat_ttl
    beat.send()
    (action,) = sched.step()
    assert (action.build, action.done) == (leg1.id, "error")
    ended = store.records.get_build(leg1.id)
    assert ended.status is Status.ERROR
    assert ended.reason == "no live runner has python 3.99 (the live runners have 3.10, 3.11)"
    assert store.records.get_build(build.id).status is Status.RUNNING  # leg 0 runs on
    beat.stop()  # r1 is gone: its leg goes back on its queue
    (lost,) = sched.step()
    assert (lost.build, lost.done) == (leg0.id, "requeued")
    assert keys.job_id(leg0.id, 2) in store.queue.waiting_job_ids(["volt-py3.11"])
    for _ in range(3):  # no runner at all for a while (the next one is starting): the leg waits for one
        assert sched.step() == []
        now[0] += fast.heartbeat_ttl
    assert store.records.get_build(leg0.id).status is Status.QUEUED
