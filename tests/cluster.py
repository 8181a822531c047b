"""A Volt installation of real processes for fault tests: a private redis-server with its append-only
file on, `volt worker` runners and `volt scheduler`s, each in a session of its own, with fast
heartbeats. Everything it started is killed at the end, test processes included."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from sentinels import SentinelGroup
from support import ROOT, WAIT_S, GitRepo, child_env, wait_until

from voltci import keys
from voltci.config import Settings, as_environment
from voltci.connection import connect
from voltci.models import Build
from voltci.observer import RepoWatch
from voltci.redis_server import RedisServer
from voltci.runner.procs import TEST_RUN_ENV, children, descendants, kill_all, processes_with_env
from voltci.store import Store

# A test that starts a grandchild that would outlive it, and takes a while: FAULT_SLEEP seconds, a
# variable of the runner's environment its `pass_env` setting hands to builds.
GRANDCHILD = "import time; time.sleep(300)"
SLOW_TEST = {
    "tests/__init__.py": "",
    "tests/test_slow.py": (
        "import os, subprocess, sys, time, unittest\n\n\n"
        "class Slow(unittest.TestCase):\n"
        "    def test_slow(self):\n"
        f"        child = subprocess.Popen([sys.executable, '-c', {GRANDCHILD!r}])\n"
        "        time.sleep(float(os.environ.get('FAULT_SLEEP', '3')))\n"
        "        child.kill()\n"
        "        child.wait()\n"
    ),
}


class Cluster:
    """Volt's processes on one private redis-server, or (`sentinels`) on a Redis with Sentinel."""

    def __init__(self, tmp_path: Path, sentinels: SentinelGroup | None = None, **settings: object):
        self.tmp_path = tmp_path
        self.sentinels = sentinels
        self.server = RedisServer(tmp_path / "redis", appendonly=True).start() if sentinels is None else None
        url = sentinels.url if sentinels is not None else self.server.url if self.server is not None else ""
        self.settings = Settings(redis_url=url, workspace_dir=str(tmp_path / "ws"), heartbeat=0.5,
                                 heartbeat_ttl=1.5, build_timeout=60, pass_env="FAULT_SLEEP SHARD_SLEEP")
        self.settings = replace(self.settings, **settings)
        self.marks = tmp_path / "marks"
        self.marks.mkdir()
        self.procs: dict[str, subprocess.Popen] = {}
        self.conn = connect(url, decode=True)
        self.rq_conn = connect(url, decode=False)

    def env(self, **extra: str) -> dict[str, str]:
        return child_env(**{**as_environment(self.settings), "FAULT_DIR": str(self.marks), **extra})

    def start(self, name: str, *args: str, **env: str) -> subprocess.Popen:
        with open(self.tmp_path / f"{name}.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "voltci", *args], env=self.env(**env), cwd=ROOT,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs[name] = proc
        return proc

    def worker(self, name: str, **env: str) -> subprocess.Popen:
        return self.start(name, "worker", "--name", name, **env)

    def scheduler(self, name: str = "scheduler") -> subprocess.Popen:
        return self.start(name, "scheduler")

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")

    def watch(self, repo: GitRepo) -> RepoWatch:
        watch = RepoWatch(Store(self.rq_conn, self.settings), str(repo.path))
        watch.validate()
        return watch

    def build(self, build_id: str) -> Build:
        build = Store(self.conn).records.get_build(build_id)
        assert build is not None
        return build

    def beat(self, name: str) -> dict | None:
        text = self.conn.get(keys.runner(name))
        return json.loads(text) if text else None

    def wait_running_on(self, name: str) -> dict:
        return wait_until(lambda: (b := self.beat(name)) and b["build"] and
                          self.build(b["build"]).status.value == "running" and b, f"{name} to run a build")

    def wait_final(self, build_id: str, timeout: float = WAIT_S) -> Build:
        return wait_until(lambda: (b := self.build(build_id)).status.is_final and b, f"{build_id} to end", timeout)

    def runner_and_horse(self, name: str) -> list[int]:
        pid = self.procs[name].pid
        return [pid, *children(pid)]

    def kill_runner(self, name: str) -> None:
        """SIGKILL the runner and its work-horse, leaving the test processes to the kernel and Volt."""
        kill_all(self.runner_and_horse(name))
        self.procs[name].wait(timeout=10)

    def stop(self) -> None:
        for proc in self.procs.values():
            kill_all([*descendants(proc.pid), proc.pid], signal.SIGKILL)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        leftovers = [pid for pid, where in processes_with_env("FAULT_DIR").items() if where == str(self.marks)]
        kill_all(leftovers)
        self.conn.close()
        self.rq_conn.close()
        if self.server is not None:
            self.server.stop()


def marked_processes(build_id: str = "") -> dict[int, str]:
    """Test processes (pid -> run marker) of runs whose marker names `build_id`."""
    return {pid: marker for pid, marker in processes_with_env(TEST_RUN_ENV).items() if build_id in marker}


def grandchildren_started(build_id: str) -> list[int]:
    """Host pids of SLOW_TEST's grandchildren in the build's runs, found by the run's mark."""
    found = []
    for pid in marked_processes(build_id):
        try:
            if GRANDCHILD.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found

