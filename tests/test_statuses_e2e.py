"""Commit statuses end to end: a real git repository with a failing test, the observer's watch, a real
`volt worker` runner and `volt scheduler` on a private redis-server, and the forge double. The double
sees pending, a pending naming the failing test while the build still runs, then failure; and for the
fixed commit, success — in order, every body valid by GitHub's published schema. The token is in the
scheduler's environment only, and nowhere in Redis, the build or the logs."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from forge_double import ForgeDouble
from support import ROOT, child_env, run_volt_worker_burst, wait_until

from voltci.config import as_environment
from voltci.forge import ForgeLink
from voltci.observer import RepoWatch
from voltci.store import Store

TOKEN = "ghp_e2e-T0KEN-only-for-the-scheduler"
FAILING = {
    "tests/__init__.py": "",
    "tests/test_calc.py": (
        "import time, unittest\n\n\n"
        "class Calc(unittest.TestCase):\n"
        "    def test_a_adds(self):\n"
        "        self.assertEqual(1 + 1, 3)\n\n"
        "    def test_b_slow(self):\n"
        "        time.sleep(3)\n"
    ),
}
FIXED = {"tests/test_calc.py": FAILING["tests/test_calc.py"].replace("1 + 1, 3", "1 + 1, 2").replace("sleep(3)",
                                                                                                   "sleep(0)")}


@pytest.fixture
def double() -> Iterator[ForgeDouble]:
    forge = ForgeDouble(token=TOKEN).start()
    yield forge
    forge.stop()


def test_the_forge_sees_pending_the_failing_test_failure_then_success(rq_conn, settings, make_repo, double,
                                                                    tmp_path: Path) -> None:
    repo = make_repo()
    first = repo.commit(FAILING, "Add calc with a broken test")
    watch = RepoWatch(Store(rq_conn, settings), str(repo.path), name="proj",
                      forge=ForgeLink("github", double.api, "octo/proj"))
    watch.validate()
    env = child_env(**as_environment(settings), VOLT_FORGE_TOKEN=TOKEN, VOLT_PUBLIC_URL="https://ci.example.org")
    log_path = tmp_path / "scheduler.log"
    with open(log_path, "wb") as log:
        scheduler = subprocess.Popen([sys.executable, "-m", "voltci", "scheduler"], env=env, cwd=ROOT,
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert [b.commit for b in watch.poll()] == [first]
        wait_until(lambda: double.statuses(context="volt"), "the queued build's pending status", process=scheduler)
        worker = run_volt_worker_burst(settings)
        assert worker.returncode == 0, worker.stderr[-2000:]
        wait_until(lambda: any(s.status["state"] == "failure" for s in double.statuses()), "the failure status",
                   process=scheduler)
        second = repo.commit(FIXED, "Fix calc")
        assert [b.commit for b in watch.poll()] == [second]
        assert run_volt_worker_burst(settings).returncode == 0
        wait_until(lambda: any(s.sha == second and s.status["state"] == "success" for s in double.statuses()),
                   "the success status", process=scheduler)
    finally:
        scheduler.terminate()
        scheduler.wait(10)
    seen = [(s.sha, s.status["state"], s.status["description"]) for s in double.statuses("github", "volt")]
    on_first = [(state, text) for sha, state, text in seen if sha == first]
    assert on_first[0][0] == "pending" and on_first[0][1].startswith("queued")
    failing = [n for n, (_, text) in enumerate(on_first) if text.startswith("1 failed so far: ")]
    assert failing and "tests.test_calc.Calc.test_a_adds" in on_first[failing[0]][1]
    assert on_first[-1][0] == "failure" and all(state == "pending" for state, _ in on_first[:-1])
    assert "first: tests.test_calc.Calc.test_a_adds" in on_first[-1][1]
    on_second = [state for sha, state, _ in seen if sha == second]
    assert on_second[0] == "pending" and on_second[-1] == "success"
    assert [sha for sha, _, _ in seen] == sorted((sha for sha, _, _ in seen), key=[first, second].index)
    assert double.invalid == [] and {s.code for s in double.requests()} == {201}
    assert all(s.status["target_url"].startswith("https://ci.example.org/build/proj/") for s in double.statuses())
    dump = b"".join(rq_conn.dump(key) or b"" for key in rq_conn.scan_iter(count=1000))
    assert TOKEN.encode() not in dump
    assert TOKEN not in log_path.read_text(errors="replace") and TOKEN not in worker.stdout + worker.stderr
