"""A commit pushed to a watched repository ends as a per-test report, through real processes:
git, a private redis-server, the observer, plain `rq worker --burst` runners and the `volt` CLI.
Each report is checked test by test against stock unittest on the same commit."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import xmlschema
from sample_project import FAILING, IMPORT_FAILING, NO_TESTS, PASSING
from support import SCHEMAS, run_rq_worker_burst, run_volt
from unittest_oracle import run_unittest

from voltci.config import host_dir
from voltci.observer import RepoWatch
from voltci.runner.workspace import checkout
from voltci.store import Store


def checkout_copy(repo, sha: str, where: Path) -> Path:
    subprocess.run(["git", "clone", "--quiet", "--shared", str(repo.path), str(where)], check=True, timeout=60)
    subprocess.run(["git", "checkout", "--quiet", "--detach", sha], cwd=where, check=True, timeout=60)
    return where


def report_json(settings, sha: str) -> tuple[int, dict]:
    proc = run_volt("report", sha, "--json", "--redis-url", settings.effective_redis_url)
    assert proc.stderr == "", proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_pass_fail_raise_import_fail_and_empty_commits(rq_conn, settings, make_repo, tmp_path) -> None:
    repo = make_repo()
    watch = RepoWatch(Store(rq_conn, settings), str(repo.path))
    repo.commit({"README.md": "start\n"}, "start")
    watch.validate()
    watch.poll()  # first pass: the head only
    shas = {
        "passing": repo.commit(PASSING, "Add maths with tests"),
        "failing": repo.commit(FAILING, "Add broken tests"),
        "import": repo.commit(IMPORT_FAILING, "Add a test module that does not import"),
    }
    empty_repo = make_repo("empty")
    shas["empty"] = empty_repo.commit(NO_TESTS, "No tests here")
    assert [b.commit for b in watch.poll()] == [shas["passing"], shas["failing"], shas["import"]]
    empty_watch = RepoWatch(Store(rq_conn, settings), str(empty_repo.path))
    empty_watch.validate()
    empty_watch.poll()

    worker = run_rq_worker_burst(settings)
    assert worker.returncode == 0, worker.stderr[-2000:]

    expected = {"passing": ("passed", 0), "failing": ("failed", 1), "import": ("error", 1), "empty": ("error", 1)}
    for name, sha in shas.items():
        code, data = report_json(settings, sha)
        status, exit_code = expected[name]
        assert (data["status"], code) == (status, exit_code), (name, data["reason"])
        assert data["commit"] == sha and data["attempts"] == 1 and data["runner"]
        if name == "empty":
            assert data["reason"] == "no tests found"
            continue
        oracle = run_unittest(checkout_copy(repo, sha, tmp_path / f"oracle-{name}"))
        assert {t["id"]: t["outcome"] for t in data["tests"]} == oracle.outcomes, name
        assert data["counts"]["total"] == oracle.tests_run
        assert (data["counts"]["failed"], data["counts"]["errors"], data["counts"]["skipped"]) == \
            (oracle.failures, oracle.errors, oracle.skipped)
    _, imported = report_json(settings, shas["import"])
    assert "test_import" in imported["reason"]

    # JUnit for other tools, from the same stored results.
    junit = tmp_path / "failing.xml"
    assert run_volt("report", shas["failing"], "--junit", str(junit), "--redis-url",
                    settings.effective_redis_url).returncode == 1
    xmlschema.XMLSchema(str(SCHEMAS / "junit-windyroad.xsd")).validate(str(junit))
    assert junit.read_text().count("<testcase ") == len(report_json(settings, shas["failing"])[1]["tests"])

    # The human form, history and status read the same records.
    text = run_volt("report", shas["failing"][:8], "--redis-url", settings.effective_redis_url)
    assert text.returncode == 1
    assert "FAILED: tests.test_broken.TestBroken.test_assert" in text.stdout and "arithmetic" in text.stdout
    hist = run_volt("history", "-n", "10", "--redis-url", settings.effective_redis_url)
    assert hist.returncode == 0 and len(hist.stdout.strip().splitlines()) == 5
    status = run_volt("status", "--json", "--redis-url", settings.effective_redis_url)
    assert json.loads(status.stdout)["queued"] == 0


def test_runner_workspaces_are_removed_and_user_clone_untouched(rq_conn, settings, make_repo) -> None:
    repo = make_repo()
    sha = repo.commit(PASSING, "tests")
    before = repo.git("status", "--porcelain", "--ignored")
    watch = RepoWatch(Store(rq_conn, settings), str(repo.path))
    watch.validate()
    watch.poll()
    assert run_rq_worker_burst(settings).returncode == 0
    assert report_json(settings, sha)[0] == 0
    assert repo.git("status", "--porcelain", "--ignored") == before
    builds_dir = next(Path(settings.workspace_dir).glob("*/builds"))
    assert list(builds_dir.iterdir()) == []
    assert repo.git("worktree", "list").count("\n") == 0  # no worktree was added to the user's clone


def test_a_commit_missing_from_the_remote_ends_error_not_crash(rq_conn, conn, settings, make_repo) -> None:
    repo = make_repo()
    repo.commit(PASSING, "tests")
    watch = RepoWatch(Store(rq_conn, settings), str(repo.path))
    watch.validate()
    build = watch.poll()[0]
    repo.git("commit", "--amend", "--quiet", "-m", "rewritten")
    repo.git("reflog", "expire", "--expire=now", "--all")
    repo.git("gc", "--quiet", "--prune=now")
    assert run_rq_worker_burst(settings).returncode == 0
    code, data = report_json(settings, build.commit)
    assert (code, data["status"]) == (1, "error")
    assert data["reason"].startswith("checkout failed")


def test_workspaces_left_by_a_killed_runner_are_removed_later(rq_conn, settings, make_repo) -> None:
    repo = make_repo()
    sha = repo.commit(PASSING, "tests")
    left = host_dir(settings.workspace_dir) / "builds" / "proj-left-behind"
    (left / "tree").mkdir(parents=True)
    with checkout(settings.workspace_dir, "proj", str(repo.path), sha, stale_after_s=3600) as ws:
        assert left.exists()  # young: it may belong to a build still running
        assert (ws.tree / "tests" / "test_maths.py").is_file()
    os.utime(left, (time.time() - 7200, time.time() - 7200))
    with checkout(settings.workspace_dir, "proj", str(repo.path), sha, stale_after_s=3600):
        assert not left.exists()
