"""The disk limit end to end: a real redis-server, a real `volt worker` and sandboxed builds of a
repository whose commits try to fill the runner host's disk — a big file in the tree, a full /tmp, junk
a setup step installs into an environment it made, into one it reused or into a branch's layer over the
protected one, 200,000 empty files, output that fills the log file, a file deleted but kept open, a
directory made unreadable, a tree too deep to count. Each ends `error` naming the disk
limit, nothing it wrote is left in the workspace dir, and the runner builds the next commit. A build
that plays with hard links, sparse files and links within its limit passes; a wrong `disk` value ends
`error` naming the key; asking for more than the runner allows is capped, and the log says so."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from support import ROOT, GitRepo, assert_one_line_error, child_env, run_volt, wait_until

from voltci.config import Settings, as_environment
from voltci.models import Build, Status
from voltci.observer import RepoWatch
from voltci.redis_server import RedisServer
from voltci.runner.procs import descendants, kill_all
from voltci.store import Store

pytestmark = pytest.mark.e2e

LIMIT = "50M"
TOML = f'[tests]\ndisk = "{LIMIT}"\ntimeout = 60\n'  # every attack sleeps past its write: a stop ends it
PASSING = {
    ".volt.toml": TOML,
    "tests/__init__.py": "",
    "tests/test_ok.py": "import unittest\n\n\nclass Ok(unittest.TestCase):\n    def test_ok(self):\n        pass\n",
}
JUNK = 200  # MiB each attack writes, four times its limit
WRITE = f"""
def write(path):
    with open(path, "wb") as out:
        for _ in range({JUNK}):
            out.write(b"\\1" * (1 << 20))
            out.flush()
    return out
"""
DISK_REASON = f"disk limit of {LIMIT} (tree, environment and temporary files)"
MIB = 1 << 20


def attack(body: str) -> dict[str, str]:
    """A commit whose one test does `body` (with `write(path)` at hand, writing JUNK MiB)."""
    code = "import os, sys, time, unittest\n" + WRITE + "\n\nclass Attack(unittest.TestCase):\n" \
           "    def test_attack(self):\n" + textwrap.indent(textwrap.dedent(body), " " * 8)
    return {"tests/test_attack.py": code}


@dataclass
class Host:
    """The workspace dir as the test sees it, with its own walk (not Volt's): bytes allocated, entries,
    and the names of every entry."""

    bytes: int
    entries: int
    names: set[str]

    @classmethod
    def of(cls, workspace: Path) -> Host:
        allocated, entries, names = 0, 0, set()
        for directory, subdirs, files in os.walk(workspace):
            for name in subdirs + files:
                try:
                    allocated += os.lstat(os.path.join(directory, name)).st_blocks * 512
                except OSError:
                    continue
                entries += 1
                names.add(name)
        return cls(allocated, entries, names)


class Runner:
    """One `volt worker` building one repository, commit after commit."""

    def __init__(self, tmp: Path):
        self.server = RedisServer(tmp / "redis").start()
        self.workspace = tmp / "ws"
        self.settings = Settings(redis_url=self.server.url, workspace_dir=str(self.workspace), build_timeout=300,
                                 retries=0, build_disk="1G")
        self.conn = redis.Redis.from_url(self.server.url, decode_responses=True)
        self.rq_conn = redis.Redis.from_url(self.server.url)
        self.repo = GitRepo(tmp / "repo")
        self.repo.commit(PASSING, "a suite that passes")
        self.watch = RepoWatch(Store(self.rq_conn, self.settings), str(self.repo.path))
        self.watch.validate()
        self.log_path = tmp / "worker.log"
        with open(self.log_path, "wb") as log:
            self.worker = subprocess.Popen([sys.executable, "-m", "voltci", "worker", "--name", "disk-runner"],
                                           cwd=ROOT, env=child_env(**as_environment(self.settings)),
                                           stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True)

    def build(self, files: dict[str, str | None], message: str, watch: RepoWatch | None = None) -> tuple[Build, str]:
        """Commit `files`, queue the commit (through `watch`, else the default branch's), wait for its build
        to end: the build and its log."""
        self.repo.commit(files, message)
        (queued,) = (watch or self.watch).poll()
        store = Store(self.conn)
        ended = wait_until(lambda: (b := store.records.get_build(queued.id)) is not None and b.status.is_final and b,
                           f"the build of '{message}' to end", timeout=240, process=self.worker)
        return ended, store.logs.read(queued.id)

    def next_build_passes(self, undo: dict[str, str | None]) -> str:
        """The runner is alive and builds the next commit, which passes; its log."""
        build, log = self.build({**PASSING, **undo}, "back to a suite that passes")
        assert build.status is Status.PASSED, (build.reason, log[-3000:])
        assert self.worker.poll() is None
        return log

    def stop(self) -> None:
        kill_all([*descendants(self.worker.pid), self.worker.pid])
        self.worker.wait(timeout=10)
        self.conn.close()
        self.rq_conn.close()
        self.server.stop()


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    runner = Runner(tmp_path_factory.mktemp("disk-builds"))
    try:  # its worker is stopped whatever the first build did
        build, log = runner.build({}, "first build: the environment is made")
        assert build.status is Status.PASSED, (build.reason, log[-3000:])
        yield runner
    finally:
        runner.stop()


def environment_of(log: str) -> Path:
    found = re.search(r"\[volt: (?:made|reusing) the environment (\S+)\]", log)
    assert found, log[-3000:]
    return Path(found.group(1))


def assert_stopped_and_removed(runner: Runner, files: dict[str, str | None], before: Host, marker: str,
                               fragment: str = DISK_REASON, logged: bool = True,
                               watch: RepoWatch | None = None) -> tuple[Build, str]:
    """The attack `files` ends `error` naming the disk limit, its log says so (unless its output went
    past log_max_bytes, where the log is cut), and it leaves nothing behind on the host."""
    build, log = runner.build(files, f"an attack: {marker}", watch)
    assert build.status is Status.ERROR, (build.status, build.reason, log[-3000:])
    assert fragment in build.reason, build.reason
    assert not logged or f"[volt: {build.reason}; its tree" in log, log[-3000:]
    after = Host.of(runner.workspace)
    assert not {name for name in after.names if name.startswith(marker)}, "what the build wrote is still there"
    assert after.bytes <= before.bytes + 2 * MIB, (before, after)
    assert after.entries <= before.entries + 100
    return build, log


def test_a_big_file_in_the_tree_stops_the_build(runner) -> None:
    before = Host.of(runner.workspace)
    files = attack('write("junk-tree.bin")\ntime.sleep(600)\n')
    assert_stopped_and_removed(runner, files, before, "junk-tree")
    runner.next_build_passes({"tests/test_attack.py": None})


def test_a_full_tmp_stops_the_build_and_an_environment_it_did_not_change_is_kept(runner) -> None:
    before = Host.of(runner.workspace)
    build, log = assert_stopped_and_removed(runner, attack('write("/tmp/junk-tmp.bin")\ntime.sleep(600)\n'),
                                            before, "junk-tmp")
    env = environment_of(log)
    assert "reusing the environment" in log and (env / "pyvenv.cfg").is_file()
    assert "its tree and temporary files are removed]" in log
    assert f"reusing the environment {env}" in runner.next_build_passes({"tests/test_attack.py": None})


# A setup step that runs what the commit's setup_action.py says, if it has one: the .volt.toml (and so
# the environment) stays the same from one commit to the next.
SETUP_TOML = TOML + 'setup = [["python", "-c", "import os; os.path.exists(\'setup_action.py\') and ' \
    'exec(open(\'setup_action.py\').read())"]]\n'
INSTALL_JUNK = ("import os, sysconfig, time\n" + WRITE + "\n"
                "where = os.path.join(sysconfig.get_paths()['purelib'], 'junk_pkg')\n"
                "os.makedirs(where)\n"
                "write(os.path.join(where, 'junk-env.bin'))\n"
                "time.sleep(600)\n")


def test_junk_installed_by_a_setup_step_is_removed_with_the_environment_it_made(runner) -> None:
    before = Host.of(runner.workspace)
    build, log = assert_stopped_and_removed(runner, {".volt.toml": SETUP_TOML, "setup_action.py": INSTALL_JUNK},
                                            before, "junk")
    env = environment_of(log)
    assert "made the environment" in log and "its tree, temporary files and the environment it made or changed are " \
        "removed]" in log
    assert not env.exists()
    assert not list(env.parent.glob(f"{env.name}.*[!k]")), "its stamps are left"  # its .lock stays
    runner.next_build_passes({"setup_action.py": None})


def test_junk_a_setup_step_installs_into_a_reused_environment_removes_it(runner) -> None:
    build, log = runner.build({".volt.toml": SETUP_TOML}, "setup steps that install nothing")
    assert build.status is Status.PASSED, (build.reason, log[-3000:])
    made = environment_of(log)
    before = Host.of(runner.workspace)
    build, log = assert_stopped_and_removed(runner, {"setup_action.py": INSTALL_JUNK}, before, "junk")
    assert f"reusing the environment {made}" in log and not made.exists()
    assert "the environment it made or changed are removed]" in log
    again = runner.next_build_passes({"setup_action.py": None, ".volt.toml": SETUP_TOML})
    assert f"made the environment {made}" in again


def test_a_branch_that_installs_junk_loses_its_own_layer_and_the_protected_environment_stays(runner) -> None:
    """A branch's builds see the protected scope's environment through a layer of their own: past the
    disk limit, that layer is discarded, and the environment below is left as it was."""
    build, log = runner.build({".volt.toml": SETUP_TOML}, "the protected environment")
    assert build.status is Status.PASSED, (build.reason, log[-3000:])
    protected = environment_of(log)
    runner.repo.checkout("feature", create=True)
    try:
        branch = RepoWatch(Store(runner.rq_conn, runner.settings), str(runner.repo.path), branches=["feature"])
        branch.validate()
        before = Host.of(runner.workspace)
        build, log = assert_stopped_and_removed(runner, {"setup_action.py": INSTALL_JUNK}, before, "junk",
                                                watch=branch)
        layer = re.search(r"seen through a layer of this scope's own \((\S+)\)", log)
        assert layer, log[-3000:]
        assert not Path(layer.group(1)).exists()
        assert (protected / "pyvenv.cfg").is_file() and not list(protected.rglob("junk*"))
    finally:
        runner.repo.checkout("main")
    assert f"reusing the environment {protected}" in runner.next_build_passes({".volt.toml": SETUP_TOML})


def test_two_hundred_thousand_empty_files_stop_the_build(runner) -> None:
    before = Host.of(runner.workspace)
    files = attack('os.mkdir("junk-many")\n'
                   'for n in range(200_000):\n'
                   '    open(f"junk-many/junk-{n}", "w").close()\n'
                   'time.sleep(600)\n')
    assert_stopped_and_removed(runner, files, before, "junk")
    runner.next_build_passes({"tests/test_attack.py": None})


def test_empty_files_made_in_the_last_moment_are_counted_when_the_steps_end(runner) -> None:
    before = Host.of(runner.workspace)
    files = attack('os.mkdir("/tmp/junk-late")\n'
                   'for n in range(50_000):\n'
                   '    open(f"/tmp/junk-late/junk-{n}", "w").close()\n')
    assert_stopped_and_removed(runner, files, before, "junk")
    runner.next_build_passes({"tests/test_attack.py": None})


def test_output_that_fills_the_log_file_stops_the_build(runner) -> None:
    """What the tests print goes to a file of the build's scratch directory before Redis (which keeps
    at most log_max_bytes of it): it counts as the build's temporary files."""
    before = Host.of(runner.workspace)
    files = attack(f'for _ in range({JUNK}):\n'
                   '    sys.stdout.write("junk-output " * 87381 + "\\n")\n'
                   'sys.stdout.flush()\n'
                   'time.sleep(600)\n')
    assert_stopped_and_removed(runner, files, before, "junk-output", logged=False)
    runner.next_build_passes({"tests/test_attack.py": None})


def test_a_file_deleted_but_kept_open_stops_the_build(runner) -> None:
    before = Host.of(runner.workspace)
    files = attack('kept = open("/tmp/junk-deleted.bin", "wb")\n'
                   'os.unlink("/tmp/junk-deleted.bin")\n'
                   f'for _ in range({JUNK}):\n'
                   '    kept.write(b"\\1" * (1 << 20))\n'
                   '    kept.flush()\n'
                   'time.sleep(600)\n')
    assert_stopped_and_removed(runner, files, before, "junk-deleted")
    runner.next_build_passes({"tests/test_attack.py": None})


def test_a_directory_made_unreadable_is_counted_and_removed(runner) -> None:
    before = Host.of(runner.workspace)
    files = attack('os.makedirs("/tmp/junk-locked/inner")\n'
                   'write("/tmp/junk-locked/inner/junk-locked.bin")\n'
                   'os.chmod("/tmp/junk-locked/inner", 0)\n'
                   'os.chmod("/tmp/junk-locked", 0)\n')
    assert_stopped_and_removed(runner, files, before, "junk-locked")
    runner.next_build_passes({"tests/test_attack.py": None})


def test_a_tree_too_deep_to_count_stops_the_build_and_is_removed(runner) -> None:
    before = Host.of(runner.workspace)
    files = attack('fd = os.open(".", os.O_RDONLY)\n'
                   'for level in range(400):\n'
                   '    name = "junk-deep" if level == 0 else "d" * 200\n'
                   '    os.mkdir(name, dir_fd=fd)\n'
                   '    below = os.open(name, os.O_RDONLY, dir_fd=fd)\n'
                   '    os.close(fd)\n'
                   '    fd = below\n')
    build, _ = assert_stopped_and_removed(runner, files, before, "junk-deep", fragment="levels deep")
    assert "disk limit of 50M" in build.reason
    runner.next_build_passes({"tests/test_attack.py": None})


def test_links_and_sparse_files_within_the_limit_pass(runner) -> None:
    """Hard links to one file count it once, a sparse file what it holds, links are not followed: a
    build that holds 30 MiB under a 50M limit passes, however large it looks."""
    files = attack('with open("junk-linked.bin", "wb") as out:\n'
                   '    out.write(b"\\1" * (30 << 20))\n'
                   'os.mkdir("junk-links")\n'
                   'for n in range(500):\n'
                   '    os.link("junk-linked.bin", f"junk-links/{n}")\n'
                   'with open("/tmp/junk-sparse.bin", "wb") as out:\n'
                   '    out.truncate(10 << 30)\n'
                   'os.symlink("/usr", "junk-usr")\n'
                   'os.symlink(sys.prefix, "junk-env")\n')
    build, log = runner.build(files, "links and sparse files")
    assert build.status is Status.PASSED, (build.reason, log[-3000:])
    runner.next_build_passes({"tests/test_attack.py": None})


@pytest.mark.parametrize("value, fragment", [
    ('"lots"', "'tests.disk' must be a size like \"10G\" or \"500M\", got 'lots'"),
    ("12", "'tests.disk' must be at least 16M"),
])
def test_a_wrong_disk_value_ends_error_naming_the_key(runner, value, fragment) -> None:
    build, log = runner.build({".volt.toml": f"[tests]\ndisk = {value}\n"}, "a wrong disk value")
    assert build.status is Status.ERROR and fragment in build.reason, build.reason
    runner.next_build_passes({})


def test_asking_for_more_than_the_runner_allows_is_capped_and_said(runner) -> None:
    build, log = runner.build({".volt.toml": '[tests]\ndisk = "5G"\n'}, "a larger disk limit")
    assert build.status is Status.PASSED, (build.reason, log[-3000:])
    assert "[volt: .volt.toml asks for a disk limit of 5G, more than this runner allows; the build gets 1G]" in log
    runner.next_build_passes({})


def test_a_runner_given_a_wrong_disk_limit_refuses_to_start_in_one_line(tmp_path) -> None:
    started = run_volt("worker", "--burst", env={"VOLT_BUILD_DISK": "a lot", "VOLT_WORKSPACE_DIR": str(tmp_path)})
    assert_one_line_error(started, "VOLT_BUILD_DISK: setting 'build_disk' must be a size like")
