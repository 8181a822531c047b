"""Attacks on what crosses the sandbox's wall, each a commit built by a real `volt worker` on a Redis that
wants a password, each checked on the host afterwards: the files that must survive, the ones that must
not appear, what the host's processes show, and the runner still taking the next build.

What is closed, by class: variables that change how programs load (refused, naming key and file; the
rest set inside the sandbox only); the runner's own files for a build (out of its reach) and the
files it reads or removes in the build's directories (never through a link); the dependency files it
hashes (never followed); what one branch's build leaves for another's (trust scopes); the host's own
services (a network of the build's own); the runner's secrets (by exact name, without credentials).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import redis
from support import ROOT, GitRepo, alive, child_env, wait_until

from voltci.config import Settings, as_environment, host_dir
from voltci.observer import RepoWatch
from voltci.redis_server import RedisServer, find_redis_server, free_port
from voltci.runner import environments
from voltci.runner.network import host_addresses
from voltci.store import Store

pytestmark = pytest.mark.e2e

PASSWORD = "boundary-Redis-secret"
TOKEN = "uv-publish-token-that-no-build-may-see"
INDEX_PASSWORD = "index-password-that-no-build-may-see"
BUILD_WAIT_S = 180


class Runner:
    """One `volt worker` on a password-protected Redis, its runner environment holding secrets a build
    must never see; builds are queued by the observer's code, as `volt-observe` queues them."""

    def __init__(self, base: Path, server: RedisServer):
        self.base, self.server = base, server
        self.settings = Settings(redis_url=server.url, workspace_dir=str(base / "ws"), build_timeout=120, retries=1)
        self.env = child_env(**as_environment(self.settings), UV_PUBLISH_TOKEN=TOKEN,
                             PIP_EXTRA_INDEX_URL=f"https://volt:{INDEX_PASSWORD}@index.invalid/simple")
        self.log_path = base / "worker.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "voltci", "worker", "--name", "boundary"], cwd=ROOT,
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.conn = redis.Redis.from_url(server.url)
        self.store = Store(self.conn, self.settings)
        self.repos = 0

    def repo(self) -> GitRepo:
        self.repos += 1
        return GitRepo(self.base / "repos" / f"r{self.repos}")

    def build(self, repo: GitRepo, branch: str = "main") -> dict:
        """Queue the head of `branch` and wait for its report (`volt report --json`, as a user reads it)."""
        watch = RepoWatch(self.store, str(repo.path), name=repo.path.name, branches=[branch])
        watch.validate()
        queued = [build for build in watch.poll() if build.branch == branch][-1]
        wait_until(lambda: self._ended(queued.id), f"the build of {branch} to end", timeout=BUILD_WAIT_S,
                   process=self.proc)
        shown = subprocess.run([sys.executable, "-m", "voltci", "report", queued.commit, "--repo", repo.path.name,
                                "--json"], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60)
        report = json.loads(shown.stdout)
        log = subprocess.run([sys.executable, "-m", "voltci", "log", queued.commit, "--repo", repo.path.name],
                             cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60)
        report["log"] = log.stdout
        return report

    def _ended(self, build_id: str) -> bool:
        build = self.store.records.get_build(build_id)
        return build is not None and build.status.value not in ("queued", "running")

    def still_builds(self) -> None:
        """The runner is alive and takes the next build: a plain passing one."""
        assert self.proc.poll() is None, self.log_path.read_text(errors="replace")[-3000:]
        repo = self.repo()
        repo.commit(PASSING, "an ordinary commit")
        report = self.build(repo)
        assert report["status"] == "passed", report["reason"]

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.conn.close()


PASSING = {"tests/__init__.py": "", "tests/test_ok.py": "import unittest\n\nclass T(unittest.TestCase):\n"
                                                       "    def test_ok(self):\n        pass\n"}


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("boundary")
    server = RedisServer(base / "redis", password=PASSWORD).start()
    started = Runner(base, server)
    wait_until(lambda: "network:" in started.log_path.read_text(errors="replace"), "the worker to say how it works",
               timeout=60, process=started.proc)
    yield started
    started.stop()
    server.stop()


def test_the_worker_says_how_builds_reach_the_network(runner: Runner) -> None:
    said = runner.log_path.read_text(errors="replace")
    assert "network: steps with network" in said and "closed to this host" in said, said


# ---------------------------------------------------------------- variables that change how programs load

@pytest.mark.parametrize(("files", "key", "where"), [
    ({"tox.ini": "[testenv]\nset_env =\n    LD_PRELOAD = ./evil.so\ncommands = python -m unittest\n"},
     "LD_PRELOAD", "tox.ini"),
    ({"tox.ini": "[testenv]\nsetenv =\n    GCONV_PATH = ./gconv\ncommands = python -m unittest\n"},
     "GCONV_PATH", "tox.ini"),
    ({"tox.toml": 'env_list = ["py"]\n[env_run_base]\nset_env = { LD_AUDIT = "./a.so" }\n'
                  'commands = [["python", "-m", "unittest"]]\n'}, "LD_AUDIT", "tox.toml"),
    ({"pyproject.toml": '[project]\nname = "p"\nversion = "0"\n[tool.tox]\nenv_list = ["py"]\n'
                        '[tool.tox.env_run_base]\nset_env = { BASH_ENV = "./startup.sh" }\n'
                        'commands = [["python", "-m", "unittest"]]\n'}, "BASH_ENV", "pyproject.toml"),
    ({".volt.toml": '[matrix]\npython = ["3.11"]\nenv = [{LD_LIBRARY_PATH = "."}]\n'},
     "LD_LIBRARY_PATH", ".volt.toml"),
    ({".volt.toml": '[matrix]\npython = ["3.11"]\nenv = [{PYTHONSTARTUP = "evil.py"}]\n'},
     "PYTHONSTARTUP", ".volt.toml"),
])
def test_loader_variables_end_the_build_naming_the_key_and_the_file(runner: Runner, files: dict[str, str], key: str,
                                                                     where: str) -> None:
    marker = runner.base / f"loaded-{key}"
    repo = runner.repo()
    repo.commit({**PASSING, **files, "evil.py": f"open({str(marker)!r}, 'w').write('ran')\n",
                 "startup.sh": f"touch {marker}\n"}, f"sets {key}")
    report = runner.build(repo)
    assert report["status"] == "error", report
    assert key in report["reason"] and where in report["reason"], report["reason"]
    assert "cannot be preloaded" not in report["log"]  # ld.so never saw it: nothing of it reached a process
    assert not marker.exists()
    runner.still_builds()


def test_a_builds_variables_are_set_inside_its_sandbox_only(runner: Runner) -> None:
    """The bwrap process the runner starts on the host gets a fixed environment, and its command line holds
    no variable: while the tests run, no process of the host's own PID namespace shows the build's value."""
    value = f"build-value-{os.getpid()}-{time.time_ns()}"
    repo = runner.repo()
    repo.commit({"tox.ini": f"[testenv]\nset_env =\n    PROBE_VALUE = {value}\nskip_install = true\n"
                            "commands = python -m unittest\n",
                 "tests/__init__.py": "", "tests/test_env.py": textwrap.dedent(f"""\
                     import os, time, unittest

                     class T(unittest.TestCase):
                         def test_value_is_here(self):
                             self.assertEqual(os.environ.get("PROBE_VALUE"), {value!r})
                             time.sleep(3)
                     """)}, "a variable of its own")
    seen: list[str] = []
    own_namespace = os.readlink("/proc/self/ns/pid")

    def look() -> bool:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.readlink(entry / "ns" / "pid") != own_namespace:
                    continue  # inside a sandbox: where the value belongs
                shown = (entry / "environ").read_bytes() + (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if value.encode() in shown:
                seen.append(entry.name)
        return False

    stop = threading.Event()
    watcher = threading.Thread(target=lambda: [look() for _ in iter(lambda: stop.wait(0.05), True)])
    watcher.start()
    try:
        report = runner.build(repo)
    finally:
        stop.set()
        watcher.join()
    assert report["status"] == "passed", (report["reason"], report["log"][-2000:])
    assert seen == [], f"host processes {seen} carried the build's variable"


def test_the_runners_secrets_reach_no_build(runner: Runner) -> None:
    repo = runner.repo()
    repo.commit({"tests/__init__.py": "", "tests/test_env.py": textwrap.dedent("""\
        import os, unittest

        class T(unittest.TestCase):
            def test_show(self):
                print(sorted(os.environ.items()))
                self.assertNotIn("UV_PUBLISH_TOKEN", os.environ)
                self.assertEqual(os.environ.get("PIP_EXTRA_INDEX_URL"), "https://index.invalid/simple")
        """)}, "prints its environment")
    report = runner.build(repo)
    assert report["status"] == "passed", (report["reason"], report["log"][-2000:])
    stored = b"".join(runner.conn.dump(key) or b"" for key in runner.conn.scan_iter("volt:*"))
    for secret in (TOKEN, INDEX_PASSWORD, PASSWORD):
        assert secret not in report["log"] and secret.encode() not in stored


# ---------------------------------------------------------------- files across the wall

def test_files_the_runner_writes_for_a_build_are_out_of_its_reach(runner: Runner) -> None:
    """A failing test is run again from an ids file the runner writes; the build tries to write that file
    and plants links in its results directory towards a host file, which must stay as it was."""
    victim = runner.base / "victim.pth"
    victim.write_text("untouched\n")
    repo = runner.repo()
    repo.commit({"tests/__init__.py": "", "tests/test_swap.py": textwrap.dedent(f"""\
        import os, sys, unittest

        VICTIM = {str(victim)!r}

        def plant(directory):
            for name in ["retry-1-ids.txt", "retry-2-ids.txt", "shard-tests.txt", "wheel-build.json"]:
                path = os.path.join(directory, name)
                try:
                    os.remove(path)
                except OSError:
                    pass
                try:
                    os.symlink(VICTIM, path)
                except OSError:
                    pass

        class T(unittest.TestCase):
            def test_flaky(self):
                argv = open("/proc/self/cmdline", "rb").read().split(b"\\0")
                paths = [a.decode() for a in argv if a.startswith(b"/")]
                for path in paths:
                    if path.endswith(".txt"):  # the ids to run again: the runner's, read-only here
                        with self.assertRaises(OSError):
                            open(path, "a").write("escaped\\n")
                    plant(os.path.dirname(path))
                if os.path.exists("ran-once"):
                    return
                open("ran-once", "w").close()
                self.fail("fails the first time")
        """)}, "swaps the runner's files")
    report = runner.build(repo)
    assert report["status"] == "passed", (report["reason"], report["log"][-2000:])
    assert [(t["outcome"], t.get("flaky")) for t in report["tests"]] == [("passed", True)], report["log"]
    assert victim.read_text() == "untouched\n"
    runner.still_builds()


@pytest.mark.parametrize("how", ["committed", "made by a setup step"])
def test_a_junit_path_behind_a_link_removes_and_reads_nothing_of_the_host(runner: Runner, how: str) -> None:
    host_dir_ = runner.base / f"hostdir-{how.split()[0]}"
    host_dir_.mkdir()
    victim = host_dir_ / "x"
    victim.write_text('<testsuite><testcase classname="LEAKED" name="x"/></testsuite>')
    volt = {".volt.toml": "[tests]\ncommand = ['python', '-c', 'pass']\njunit = 'hostdir/x'\n"}
    repo = runner.repo()
    if how == "committed":
        (repo.path / "hostdir").symlink_to(host_dir_)
        repo.commit(volt, "junit behind a committed link")
    else:
        volt[".volt.toml"] += f"setup = [['ln', '-s', {str(host_dir_)!r}, 'hostdir']]\n"
        repo.commit(volt, "junit behind a link a setup step makes")
    report = runner.build(repo)
    assert report["status"] == "error" and "junit" in report["reason"], report["reason"]
    assert victim.is_file(), "the runner removed a file of the host through a link"
    assert "LEAKED" not in json.dumps(report)
    runner.still_builds()


def test_dependency_files_are_hashed_through_the_gate(tmp_path: Path) -> None:
    """A requirements file that is a link (to an endless device, to a host secret) is hashed as the link's
    text, never read; a FIFO never blocks; a file larger than any real one ends the build."""
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    secret = tmp_path / "secret"
    secret.write_text("one")
    (tree / "requirements-test.txt").symlink_to("/dev/zero")
    (tree / "requirements.txt").symlink_to(secret)
    (tree / "hostdir").symlink_to(tmp_path)  # */requirements*.txt must not look behind it
    os.mkfifo(tree / "sub" / "requirements-dev.txt")
    started = time.monotonic()
    first = environments.dependency_hash(tree, sys.executable)
    secret.write_text("two: the environment's name says nothing of it")
    (tmp_path / "requirements-host.txt").write_text("x")
    assert environments.dependency_hash(tree, sys.executable) == first
    assert time.monotonic() - started < 60  # no read of /dev/zero, no wait on the FIFO (a bound, not a time)
    (tree / "requirements-big.txt").write_bytes(b"#" * (environments.MAX_DEPENDENCY_FILE + 1))
    with pytest.raises(environments.EnvironmentUnavailable, match="requirements-big.txt is larger"):
        environments.dependency_hash(tree, sys.executable)


# ---------------------------------------------------------------- one branch, another's build

def test_one_branch_cannot_poison_what_another_branchs_builds_run(runner: Runner) -> None:
    """A branch's setup step writes a .pth into its environment (seeded from main's: the same dependency
    files) and its tests try to write into it; main's next build, whose test fails, is reported failed and
    its environment holds nothing of the branch."""
    repo = runner.repo()
    volt = {".volt.toml": "[tests]\nsetup = [['python', 'setup_step.py']]\n"}
    tests = {"tests/__init__.py": "", "tests/test_main.py": textwrap.dedent("""\
        import os, unittest

        class T(unittest.TestCase):
            def test_not_poisoned(self):
                self.assertNotIn("POISONED", os.environ)

            def test_broken(self):
                self.fail("main is broken: its build must say so")
        """)}
    repo.commit({**volt, **tests, "setup_step.py": "pass\n"}, "main, with a failing test")
    first = runner.build(repo)
    assert first["status"] == "failed", first["reason"]
    repo.checkout("evil", create=True)
    poison = ("import os, site\n"
              "path = os.path.join(site.getsitepackages()[0], 'zz_evil.pth')\n"
              "open(path, 'w').write('import os; os.environ[\"POISONED\"] = \"1\"\\n')\n")
    repo.commit({"setup_step.py": poison, "tests/test_main.py": textwrap.dedent("""\
        import os, site, unittest

        class T(unittest.TestCase):
            def test_environment_is_read_only_to_tests(self):
                with self.assertRaises(OSError):
                    open(os.path.join(site.getsitepackages()[0], "zz_tests.pth"), "w")

            def test_poisoned_here(self):
                self.assertEqual(os.environ.get("POISONED"), "1")
        """)}, "poisons the environment")
    evil = runner.build(repo, "evil")
    assert evil["status"] == "passed", (evil["reason"], evil["log"][-3000:])
    assert "seen through a layer of this scope's own" in evil["log"], evil["log"][-3000:]
    repo.checkout("main")
    repo.commit({"README": "next\n"}, "main again")
    second = runner.build(repo)
    assert second["status"] == "failed", second["reason"]
    outcomes = {t["id"].rsplit(".", 1)[-1]: t["outcome"] for t in second["tests"]}
    assert outcomes == {"test_not_poisoned": "passed", "test_broken": "failed"}, second["tests"]
    envs = host_dir(runner.settings.workspace_dir) / "envs" / repo.path.name
    protected = [path for path in envs.glob("*/lib/python*/site-packages") if "scopes" not in path.parts]
    assert protected and not [p for p in protected if (p / "zz_evil.pth").exists() or (p / "zz_tests.pth").exists()]


# ---------------------------------------------------------------- the host's own services

def test_tests_reach_none_of_the_hosts_own_services(runner: Runner, tmp_path: Path) -> None:
    """A Redis without a password on the host's loopback (as the README allows) and every address of the
    host: unreachable from a build that has the network; the Redis holds nothing afterwards."""
    port = free_port()
    server = subprocess.Popen([find_redis_server(), "--port", str(port), "--bind", "0.0.0.0", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path), "--protected-mode", "no"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    client = redis.Redis(port=port)
    try:
        wait_until(lambda: client.ping(), "the open redis-server", timeout=15)
        addresses = ["127.0.0.1", "10.0.2.2", *[a for a in host_addresses() if ":" not in a]]
        repo = runner.repo()
        repo.commit({"tests/__init__.py": "", "tests/test_reach.py": textwrap.dedent(f"""\
            import socket, unittest

            class T(unittest.TestCase):
                def test_host_services_are_closed(self):
                    for host in {addresses!r}:
                        try:
                            with socket.create_connection((host, {port}), timeout=5) as sock:
                                sock.sendall(b"SET volt-escaped yes\\r\\n")
                                sock.recv(100)
                            reached = True
                        except OSError:
                            reached = False
                        self.assertFalse(reached, host)
            """)}, "looks for the host's services")
        report = runner.build(repo)
        assert report["status"] == "passed", (report["reason"], report["log"][-2000:])
        assert client.exists("volt-escaped") == 0
    finally:
        client.close()
        server.kill()
        server.wait(timeout=10)
    assert alive(runner.proc.pid)


def test_what_a_setup_step_writes_in_its_environment_opens_nothing_of_the_host(runner: Runner) -> None:
    """The runner once read the environment's pyvenv.cfg to find what the interpreter needs, and showed its
    `home` to the next build: a setup step that points it at a host directory (the first build) must
    show that directory to no later build (the second puts the real home back first, so that its tests
    run, and looks)."""
    secret_dir = runner.base / "runner-secrets"
    (secret_dir / "bin").mkdir(parents=True)
    (secret_dir / "secret").write_text("host secret")
    cfg = '"$VIRTUAL_ENV/pyvenv.cfg"'
    restore = (f'if [ -f "$VIRTUAL_ENV/real-home" ]; then sed -i "s|^home = .*|$(cat "$VIRTUAL_ENV/real-home")|" '
               f'{cfg}; fi')
    point = (f'[ -f "$VIRTUAL_ENV/real-home" ] || {{ grep "^home" {cfg} > "$VIRTUAL_ENV/real-home"; '
             f'sed -i "s|^home = .*|home = {secret_dir}/bin|" {cfg}; }}')
    steps = f"[['sh', '-c', {json.dumps(restore)}], ['sh', '-c', {json.dumps(point)}]]"
    files = {".volt.toml": f"[tests]\nsetup = {steps}\n",
             "tests/__init__.py": "", "tests/test_look.py": textwrap.dedent(f"""\
                 import os, unittest

                 class T(unittest.TestCase):
                     def test_host_directory_is_not_shown(self):
                         self.assertFalse(os.path.exists({str(secret_dir / "secret")!r}))
                 """)}
    repo = runner.repo()
    repo.commit(files, "points its environment's home at a host directory")
    runner.build(repo)  # its own tests may not start: its interpreter's home is gone
    repo.commit({"README": "again\n"}, "the next build of the same environment")
    second = runner.build(repo)
    assert second["status"] == "passed", (second["reason"], second["log"][-3000:])
    assert [t["outcome"] for t in second["tests"]] == ["passed"]
