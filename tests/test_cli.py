"""The `volt` and `volt-observe` commands as a user runs them: bad input is one line on stderr and
exit status 2, never a traceback, and leaves what Redis already holds as it was."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from sample_project import PASSING
from support import ROOT, assert_one_line_error, run_rq_worker_burst, run_volt, snapshot

from voltci.models import Work
from voltci.redis_server import free_port


@pytest.fixture
def built(rq_conn, conn, settings, make_repo):
    """A Redis holding one finished build, and its repository."""
    repo = make_repo()
    sha = repo.commit(PASSING, "tests")
    proc = run_volt("observe", "--repo", str(repo.path), "--once", "--redis-url", settings.effective_redis_url,
                    env={"VOLT_WORKSPACE_DIR": settings.workspace_dir})
    assert proc.returncode == 0, proc.stderr
    assert run_rq_worker_burst(settings).returncode == 0
    return repo, sha


def test_report_passes_and_resolves_prefixes(built, settings) -> None:
    _, sha = built
    proc = run_volt("report", sha[:6], "--redis-url", settings.effective_redis_url)
    assert proc.returncode == 0 and "PASSED" in proc.stdout


@pytest.mark.parametrize("args, fragment", [
    (["report", "deadbeef"], "unknown commit 'deadbeef'"),
    (["report", "xyz"], "not a commit"),
    (["report", "--repo", "nope!", "abcd"], "not a repository name"),
    (["history", "--repo", "nosuch"], "unknown repository 'nosuch'"),
    (["cancel", "deadbeef"], "unknown commit 'deadbeef'"),
    (["cancel", "--repo", "a b", "abcd"], "not a repository name"),
    (["observe", "--once", "--repo", "/nonexistent/repo"], "not a git repository"),
    (["observe", "--once", "--repo", str(ROOT / "voltci")], "not a git repository"),
])
def test_bad_input_is_one_line_and_touches_nothing(built, conn, settings, args, fragment) -> None:
    before = snapshot(conn)
    proc = run_volt(*args, "--redis-url", settings.effective_redis_url,
                    env={"VOLT_WORKSPACE_DIR": settings.workspace_dir})
    assert_one_line_error(proc, fragment)
    assert snapshot(conn) == before


def test_unknown_branch(built, conn, settings) -> None:
    repo, _ = built
    before = snapshot(conn)
    proc = run_volt("observe", "--once", "--repo", str(repo.path), "--branch", "nope",
                    "--redis-url", settings.effective_redis_url, env={"VOLT_WORKSPACE_DIR": settings.workspace_dir})
    assert_one_line_error(proc, "unknown branch 'nope'")
    assert snapshot(conn) == before


@pytest.mark.parametrize("command", [["report", "abcd"], ["status"], ["history"], ["observe", "--once", "--repo", "."],
                                     ["cancel", "abcd"], ["scheduler"], ["worker", "--burst"]])
@pytest.mark.e2e
def test_unreachable_redis(command) -> None:
    proc = run_volt(*command, "--redis-url", f"redis://:s3cret@127.0.0.1:{free_port()}/0")
    assert_one_line_error(proc, "cannot reach Redis")
    assert "s3cret" not in proc.stderr


@pytest.mark.e2e
@pytest.mark.parametrize("url", ["localhost:6379", "http://h/0", "redis://h:port/0"])
def test_malformed_redis_url(url) -> None:
    assert_one_line_error(run_volt("status", "--redis-url", url), "malformed Redis URL")


@pytest.mark.e2e
def test_malformed_url_from_environment() -> None:
    assert_one_line_error(run_volt("status", env={"VOLT_REDIS_URL": "nonsense"}), "malformed Redis URL")


def test_bin_volt_observe_runs_from_a_checkout(built, settings) -> None:
    repo, _ = built
    new = repo.commit({"tests/test_more.py": "import unittest\n\nclass T(unittest.TestCase):\n"
                                             "    def test_more(self):\n        pass\n"}, "more")
    proc = subprocess.run([sys.executable, str(ROOT / "bin" / "volt-observe"), "--repo", str(repo.path), "--once",
                           "--redis-url", settings.effective_redis_url],
                          env={"PATH": "/usr/bin:/bin", "VOLT_WORKSPACE_DIR": settings.workspace_dir},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"queued proj {new[:10]} more" in proc.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "bin" / "volt-observe"), "--repo", "/nonexistent"],
                         capture_output=True, text=True, timeout=60)
    assert_one_line_error(bad, "not a git repository")


def test_report_of_a_queued_build_exits_3(rq_conn, settings, make_repo) -> None:
    repo = make_repo()
    sha = repo.commit(PASSING, "tests")
    observed = run_volt("observe", "--repo", str(repo.path), "--once", "--redis-url", settings.effective_redis_url,
                        env={"VOLT_WORKSPACE_DIR": settings.workspace_dir})
    assert f"queued proj {sha[:10]} tests" in observed.stdout
    proc = run_volt("report", sha, "--redis-url", settings.effective_redis_url)
    assert proc.returncode == 3 and "QUEUED" in proc.stdout
    proc = run_volt("report", sha, "--json", "--redis-url", settings.effective_redis_url)
    assert proc.returncode == 3


def test_cancel_of_an_ended_build_changes_nothing(built, conn, settings) -> None:
    _, sha = built
    before = snapshot(conn)
    assert_one_line_error(run_volt("cancel", sha[:8], "--redis-url", settings.effective_redis_url),
                          "has already ended (passed); nothing to cancel")
    assert snapshot(conn) == before


def test_status_shows_runners_running_builds_and_lost_attempts(built, conn, settings) -> None:
    from voltci import keys
    from voltci.heartbeat import Heartbeat
    from voltci.models import RunnerBeat
    from voltci.store import Store

    heartbeat = Heartbeat(Store(conn), RunnerBeat(name="host-a.7", queues=["volt"]), 2, 60)
    heartbeat.set_work(Work("proj-" + "0" * 40, 2))
    conn.hset(keys.runners(), "host-b.9", json.dumps({"name": "host-b.9", "state": "gone",
                                                      "heartbeat_at": "2026-01-01T00:00:00+00:00"}))
    conn.lpush(keys.lost(), json.dumps({"build": "proj-x", "repo": "proj", "commit": "ab" * 20, "attempt": 1,
                                        "runner": "host-b.9", "started_at": "", "lost_at": "2026-01-01T00:00:01",
                                        "reason": "runner host-b.9 stopped sending heartbeats",
                                        "then": "attempt 2 queued"}))
    proc = run_volt("status", "--json", "--redis-url", settings.effective_redis_url)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    alive, gone = data["runners"]
    assert (alive["name"], alive["alive"], alive["build"], alive["attempt"]) == \
        ("host-a.7", True, "proj-" + "0" * 40, 2)
    assert alive["heartbeat_age_s"] < 30 and (gone["name"], gone["alive"]) == ("host-b.9", False)
    assert data["lost"][0]["then"] == "attempt 2 queued" and data["queued"] == 0
    text = run_volt("status", "--redis-url", settings.effective_redis_url).stdout
    assert "runners: 1 alive, 1 gone" in text and "building proj-0000000000" in text
    assert "attempt 1 on host-b.9: runner host-b.9 stopped sending heartbeats; attempt 2 queued" in text


def test_flaky_lists_the_tests_that_flaked_most(rq_conn, conn, settings) -> None:
    from voltci import keys
    from voltci.models import Build, Counts, Outcome, RunOutcome, Status, TestResult
    from voltci.store import Store

    conn.hset(keys.repos(), "proj", json.dumps({"url": "/r"}))
    for n, flaky in enumerate([["t.A.test_x"], ["t.A.test_x", "t.B.test_y"], []]):
        sha = f"{n:04x}" + "e" * 36
        build = Build(id=keys.build_id("proj", sha), repo="proj", url="/r", commit=sha, branch="main")
        Store(rq_conn, settings).builds.submit(build)
        Store(conn).builds.start_attempt(build.id, 1, "r")
        tests = [TestResult(t, Outcome.FLAKY, order=i) for i, t in enumerate(flaky)]
        Store(conn).builds.finish(build.id, 1, "r", RunOutcome(Status.PASSED, tests, Counts()))
    proc = run_volt("flaky", "--json", "--redis-url", settings.effective_redis_url)
    assert proc.returncode == 0, proc.stderr
    assert [(f["test"], f["times"]) for f in json.loads(proc.stdout)] == [("t.A.test_x", 2), ("t.B.test_y", 1)]
    text = run_volt("flaky", "--repo", "proj", "--redis-url", settings.effective_redis_url).stdout
    assert text.splitlines()[0].split() == ["2x", "proj", "t.A.test_x", "(last", "in", "0001eeeeee)"]
    assert_one_line_error(run_volt("flaky", "--repo", "nope", "--redis-url", settings.effective_redis_url),
                          "unknown repository 'nope'")
