"""What the test modules share: builders of records, source trees and repositories, a build's steps
run in a tree, the processes tests start the way a user would (`volt`, `rq worker`), and the one way
to wait for something (and for how long: WAIT_S). Test modules import from here (and from cluster.py,
sample_project.py, unittest_oracle.py, sandbox_probe.py), never from each other; conftest.py holds
only fixtures.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import redis

from voltci import keys
from voltci.config import Settings
from voltci.models import Build, Counts, Outcome, RunOutcome, Status, TestResult
from voltci.runner.steps import BuildSteps, StopCheck
from voltci.store import Store

WAIT_S = 90  # how long a test waits for something by default (wait_until): long enough on a loaded machine
PYTEST_VERSION = "9.2.0"  # the one requirements.txt pins: what builds of pytest suites install in tests

ROOT = Path(__file__).resolve().parent.parent
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "Test Author", "GIT_AUTHOR_EMAIL": "author@volt.invalid",
                "GIT_COMMITTER_NAME": "Test Author", "GIT_COMMITTER_EMAIL": "author@volt.invalid"}


LOCKED_PASSWORD = "s3cret-Volt-trust"


def write_tree(root: Path, files: Mapping[str, str | None], *, dedent: bool = True) -> Path:
    """Write `files` (path -> text) under `root`, making directories on the way; a None deletes the file.
    Texts are dedented (tests write them as indented literals) unless `dedent` is false. Returns `root`."""
    for name, text in files.items():
        path = root / name
        if text is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text) if dedent else text, encoding="utf-8")
    return root


def tree_with(root: Path, *file_sets: Mapping[str, str]) -> Path:
    """A build's two directories under `root`: `tree`, holding every set of files (written as
    write_tree does, a later set over an earlier), and an empty `scratch` for what a run writes.
    Returns the tree."""
    tree = root / "tree"
    for files in file_sets:
        write_tree(tree, files)
    (root / "scratch").mkdir(exist_ok=True)
    return tree


class GitRepo:
    """A real git repository in a temp dir, for the observer and runners to build."""

    def __init__(self, path: Path, branch: str = "main"):
        self.path = path
        path.mkdir(parents=True)
        self.git("init", "--quiet", f"--initial-branch={branch}")

    def git(self, *args: str) -> str:
        env = {**os.environ, **GIT_IDENTITY}
        return subprocess.run(["git", *args], cwd=self.path, env=env, check=True, capture_output=True,
                              text=True, timeout=60).stdout.strip()

    def commit(self, files: dict[str, str | None], message: str) -> str:
        """Write (or, for None, delete) files, as given, and commit them; returns the new sha."""
        write_tree(self.path, files, dedent=False)
        self.git("add", "--all")
        self.git("commit", "--quiet", "--allow-empty", "-m", message)
        return self.head()

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")

    def checkout(self, branch: str, create: bool = False) -> None:
        self.git("checkout", "--quiet", *(["-b"] if create else []), branch)


def run_steps(tree: Path, scratch: Path, repo: str, settings: Settings, should_stop: StopCheck,
              run_id: str) -> RunOutcome:
    """Every phase of a whole build in `tree`, in the order a runner takes them (runner/build.py)."""
    with BuildSteps(tree, scratch, repo, settings, should_stop, run_id) as steps:
        return steps.prepare() or steps.set_up() or steps.test()


def child_env(**extra: str) -> dict[str, str]:
    """Environment for a process the tests start: this checkout importable, the machine's VOLT_* left out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOLT_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def worker_env(settings: Settings) -> dict[str, str]:
    return child_env(VOLT_WORKSPACE_DIR=settings.workspace_dir, VOLT_BUILD_TIMEOUT=str(settings.build_timeout))


RQ_WORKER = [sys.executable, "-m", "rq.cli", "worker", "-S", "rq.serializers.JSONSerializer"]


def run_rq_worker_burst(settings: Settings, timeout: float = 120) -> subprocess.CompletedProcess:
    """A plain `rq worker -S rq.serializers.JSONSerializer --burst` on Volt's queue, as the README says."""
    return subprocess.run(
        [*RQ_WORKER, "--burst", "--url", settings.effective_redis_url, settings.queue],
        env=worker_env(settings), cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        start_new_session=True)


def run_volt_worker_burst(settings: Settings, timeout: float = 120) -> subprocess.CompletedProcess:
    """`volt worker --burst` on Volt's queue: a runner with its own heartbeat from its start."""
    env = {"VOLT_WORKSPACE_DIR": settings.workspace_dir, "VOLT_BUILD_TIMEOUT": str(settings.build_timeout)}
    return run_volt("worker", "--burst", "--redis-url", settings.effective_redis_url, env=env, timeout=timeout)


def run_volt(*args: str, env: dict[str, str] | None = None, timeout: float = 60,
             cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The `volt` command as a user runs it, in a subprocess."""
    return subprocess.run([sys.executable, "-m", "voltci", *args], env=child_env(**(env or {})), capture_output=True,
                          text=True,
                          timeout=timeout, cwd=cwd or ROOT, stdin=subprocess.DEVNULL)


SHA_A = "abcd" + "1" * 36
SHA_B = "abce" + "2" * 36
SHA_C = "abcd" + "3" * 36


def add(conn: redis.Redis, repo: str, sha: str, score: float = 1.0) -> Build:
    build = Build(id=keys.build_id(repo, sha), repo=repo, url="/r", commit=sha, branch="main", subject="s")
    Store(conn).builds.add(build, score)
    return build


def running(conn: redis.Redis, build_id: str, attempt: int = 1) -> Store:
    """A build `build_id` whose attempt `attempt` runs (only the running attempt may write its output)."""
    store = Store(conn)
    store.builds.add(Build(id=build_id, repo="proj", url="/r", commit=SHA_A, branch="main", attempt=attempt), 1.0)
    assert store.builds.start_attempt(build_id, attempt, "r1") is not None
    return store


class Events:
    """`volt up`'s events as its loop reads them (up.py): `news` one at a time, then none."""

    def __init__(self, news: list[object]):
        self.news = news

    def get(self, timeout: float) -> object:
        return self.news.pop(0) if self.news else None


class QuietPool:
    """`volt up`'s pool of processes, with none to look after."""

    def supervise(self) -> None:
        pass


def outcome(status: Status = Status.PASSED) -> RunOutcome:
    tests = [TestResult(f"t.T.test_{i}", Outcome.PASSED, 0.1, order=i) for i in range(3)]
    return RunOutcome(status, tests, Counts(total=3, passed=3))


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = WAIT_S, *,
               ignoring: tuple[type[BaseException], ...] = (redis.ConnectionError,),
               process: subprocess.Popen | None = None, every: float = 0.1) -> Any:
    """The first true value of `predicate()`, asked every `every` seconds for at most `timeout`; an
    exception of `ignoring` counts as not yet. With `process`, it fails at once when that process
    exits (it was to bring what is waited for)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except ignoring:
            value = None
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{process.args[0]} exited ({process.returncode}) while waiting for {what}")
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def alive(pid: int) -> bool:
    """Running, and not a zombie (read from /proc here, not through Volt's code, as the tests' oracle)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def snapshot(conn) -> dict:
    """What Redis holds, key by key, as values (not DUMP's bytes: a hash that Redis rehashes while it is
    only read dumps its fields in another order), with each key's time to live."""
    raw = conn.__class__(connection_pool=conn.connection_pool.__class__(
        **{**conn.connection_pool.connection_kwargs, "decode_responses": False}))
    readers = {b"hash": raw.hgetall, b"set": raw.smembers, b"list": lambda key: raw.lrange(key, 0, -1),
               b"zset": lambda key: raw.zrange(key, 0, -1, withscores=True)}
    try:
        return {key: (kind, readers.get(kind, raw.dump)(key), raw.ttl(key) > 0)
                for key in raw.keys("*") for kind in [raw.type(key)]}
    finally:
        raw.close()


def assert_one_line_error(proc: subprocess.CompletedProcess, fragment: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("volt: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


SCHEMAS = Path(__file__).resolve().parent / "schemas"
