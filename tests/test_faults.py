"""Runners, schedulers and Redis failing for real: killed, frozen, cut off, restarted. Every build
still ends, with its result written once, and no test process is left running."""

from __future__ import annotations

import os
import signal
import time

import pytest
from cluster import SLOW_TEST, Cluster, grandchildren_started, marked_processes
from support import alive, run_volt, wait_until

from voltci import keys
from voltci.errors import RedisLost
from voltci.models import AttemptState
from voltci.store import Store

pytestmark = pytest.mark.e2e  # every test here starts processes: builds, volt, redis-server


@pytest.fixture
def cluster(tmp_path):
    cluster = Cluster(tmp_path)
    yield cluster
    cluster.stop()


def one_build(cluster: Cluster, make_repo, files: dict[str, str] = SLOW_TEST) -> str:
    repo = make_repo()
    repo.commit(files, "slow tests")
    (build,) = cluster.watch(repo).poll()
    return build.id


def attempts(cluster: Cluster, build_id: str) -> list[tuple[str, str, str]]:
    return [(a.state.value, a.runner, a.status) for a in Store(cluster.conn).records.get_attempts(build_id)]


def test_runner_killed_mid_build_is_redispatched_and_its_tests_reaped(cluster, make_repo) -> None:
    cluster.worker("r1")
    cluster.scheduler()
    build_id = one_build(cluster, make_repo)
    cluster.wait_running_on("r1")
    (grandchild,) = wait_until(lambda: grandchildren_started(build_id), "the test to start its child")
    cluster.worker("r2")
    cluster.kill_runner("r1")

    build = cluster.wait_final(build_id)
    assert build.status.value == "passed" and build.results_stored == 1
    assert attempts(cluster, build_id) == [("lost", "r1", ""), ("finished", "r2", "passed")]
    lost = Store(cluster.conn).runners.recent_lost()
    assert lost[0].runner == "r1" and "stopped sending heartbeats" in lost[0].reason
    # The killed attempt's test left a grandchild behind; the other runner on this host reaps it.
    wait_until(lambda: not alive(grandchild), "the orphaned grandchild to be reaped", timeout=20)
    assert marked_processes(keys.job_id(build_id, 1)) == {}


def test_frozen_runner_is_fenced_off_and_stops_its_tests(cluster, make_repo) -> None:
    cluster.worker("r1", FAULT_SLEEP="60")
    cluster.scheduler()
    build_id = one_build(cluster, make_repo)
    cluster.wait_running_on("r1")
    wait_until(lambda: marked_processes(keys.job_id(build_id, 1)), "attempt 1's tests to start")
    frozen = cluster.runner_and_horse("r1")
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        cluster.worker("r2", FAULT_SLEEP="0.5")
        build = cluster.wait_final(build_id)
        assert (build.status.value, build.runner, build.attempt) == ("passed", "r2", 2)
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    # Back from the freeze, r1 finds its attempt superseded: it kills its tests and stores nothing.
    wait_until(lambda: not marked_processes(keys.job_id(build_id, 1)), "r1 to stop attempt 1's tests", timeout=20)
    wait_until(lambda: "no longer owns the build" in cluster.log("r1"), "r1 to drop its result")
    build = cluster.build(build_id)
    assert (build.status.value, build.runner, build.results_stored) == ("passed", "r2", 1)
    assert attempts(cluster, build_id) == [("lost", "r1", ""), ("finished", "r2", "passed")]
    wait_until(lambda: (beat := cluster.beat("r1")) and not beat["build"], "r1 to be idle and alive again")
    assert cluster.procs["r1"].poll() is None


def test_build_whose_runners_all_die_ends_error_after_max_attempts(cluster, make_repo) -> None:
    # A build's own tests cannot reach their runner (the sandbox), so the host kills each one in turn.
    cluster.scheduler()
    build_id = one_build(cluster, make_repo)
    for n in (1, 2, 3):
        cluster.worker(f"r{n}", FAULT_SLEEP="60")
        wait_until(lambda n=n: (beat := cluster.beat(f"r{n}")) and beat["build"] == build_id
                   and beat["attempt"] == n and cluster.build(build_id).status.value == "running",
                   f"r{n} to run attempt {n}")
        cluster.kill_runner(f"r{n}")
    build = cluster.wait_final(build_id)
    assert build.status.value == "error" and build.results_stored == 1
    assert "gave up after 3 attempt(s)" in build.reason
    assert attempts(cluster, build_id) == [("lost", "r1", ""), ("lost", "r2", ""), ("lost", "r3", "")]
    report = run_volt("report", build.commit, "--redis-url", cluster.server.url)
    assert report.returncode == 1
    assert "attempt 3: lost on r3" in report.stdout and "stopped sending heartbeats" in report.stdout


def test_two_schedulers_act_once_and_the_survivor_takes_over(cluster, make_repo) -> None:
    cluster.scheduler("s1")
    cluster.scheduler("s2")
    leader = wait_until(lambda: next((s for s in ("s1", "s2") if "acting as the scheduler" in cluster.log(s)), None),
                        "a scheduler to lead")
    other = "s2" if leader == "s1" else "s1"
    repo = make_repo()
    repo.commit(SLOW_TEST, "first")
    watch = cluster.watch(repo)
    (first,) = watch.poll()
    cluster.worker("r1")
    cluster.wait_running_on("r1")
    cluster.worker("r2")
    cluster.kill_runner("r1")
    assert cluster.wait_final(first.id).status.value == "passed"
    assert len(Store(cluster.conn).runners.recent_lost()) == 1 and cluster.build(first.id).attempt == 2
    assert "acting as the scheduler" not in cluster.log(other)

    cluster.procs[leader].kill()
    repo.commit({"again.txt": "2"}, "second")
    (second,) = watch.poll()
    cluster.wait_running_on("r2")
    cluster.worker("r3")
    cluster.kill_runner("r2")
    build = cluster.wait_final(second.id)
    assert (build.status.value, build.attempt, build.results_stored) == ("passed", 2, 1)
    assert "acting as the scheduler" in cluster.log(other)


def test_redis_restart_with_aof_every_build_ends_once(cluster, make_repo) -> None:
    repo = make_repo()
    repo.commit(SLOW_TEST, "slow tests")
    watch = cluster.watch(repo)
    builds = watch.poll()
    for n in range(5):
        repo.commit({f"f{n}.txt": str(n)}, f"change {n}")
    builds += watch.poll()
    assert len(builds) == 6
    cluster.worker("r1", FAULT_SLEEP="1.5")
    cluster.worker("r2", FAULT_SLEEP="1.5")
    cluster.scheduler()
    wait_until(lambda: Store(cluster.conn).records.running_builds(), "a build to run")
    # Everything is up before Redis goes (a process still starting would rightly refuse to start).
    wait_until(lambda: "acting as the scheduler" in cluster.log("scheduler"), "the scheduler to act")
    wait_until(lambda: cluster.beat("r1") and cluster.beat("r2"), "both runners' heartbeats")
    cluster.server.stop()
    time.sleep(2)
    cluster.server.start()
    for build in builds:
        ended = cluster.wait_final(build.id, timeout=120)
        assert ended.status.value == "passed", ended.reason
    for build in builds:
        assert cluster.build(build.id).results_stored == 1
    for name in ("r1", "r2", "scheduler"):
        assert cluster.procs[name].poll() is None, cluster.log(name)[-3000:]


def test_runner_cut_off_longer_than_the_bound_exits_with_one_line(cluster) -> None:
    cluster.worker("r1", VOLT_REDIS_OUTAGE_LIMIT="2")
    wait_until(lambda: cluster.beat("r1"), "r1's heartbeat")
    cluster.server.stop()
    try:
        code = cluster.procs["r1"].wait(timeout=30)
    finally:
        cluster.server.start()
    assert code == RedisLost.exit_code == 75
    last = cluster.log("r1").strip().splitlines()[-1]
    assert last.startswith("volt worker r1: cannot reach Redis for") and "exiting" in last


def test_cancel_stops_a_running_build_and_its_processes(cluster, make_repo) -> None:
    cluster.worker("r1", FAULT_SLEEP="60")
    build_id = one_build(cluster, make_repo)
    cluster.wait_running_on("r1")
    wait_until(lambda: marked_processes(keys.job_id(build_id, 1)), "the tests to start")
    proc = run_volt("cancel", cluster.build(build_id).commit, "--redis-url", cluster.server.url)
    assert proc.returncode == 0 and proc.stdout.startswith("cancelled"), proc.stderr
    build = cluster.build(build_id)
    assert build.status.value == "cancelled" and build.results_stored == 1
    wait_until(lambda: not marked_processes(keys.job_id(build_id, 1)), "the tests to be killed", timeout=15)
    wait_until(lambda: (beat := cluster.beat("r1")) and not beat["build"], "r1 to be idle again")
    assert Store(cluster.conn).records.get_attempts(build_id)[0].state is AttemptState.FINISHED
    again = run_volt("cancel", build.commit, "--redis-url", cluster.server.url)
    assert again.returncode == 2 and "already ended (cancelled)" in again.stderr
