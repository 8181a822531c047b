"""A pull request's statuses end to end: a bare repository whose pull request is `refs/pull/1/head` (made
with `git update-ref`, as a forge keeps it), the observer's watch, a real `volt worker` runner and `volt
scheduler` on a private redis-server, and the forge double. The pull request's first head has a failing
test: the double sees, on that head, pending, a pending naming the failing test while the build still
runs, then failure; the fixed head, pushed to the same pull request, gets success — each on the pull
request's own context, never on its base branch's commits."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from forge_double import ForgeDouble
from support import ROOT, GitRepo, child_env, run_volt_worker_burst, wait_until

from voltci.config import as_environment
from voltci.forge import ForgeLink
from voltci.observer import RepoWatch
from voltci.store import Store

TOKEN = "ghp_pull-e2e-T0KEN-only-for-the-scheduler"
CONTEXT = "volt/pr"
DELIVERY_WAIT_S = 240  # a loaded machine's scheduler may take a while; the log says why when it times out
BASE = {"calc.py": "def add(a, b):\n    return a + b\n", "tests/__init__.py": ""}
FAILING = {"tests/test_calc.py": (
    "import time, unittest\nfrom calc import add\n\n\n"
    "class Calc(unittest.TestCase):\n"
    "    def test_a_adds(self):\n"
    "        self.assertEqual(add(1, 1), 3)\n\n"
    "    def test_b_slow(self):\n"
    "        time.sleep(3)\n")}
FIXED = {"tests/test_calc.py": FAILING["tests/test_calc.py"].replace("add(1, 1), 3", "add(1, 1), 2")
         .replace("sleep(3)", "sleep(0)")}


@pytest.fixture
def double() -> Iterator[ForgeDouble]:
    forge = ForgeDouble(token=TOKEN).start()
    yield forge
    forge.stop()


def open_pull(work: GitRepo, bare: Path, number: int, sha: str) -> None:
    work.git("push", "--quiet", "--force", str(bare), f"{sha}:refs/volt-test/incoming")
    for args in (["update-ref", f"refs/pull/{number}/head", sha], ["update-ref", "-d", "refs/volt-test/incoming"]):
        subprocess.run(["git", *args], cwd=bare, check=True, timeout=60, capture_output=True)


def delivered(scheduler: subprocess.Popen, log_path: Path, seen: Callable[[], bool], what: str) -> None:
    try:
        wait_until(seen, what, timeout=DELIVERY_WAIT_S, process=scheduler)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the scheduler's log:\n{log_path.read_text(errors='replace')[-3000:]}") from None


def test_a_failing_then_fixed_pull_request_on_the_forge(rq_conn, settings, double, tmp_path: Path) -> None:
    work = GitRepo(tmp_path / "work")
    base = work.commit(BASE, "calc")
    bare = tmp_path / "proj.git"
    subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(bare)], check=True, timeout=60)
    work.git("push", "--quiet", str(bare), "HEAD:refs/heads/main")
    watch = RepoWatch(Store(rq_conn, settings), str(bare), name="proj", pull_requests=True, trusted_authors=["*"],
                      forge=ForgeLink("github", double.api, "octo/proj"))
    watch.validate()
    watch.poll()  # main's head
    assert run_volt_worker_burst(settings).returncode == 0
    env = child_env(**as_environment(settings), VOLT_FORGE_TOKEN=TOKEN, VOLT_PUBLIC_URL="https://ci.example.org")
    log_path = tmp_path / "scheduler.log"
    work.checkout("feature", create=True)
    first = work.commit(FAILING, "test calc (broken)")
    with open(log_path, "wb") as log:
        scheduler = subprocess.Popen([sys.executable, "-m", "voltci", "scheduler"], env=env, cwd=ROOT,
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        open_pull(work, bare, 1, first)
        assert [b.pull_request.number for b in watch.poll() if b.pull_request] == [1]
        wait_until(lambda: double.statuses(context=CONTEXT), "the queued pull request's pending status",
                   process=scheduler)
        worker = run_volt_worker_burst(settings)
        assert worker.returncode == 0, worker.stderr[-2000:]
        delivered(scheduler, log_path, lambda: any(s.status["state"] == "failure"
                                                   for s in double.statuses(context=CONTEXT)), "the failure status")
        second = work.commit(FIXED, "fix the test")
        open_pull(work, bare, 1, second)
        assert [b.commit for b in watch.poll() if b.pull_request] == [second]
        assert run_volt_worker_burst(settings).returncode == 0
        delivered(scheduler, log_path, lambda: any(s.sha == second and s.status["state"] == "success"
                                                   for s in double.statuses(context=CONTEXT)), "the success status")
    finally:
        scheduler.terminate()
        scheduler.wait(10)
    seen = [(s.sha, s.status["state"], s.status["description"]) for s in double.statuses("github", CONTEXT)]
    on_first = [(state, text) for sha, state, text in seen if sha == first]
    assert on_first[0][0] == "pending"
    failing = [n for n, (_, text) in enumerate(on_first) if text.startswith("1 failed so far: ")]
    assert failing and "tests.test_calc.Calc.test_a_adds" in on_first[failing[0]][1], on_first
    assert on_first[-1][0] == "failure" and all(state == "pending" for state, _ in on_first[:-1]), on_first
    on_second = [state for sha, state, _ in seen if sha == second]
    assert on_second[0] == "pending" and on_second[-1] == "success", on_second
    assert {sha for sha, _, _ in seen} == {first, second}  # the heads, never the merge commit or main's
    assert base not in {s.sha for s in double.statuses(context=CONTEXT)}
    assert double.invalid == []
