"""Retention: `volt prune` and the scheduler remove the ended builds beyond keep_builds or keep_days —
every key, index entry and rq job record of theirs — never a queued or running build nor the newest
build of a branch, and keep the aggregates (timings, flaky counts). Bad settings are one line."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest
from sample_project import PASSING
from support import assert_one_line_error, outcome, run_rq_worker_burst, run_volt, snapshot

from voltci import keys, scheduler
from voltci.models import Build, Outcome, RunOutcome, Status, TestResult, Timings
from voltci.observer import RepoWatch
from voltci.store import Policy, Store
from voltci.web import create_app


@pytest.fixture
def six_builds(conn, settings, make_repo):
    """Six commits of one branch, each built by a real rq worker: six finished builds with rq job records."""
    repo = make_repo()
    shas = [repo.commit({**PASSING, "n.txt": "0"}, "commit 0")]
    watch = RepoWatch(Store(conn, settings), str(repo.path))
    watch.validate()
    assert [b.commit for b in watch.poll()] == shas
    for n in range(1, 6):
        shas.append(repo.commit({**PASSING, "n.txt": str(n)}, f"commit {n}"))
        assert [b.commit for b in watch.poll()] == [shas[-1]]
    assert run_rq_worker_burst(settings).returncode == 0
    assert [b.status for b in Store(conn).history.builds("proj", 10)] == [Status.PASSED] * 6
    return repo, shas


def keys_naming(conn, text: str) -> list[str]:
    return sorted(key for key in conn.scan_iter(match="*", count=1000) if text in key)


def test_keep_builds_3_of_six_removes_every_key_of_the_three_oldest(six_builds, conn, settings) -> None:
    _, shas = six_builds
    url = settings.effective_redis_url
    pruned, kept = shas[:3], shas[3:]
    for sha in shas:
        build_id = keys.build_id("proj", sha)
        assert f"rq:job:{keys.job_id(build_id, 1)}" in keys_naming(conn, sha)  # rq's job record is there to go
    before = snapshot(conn)

    dry = run_volt("prune", "--dry-run", "--keep-builds", "3", "--redis-url", url)
    assert dry.returncode == 0, dry.stderr
    assert [line.split()[:3] for line in dry.stdout.splitlines()[:-1]] == \
        [["would", "remove", "proj"]] * 3 and all(sha[:10] in dry.stdout for sha in pruned)
    assert "would remove 3 build(s) of 1 repository(ies), keeping the newest 3 per repository" in dry.stdout
    assert snapshot(conn) == before  # a dry run changes nothing

    done = run_volt("prune", "--keep-builds", "3", "--redis-url", url)
    assert done.returncode == 0, done.stderr
    assert [line.split()[1] for line in done.stdout.splitlines()[:-1]] == ["proj"] * 3
    assert "removed 3 build(s) of 1 repository(ies)" in done.stdout and "Redis memory" in done.stdout
    for sha in pruned:
        build_id = keys.build_id("proj", sha)
        assert keys_naming(conn, sha) == [], f"{sha[:10]} left keys behind"
        for registry in ("rq:finished:volt", "rq:failed:volt", "rq:canceled:volt"):
            assert conn.zscore(registry, keys.job_id(build_id, 1)) is None
        assert conn.zscore(keys.repo_history("proj"), build_id) is None
        assert conn.zscore(keys.commits(), keys.commit_member(sha, "proj")) is None
        report = run_volt("report", sha[:8], "--redis-url", url)
        assert_one_line_error(report, f"unknown commit '{sha[:8]}'")
    for sha in kept:
        build_id = keys.build_id("proj", sha)
        assert {keys.build(build_id), keys.build_results(build_id), keys.build_attempts(build_id),
                keys.build_log(build_id), f"rq:job:{keys.job_id(build_id, 1)}"} <= set(keys_naming(conn, sha))
        assert run_volt("report", sha[:8], "--redis-url", url).returncode == 0
    assert [b.commit for b in Store(conn).history.builds("proj", 10)] == kept[::-1]

    web = create_app(settings).test_client()
    assert web.get(f"/build/proj/{pruned[0]}").status_code == 404
    assert web.get(f"/build/proj/{kept[0]}").status_code == 200
    page = web.get("/api/repos/proj/builds").get_json()
    assert (page["total"], [b["commit"] for b in page["builds"]]) == (3, kept[::-1])
    again = run_volt("prune", "--keep-builds", "3", "--redis-url", url)
    assert again.returncode == 0 and again.stdout.startswith("removed 0 build(s) of 0 repository(ies)")


def add(store: Store, sha: str, score: float, branch: str = "main", status: Status = Status.PASSED,
        tests: list[TestResult] | None = None) -> Build:
    build = Build(id=keys.build_id("proj", sha), repo="proj", url="/r", commit=sha, branch=branch,
                  queued_at="2020-01-01T00:00:00+00:00")
    store.builds.add(build, score)
    if status is not Status.QUEUED:
        store.builds.start_attempt(build.id, 1, "r1")
    if status.is_final:
        timings = Timings({t.id: t.duration_s for t in tests or []})
        assert store.builds.finish(build.id, 1, "r1",
                                   RunOutcome(status, tests or [], outcome().counts, timings=timings))
    return build


def sha(n: int) -> str:
    return f"{n:04x}" + "a" * 36


def test_queued_running_and_each_branch_head_are_never_pruned(fake) -> None:
    store = Store(fake)
    feature = add(store, sha(1), 1, branch="feature")
    running = add(store, sha(2), 2, status=Status.RUNNING)
    queued = add(store, sha(3), 3, status=Status.QUEUED)
    old = [add(store, sha(n), n) for n in range(4, 8)]
    newest = add(store, sha(8), 8)
    removed = store.retention.prune_repo("proj", Policy(keep_builds=1))
    assert [b.id for b in removed] == [b.id for b in old]
    assert {b.id for b in store.history.builds("proj", 10)} == {feature.id, running.id, queued.id, newest.id}
    assert store.retention.prune_repo("proj", Policy(keep_builds=1)) == []  # what is left is all protected


def test_keep_days_removes_by_age_but_not_a_build_that_ended_recently(fake) -> None:
    store = Store(fake)
    now = time.time()
    ancient = add(store, sha(1), now - 40 * 86400)
    rebuilt = add(store, sha(2), now - 40 * 86400)  # queued long ago, built again today
    recent = add(store, sha(3), now - 86400)
    fake.hset(keys.build(ancient.id), "finished_at", "2020-01-02T00:00:00+00:00")
    assert rebuilt.id in {b.id for b in store.history.builds("proj", 10)}
    removed = store.retention.prune_repo("proj", Policy(keep_days=30), dry_run=True)
    assert [b.id for b in removed] == [ancient.id]
    assert [b.id for b in store.retention.prune_repo("proj", Policy(keep_days=30))] == [ancient.id]
    assert {b.id for b in store.history.builds("proj", 10)} == {rebuilt.id, recent.id}
    assert store.retention.prune_repo("proj", Policy()) == []  # no limit: nothing goes


def test_flaky_counts_and_timings_survive_pruning(fake) -> None:
    store = Store(fake)
    fake.hset(keys.repos(), "proj", json.dumps({"url": "/r"}))
    flaky = [TestResult("t.A.test_x", Outcome.FLAKY, 0.5, order=0),
             TestResult("t.A.test_y", Outcome.PASSED, 0.25, order=1)]
    for n in range(1, 5):
        add(store, sha(n), n, tests=flaky)
    assert len(store.retention.prune_repo("proj", Policy(keep_builds=1))) == 3
    assert [(f.test, f.times) for f in store.history.flaky_tests(["proj"], 10)] == [("t.A.test_x", 4)]
    assert store.history.timings("proj").tests == {"t.A.test_x": 0.5, "t.A.test_y": 0.25}


def test_the_scheduler_prunes_a_bounded_batch_per_pass(conn, settings, monkeypatch) -> None:
    monkeypatch.setattr(scheduler, "PRUNE_PER_STEP", 2)
    monkeypatch.setattr(scheduler.Scheduler, "_redis_uptime_s", lambda self: 3600.0)
    store = Store(conn, settings)
    conn.hset(keys.repos(), mapping={"proj": json.dumps({"url": "/r"}), "empty": json.dumps({"url": "/e"})})
    for n in range(1, 8):
        add(store, sha(n), n)
    sched = scheduler.Scheduler(replace(settings, keep_builds=2, keep_days=0), store)
    counts = []
    for _ in range(6):
        sched.step()
        counts.append(int(conn.zcard(keys.repo_history("proj"))))
    assert counts == [7, 5, 3, 2, 2, 2]  # one repository a pass ("empty" first), two builds at a time


@pytest.mark.parametrize("args, env, fragment", [
    (["--keep-builds", "-1"], {}, "setting 'keep_builds' must be positive, got '-1'"),
    (["--keep-builds", "three"], {}, "setting 'keep_builds' must be a int, got 'three'"),
    (["--keep-days", "1.5"], {}, "setting 'keep_days' must be a int, got '1.5'"),
    ([], {"VOLT_KEEP_DAYS": "-2"}, "VOLT_KEEP_DAYS: setting 'keep_days' must be positive"),
    ([], {"VOLT_KEEP_BUILDS": "many"}, "VOLT_KEEP_BUILDS: setting 'keep_builds' must be a int"),
    (["--repo", "nosuch"], {}, "unknown repository 'nosuch'"),
    (["--repo", "bad name"], {}, "unknown repository 'bad name'"),
])
def test_bad_retention_input_is_one_line_and_prunes_nothing(conn, settings, args, env, fragment) -> None:
    store = Store(conn, settings)
    conn.hset(keys.repos(), "proj", json.dumps({"url": "/r"}))
    for n in range(1, 4):
        add(store, sha(n), n)
    before = snapshot(conn)
    proc = run_volt("prune", *args, "--redis-url", settings.effective_redis_url, env=env)
    assert_one_line_error(proc, fragment)
    assert snapshot(conn) == before


def test_a_bad_retention_setting_in_the_config_file_is_one_line(tmp_path, settings) -> None:
    config = tmp_path / "volt.toml"
    config.write_text("keep_builds = -3\n")
    assert_one_line_error(run_volt("prune", "--config", str(config), "--redis-url", settings.effective_redis_url),
                          "setting 'keep_builds' must be positive, got -3")
    config.write_text('keep_days = "a week"\n')
    assert_one_line_error(run_volt("status", "--config", str(config), "--redis-url", settings.effective_redis_url),
                          "setting 'keep_days' must be a int")


def test_zero_is_no_limit(conn, settings) -> None:
    store = Store(conn, settings)
    conn.hset(keys.repos(), "proj", json.dumps({"url": "/r"}))
    add(store, sha(1), 1)
    proc = run_volt("prune", "--keep-builds", "0", "--keep-days", "0", "--redis-url", settings.effective_redis_url)
    assert proc.returncode == 0 and "retention is off" in proc.stdout
    assert store.records.get_build(keys.build_id("proj", sha(1))) is not None
