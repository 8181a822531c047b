"""A pytest build's live progress: the runner records how many tests have ended while they run, and
`volt up`'s status line shows it against the count of the repository's last build.

Real processes: a private redis-server, a git repository of 40 pytest tests of 0.2 s each set up with
no .volt.toml (pytest.ini and a requirements file), a `volt worker`, and `volt up` on a terminal."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import PYTEST_VERSION, child_env

from voltci.config import Settings, as_environment
from voltci.models import Status
from voltci.observer import RepoWatch
from voltci.runner.procs import descendants, kill_all
from voltci.store import Store
from voltci.web import create_app

TESTS = 40
SLOW_SUITE = {
    "pytest.ini": "[pytest]\ntestpaths = tests\n",
    "requirements-test.txt": f"pytest=={PYTEST_VERSION}\n",
    "tests/test_slow.py": (
        "import time\n\nimport pytest\n\n\n"
        f"@pytest.mark.parametrize('n', range({TESTS}))\n"
        "def test_slow(n):\n    time.sleep(0.2)\n"),
}
# How long the test waits for a build, and the build's own timeout: pytest is installed in a fresh environment first.
BUILD_WAIT_S = 300


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """One workspace for the module: the build environment (pytest) is made once and reused."""
    return tmp_path_factory.mktemp("progress-ws")


def settings_for(redis_url: str, workspace: Path) -> Settings:
    return Settings(redis_url=redis_url, workspace_dir=str(workspace), build_timeout=BUILD_WAIT_S, retries=0)


def build_with_a_worker(settings: Settings, repo_path: Path, conn, rq_conn,
                        pages: list[str] | None = None) -> tuple[str, list[int]]:
    """Queue the head of `repo_path`, run it on a real `volt worker --burst`, and read the build's
    progress through the store every 50 ms while it runs: the build id and the values seen (and, with
    `pages`, the build's web page each time, as its text)."""
    web = create_app(settings).test_client() if pages is not None else None
    watch = RepoWatch(Store(rq_conn, settings), str(repo_path))
    watch.validate()
    (build,) = watch.poll()
    worker = subprocess.Popen([sys.executable, "-m", "voltci", "worker", "--burst"],
                              env=child_env(**as_environment(settings)), stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    seen: list[int] = []
    try:
        deadline = time.monotonic() + BUILD_WAIT_S
        while not (current := Store(conn).records.get_build(build.id)).status.is_final:
            assert time.monotonic() < deadline, "the build did not end"
            if current.status is Status.RUNNING:
                seen.append(current.progress)
                if web is not None and pages is not None:
                    pages.append(web.get(f"/build/{current.repo}/{current.commit}").get_data(as_text=True))
            time.sleep(0.05)
        worker.wait(timeout=60)
    finally:
        if worker.poll() is None:
            kill_all([*descendants(worker.pid), worker.pid])
            worker.wait()
    return build.id, seen


def test_a_running_pytest_builds_progress_grows_before_it_ends(make_repo, redis_url, conn, rq_conn,
                                                               workspace) -> None:
    repo = make_repo()
    repo.commit(SLOW_SUITE, "forty slow tests")
    pages: list[str] = []
    build_id, seen = build_with_a_worker(settings_for(redis_url, workspace), repo.path, conn, rq_conn, pages)
    shown = [int(m.group(1)) for page in pages if (m := re.search(r'id="progress">(\d+)', page))]
    assert [n for n in shown if 0 < n < TESTS], "the build page never showed the tests done so far"
    assert shown == sorted(shown)
    build = Store(conn).records.get_build(build_id)
    assert build.status is Status.PASSED, build.reason
    assert build.counts.total == TESTS
    during = sorted({p for p in seen if 0 < p < TESTS})
    # the tests take 8 s and the runner records the count once a second: several values in between
    assert len(during) >= 3, seen
    assert seen == sorted(seen), f"progress went back: {seen}"


def test_volt_up_status_line_shows_a_pytest_builds_progress(make_repo, redis_url, conn, rq_conn, workspace,
                                                            tmp_path) -> None:
    settings = settings_for(redis_url, workspace)
    repo = make_repo()
    repo.commit(SLOW_SUITE, "forty slow tests")
    build_with_a_worker(settings, repo.path, conn, rq_conn)  # the repository's last count: 40
    sha = repo.commit({"README": "progress\n"}, "a second commit")
    screen = up_on_a_terminal(settings, repo.path, tmp_path)
    frames = re.findall(rf"proj {sha[:10]} \d+s (\d+)/(\d+|\?) tests", screen)
    assert frames, screen[-3000:]
    assert {total for _, total in frames} == {str(TESTS)}, frames
    done = [int(n) for n, _ in frames]
    assert len({n for n in done if 0 < n < TESTS}) >= 3, done
    assert done == sorted(done), done
    assert re.search(rf"passed +proj {sha[:10]}", screen), screen[-3000:]


def up_on_a_terminal(settings: Settings, repo_path: Path, tmp_path: Path) -> str:
    """`volt up --burst` with its standard output on a pseudo-terminal (so it draws its status line):
    everything it wrote there."""
    master, slave = pty.openpty()
    env = child_env(**as_environment(settings), COLUMNS="200", LINES="40", TERM="xterm")
    env.pop("VOLT_REDIS_URL", None)
    with open(tmp_path / "up.err", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "voltci", "up", "--repo", str(repo_path), "--burst",
                                 "--workers", "1", "--redis-url", settings.redis_url, "--timeout", str(BUILD_WAIT_S)],
                                env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=slave, stderr=err,
                                start_new_session=True)
    os.close(slave)
    screen = b""
    try:
        deadline = time.monotonic() + BUILD_WAIT_S
        exited = False
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0 if exited else 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the terminal's other end closed: volt up has exited
                    break
                if not chunk:
                    break
                screen += chunk
            elif exited:
                break  # it has exited and everything it wrote is read
            else:
                exited = proc.poll() is not None  # then read what it wrote as it exited
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            leftovers = descendants(proc.pid)
            os.killpg(proc.pid, signal.SIGKILL)
            kill_all(leftovers)
            proc.wait()
        os.close(master)
    assert proc.returncode == 0, (tmp_path / "up.err").read_text(errors="replace")[-3000:]
    return screen.decode(errors="replace")
