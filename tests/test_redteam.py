"""Attacks beyond test_boundary.py's, each a commit built by a real `volt worker` on a Redis that wants a
password, as someone with push access (or a pull request's author, on a branch of their own) would
try them, and each checked on the host afterwards.

Each attack is an ordinary test: what it tries must stay closed (a home line in the environment's
pyvenv.cfg, trees deeper than a stack, files made terabytes long by a hole, a commit built first on a
pull request's branch standing for a protected branch, a JUnit path that names .git, git on the host in a
tree the last build wrote, the network, daemons and signals, the build's own limits).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from support import ROOT, GitRepo, alive, child_env, wait_until

from voltci import keys
from voltci.config import Settings, as_environment, host_dir
from voltci.observer import RepoWatch
from voltci.redis_server import RedisServer
from voltci.runner.network import host_addresses
from voltci.store import Store

pytestmark = pytest.mark.e2e

PASSWORD = "redteam-Redis-secret"
BUILD_WAIT_S = 180
PASSING = {"tests/__init__.py": "", "tests/test_ok.py": "import unittest\n\nclass T(unittest.TestCase):\n"
                                                       "    def test_ok(self):\n        pass\n"}


class Runner:
    """One `volt worker` on a password-protected Redis; builds are queued by the observer's code, as
    `volt-observe` queues them (the pattern of test_boundary.py)."""

    def __init__(self, base: Path, server: RedisServer, **settings: object):
        self.base, self.server = base, server
        self.settings = Settings(redis_url=server.url, workspace_dir=str(base / "ws"), **{
            "build_timeout": 120, "retries": 1, **settings})  # type: ignore[arg-type]
        self.env = child_env(**as_environment(self.settings))
        self.log_path = base / "worker.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "voltci", "worker", "--name", base.name], cwd=ROOT,
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.conn = redis.Redis.from_url(server.url)
        self.store = Store(self.conn, self.settings)
        self.repos = 0
        wait_until(lambda: "network:" in self.log_path.read_text(errors="replace"), "the worker to say how it works",
                   timeout=60, process=self.proc)

    def repo(self) -> GitRepo:
        self.repos += 1
        return GitRepo(self.base / "repos" / f"{self.base.name}-r{self.repos}")  # one Redis, several runners

    def queue(self, repo: GitRepo, branch: str = "main") -> str:
        """Queue the head of `branch`; its build's id."""
        watch = RepoWatch(self.store, str(repo.path), name=repo.path.name, branches=[branch])
        watch.validate()
        return [build for build in watch.poll() if build.branch == branch][-1].id

    def build(self, repo: GitRepo, branch: str = "main", wait_s: float = BUILD_WAIT_S) -> dict:
        """Queue the head of `branch` and wait for its report (`volt report --json`, as a user reads it)."""
        build_id = self.queue(repo, branch)
        wait_until(lambda: self.ended(build_id), f"the build of {branch} to end", timeout=wait_s, process=self.proc)
        commit = self.store.records.get_build(build_id).commit
        shown = subprocess.run([sys.executable, "-m", "voltci", "report", commit, "--repo", repo.path.name,
                                "--json"], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60)
        report = json.loads(shown.stdout)
        log = subprocess.run([sys.executable, "-m", "voltci", "log", commit, "--repo", repo.path.name],
                             cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60)
        report["log"] = log.stdout
        return report

    def ended(self, build_id: str) -> bool:
        build = self.store.records.get_build(build_id)
        return build is not None and build.status.value not in ("queued", "running")

    def still_builds(self) -> dict:
        """The runner is alive and takes the next build: a plain passing one (its report)."""
        assert self.proc.poll() is None, self.log_path.read_text(errors="replace")[-3000:]
        repo = self.repo()
        repo.commit(PASSING, "an ordinary commit")
        return self.build(repo)

    def work_horses(self) -> list[int]:
        """The worker's children: rq's work-horse of the build under way."""
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == \
                        self.proc.pid:
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def stop(self) -> None:
        horses = self.work_horses()  # rq's work-horse is a session of its own: killpg does not reach it
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in horses:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)
        self.conn.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    started = RedisServer(tmp_path_factory.mktemp("redteam-redis"), password=PASSWORD).start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory, server: RedisServer) -> Iterator[Runner]:
    started = Runner(tmp_path_factory.mktemp("redteam"), server)
    yield started
    started.stop()


@pytest.fixture
def own_runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    """A runner of its own, on a Redis of its own (so that no other runner takes its builds), for an attack
    that may leave it stuck or poisoned."""
    base = tmp_path_factory.mktemp("redteam-own")
    server = RedisServer(base / "redis", password=PASSWORD).start()
    started = Runner(base, server, build_timeout=30)
    yield started
    started.stop()
    server.stop()


def _scratches(runner: Runner) -> list[Path]:
    builds = host_dir(runner.settings.workspace_dir) / "builds"
    return sorted(builds.iterdir()) if builds.is_dir() else []


def _remove_deep(path: Path) -> None:
    """rm -rf, which removes what shutil.rmtree cannot (a tree deeper than Python's recursion limit)."""
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False, timeout=120)


# ---------------------------------------------------------------- the environment's pyvenv.cfg, read on the host

def test_a_home_line_in_pyvenv_cfg_shows_no_host_directory_to_the_next_build(runner: Runner) -> None:
    """A pull request's branch (dependency files of its own, so no protected environment seeds it: the
    environment is the branch's, written by its setup steps) adds a second `home` line to pyvenv.cfg —
    Python reads the first, the runner every one. Its next build looks for a file of the runner's (mode
    600, as a config file holding redis_url) and for the host's /etc/shadow."""
    secret = runner.base / "runner-config.toml"
    secret.write_text(f'redis_url = "redis://:{PASSWORD}@localhost/0"\n')
    secret.chmod(0o600)
    step = ('grep -q "^home = /volt-redteam" "$VIRTUAL_ENV/pyvenv.cfg" || '
            'echo "home = /volt-redteam" >> "$VIRTUAL_ENV/pyvenv.cfg"')
    repo = runner.repo()
    repo.commit({**PASSING, "README": "main\n"}, "main")
    repo.checkout("pull-request", create=True)
    repo.commit({".volt.toml": f"[setup]\nnetwork = false\n[tests]\nnetwork = false\n"
                               f"setup = [['sh', '-c', {json.dumps(step)}]]\n",
                 "tests/test_look.py": textwrap.dedent(f"""\
                     import os, unittest

                     class T(unittest.TestCase):
                         def test_host_files_are_not_shown(self):
                             for path in ({str(secret)!r}, "/etc/shadow"):
                                 if os.path.exists(path):
                                     print("LEAKED", path, open(path).read()[:80])
                                 self.assertFalse(os.path.exists(path), path)
                     """)}, "a second home line")
    first = runner.build(repo, "pull-request")
    assert first["status"] == "passed", (first["reason"], first["log"][-3000:])
    repo.commit({"README": "again\n"}, "the next build of the same environment")
    second = runner.build(repo, "pull-request")
    assert second["status"] == "passed", (second["reason"], second["log"][-3000:])
    assert PASSWORD not in second["log"]


# ---------------------------------------------------------------- what the runner removes on the host

DEEP = 1500  # directories, one in another: deeper than Python's recursion limit (1000)
MAKE_DEEP = textwrap.dedent(f"""\
    import os

    def make_deep(where):
        fd = os.open(where, os.O_RDONLY)
        for _ in range({DEEP}):
            os.mkdir("d", dir_fd=fd)
            below = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = below
        os.close(fd)
    """)


def test_a_deep_tree_in_tmp_is_removed_and_costs_no_later_build(own_runner: Runner) -> None:
    repo = own_runner.repo()
    repo.commit({"tests/__init__.py": "", "tests/test_deep.py": MAKE_DEEP + textwrap.dedent("""\
        import unittest

        class T(unittest.TestCase):
            def test_leaves_a_deep_tree(self):
                make_deep("/tmp")
        """)}, "leaves a deep tree in its /tmp")
    report = own_runner.build(repo)
    left = _scratches(own_runner)
    try:
        for path in left:  # as if the stale limit (2 x build_timeout + 600 s) had passed
            os.utime(path, (time.time() - 86400, time.time() - 86400))
        after = own_runner.still_builds()
    finally:
        for path in left:
            _remove_deep(path)
    assert (left, after["status"]) == ([], "passed"), \
        f"left on the host: {left}; the next build: {after['reason']}; this one: {report['reason']}"


def test_a_deep_tree_left_by_a_branch_costs_no_build_of_main(own_runner: Runner) -> None:
    repo = own_runner.repo()
    repo.commit(PASSING, "main")
    before = own_runner.build(repo)
    assert before["status"] == "passed", before["reason"]
    repo.checkout("pull-request", create=True)
    repo.commit({"tests/test_deep.py": MAKE_DEEP + textwrap.dedent("""\
        import unittest

        class T(unittest.TestCase):
            def test_leaves_a_deep_tree(self):
                make_deep(".")
        """)}, "leaves a deep tree in its worktree")
    report = own_runner.build(repo, "pull-request")
    # Deeper than the disk count goes: the build ends error, and what it wrote is removed at once.
    assert report["status"] == "error" and "levels deep" in report["reason"], report["reason"]
    scopes = list((host_dir(own_runner.settings.workspace_dir) / "pool").glob("*/scopes/*"))
    try:
        for path in scopes:  # as if nobody had built the branch for four days
            os.utime(path, (time.time() - 4 * 86400, time.time() - 4 * 86400))
        repo.checkout("main")
        repo.commit({"README": "next\n"}, "main again")
        after = own_runner.build(repo)
    finally:
        for path in scopes:
            _remove_deep(path)
    assert after["status"] == "passed", after["reason"]


# ---------------------------------------------------------------- git on the host, in a tree the last build wrote

def test_git_on_the_host_writes_and_removes_nothing_through_links_the_last_build_left(runner: Runner) -> None:
    """A build turns a tracked directory and a tracked file into links to host paths, and leaves a nested
    repository whose config would run a program (core.fsmonitor) if git on the host read it; the next
    build's checkout changes those files and cleans the tree."""
    victim_dir = runner.base / "victim-dir"
    victim_dir.mkdir()
    (victim_dir / "data.txt").write_text("host data\n")
    (victim_dir / "keep.txt").write_text("host file\n")
    victim_file = runner.base / "victim-file"
    victim_file.write_text("host file\n")
    marker = runner.base / "fsmonitor-ran"
    repo = runner.repo()
    setup = textwrap.dedent(f"""\
        import os, shutil
        shutil.rmtree("pkg")
        os.symlink({str(victim_dir)!r}, "pkg")
        os.remove("top.txt")
        os.symlink({str(victim_file)!r}, "top.txt")
        os.makedirs("nested/.git", exist_ok=True)
        open("nested/.git/config", "w").write("[core]\\n\\tfsmonitor = touch {marker}\\n")
        open("nested/.git/HEAD", "w").write("ref: refs/heads/main\\n")
        os.makedirs("nested/.git/objects", exist_ok=True)
        os.makedirs("nested/.git/refs", exist_ok=True)
        """)
    repo.commit({**PASSING, "pkg/data.txt": "v1\n", "pkg/other.txt": "v1\n", "top.txt": "v1\n",
                 "attack.py": setup, ".volt.toml": "[tests]\nsetup = [['python', 'attack.py']]\n"},
                "turns tracked paths into links")
    first = runner.build(repo)
    assert first["status"] == "passed", (first["reason"], first["log"][-3000:])
    repo.commit({"pkg/data.txt": "v2\n", "pkg/other.txt": None, "top.txt": "v2\n",
                 ".volt.toml": "[tests]\n", "attack.py": None}, "changes them")
    second = runner.build(repo)
    assert second["status"] == "passed", (second["reason"], second["log"][-3000:])
    assert (victim_dir / "data.txt").read_text() == "host data\n"
    assert (victim_dir / "keep.txt").read_text() == "host file\n"
    assert victim_file.read_text() == "host file\n"
    assert not marker.exists()


# ---------------------------------------------------------------- the network, beyond TCP to the host's addresses

def test_no_way_of_the_network_reaches_the_host(runner: Runner) -> None:
    """UDP and TCP to a service on every address of the host (loopback, the stack's gateway and DNS
    forwarder on another port, the limited broadcast), a nested user namespace that tries to flush the
    firewall first: nothing arrives."""
    heard: list[bytes] = []
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", 0))
    port = udp.getsockname()[1]
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("0.0.0.0", port))
    tcp.listen(8)
    udp.settimeout(0.2)
    tcp.settimeout(0.2)
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            try:
                heard.append(udp.recv(100))
            except OSError:
                pass
            try:
                conn, _ = tcp.accept()
                heard.append(b"tcp")
                conn.close()
            except OSError:
                pass

    listener = threading.Thread(target=listen)
    listener.start()
    addresses = ["127.0.0.1", "127.0.0.53", "10.0.2.2", "10.0.2.3", "10.0.2.255", "255.255.255.255",
                 *[a for a in host_addresses() if ":" not in a]]
    repo = runner.repo()
    repo.commit({"tests/__init__.py": "", "tests/test_reach.py": textwrap.dedent(f"""\
        import socket, subprocess, unittest

        class T(unittest.TestCase):
            def test_nothing_arrives(self):
                for mapping in (["--map-root-user"], []):  # root mapped, or nobody with every cap
                    flushed = subprocess.run(["unshare", "--user", *mapping, "nft", "flush", "ruleset"],
                                             capture_output=True, text=True)
                    print("flush:", mapping, flushed.returncode, flushed.stderr.strip())
                for host in {addresses!r}:
                    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                    try:
                        sock.sendto(b"udp " + host.encode(), (host, {port}))
                    except OSError as exc:
                        print("udp", host, exc)
                    sock.close()
                    try:
                        socket.create_connection((host, {port}), timeout=3).close()
                        print("tcp reached", host)
                    except OSError as exc:
                        print("tcp", host, exc)
        """)}, "looks for the host over UDP and TCP")
    try:
        report = runner.build(repo)
        time.sleep(1)
    finally:
        stop.set()
        listener.join()
        udp.close()
        tcp.close()
    assert report["status"] == "passed", (report["reason"], report["log"][-3000:])
    assert heard == [], heard
    assert alive(runner.proc.pid)


# ---------------------------------------------------------------- build files at sizes that cost no disk

SPARSE = textwrap.dedent("""\
    import os

    def sparse(fd_or_path, sizes):
        \"\"\"Make the file as large as the file system allows of `sizes`: a hole, which costs no disk.\"\"\"
        for size in sizes:
            try:
                os.truncate(fd_or_path, size)
                return size
            except OSError:
                continue
        return 0
    """)


def test_an_output_file_made_huge_by_a_hole_does_not_hold_the_runner(own_runner: Runner) -> None:
    repo = own_runner.repo()
    repo.commit({"tests/__init__.py": "", "tests/test_hole.py": SPARSE + textwrap.dedent("""\
        import sys, unittest

        class T(unittest.TestCase):
            def test_makes_its_output_huge(self):
                sys.stdout.flush()
                print("output made", sparse(1, [(1 << 44) - (1 << 20), 1 << 40, 1 << 36]), "bytes long", flush=True)
        """)}, "a hole in its output")
    build_id = own_runner.queue(repo)
    deadline = time.monotonic() + 2 * own_runner.settings.build_timeout + 30  # far more than the build takes
    while time.monotonic() < deadline and not own_runner.ended(build_id):
        time.sleep(0.5)
    ended = own_runner.ended(build_id)
    busy = own_runner.work_horses()
    assert ended, f"the build did not end; the runner's work-horse {busy} is still reading its output"
    assert alive(own_runner.proc.pid)


def test_a_results_file_made_huge_by_a_hole_costs_the_runner_no_memory(runner: Runner) -> None:
    repo = runner.repo()
    repo.commit({"tests/__init__.py": "", "tests/test_hole.py": SPARSE + textwrap.dedent("""\
        import os, time, unittest

        class T(unittest.TestCase):
            def test_makes_the_results_huge(self):
                argv = open("/proc/self/cmdline", "rb").read().split(b"\\0")
                results = [a.decode() for a in argv if a.endswith(b"results.jsonl")][0]
                print("results made", sparse(results, [300 << 20]), "bytes long", flush=True)
                time.sleep(3)  # the runner counts the lines once a second
        """)}, "a hole in its results")
    peak: dict[int, int] = {}
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.05):
            for pid in runner.work_horses():
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        peak[pid] = max(peak.get(pid, 0), int(line.split()[1]) * 1024)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        report = runner.build(repo)
    finally:
        stop.set()
        watcher.join()
    assert peak, "the work-horse was seen"
    assert max(peak.values()) < 256 << 20, f"the runner's work-horse peaked at {max(peak.values()) >> 20} MiB " \
                                           f"({report['status']}: {report['reason']})"
    assert runner.still_builds()["status"] == "passed"


# ---------------------------------------------------------------- one commit on two branches

def test_a_protected_branch_never_shows_a_result_made_in_a_branchs_scope(runner: Runner) -> None:
    """A pull request's first commit has a setup script that writes a .pth into the branch's environment
    (which its tests, as written, need); its second commit makes the script harmless, so the pull
    request's whole diff shows no setup step doing anything. Merged by fast-forward (GitLab's method,
    `git merge --ff-only`), main's head is that second commit: a build of it in main's scope fails."""
    repo = runner.repo()
    watch = RepoWatch(runner.store, str(repo.path), name=repo.path.name, branches=["*"])
    tests = {"tests/__init__.py": "", "tests/test_main.py": textwrap.dedent("""\
        import os, unittest

        class T(unittest.TestCase):
            def test_needs_what_only_the_branch_has(self):
                self.assertEqual(os.environ.get("POISONED"), "1")
        """)}
    volt = {".volt.toml": "[tests]\nsetup = [['python', 'ci/setup.py']]\n"}
    repo.commit({**PASSING, **volt, "ci/setup.py": "pass\n"}, "main")
    watch.validate()

    def build_of(branch: str) -> str:
        queued = [build for build in watch.poll() if build.branch == branch]
        build_id = queued[-1].id if queued else ""
        if build_id:
            wait_until(lambda: runner.ended(build_id), f"the build of {branch}", timeout=BUILD_WAIT_S,
                       process=runner.proc)
        return build_id

    build_of("main")
    repo.checkout("pull-request", create=True)
    poison = ("import os, site\n"
              "open(os.path.join(site.getsitepackages()[0], 'zz.pth'), 'w')"
              ".write('import os; os.environ[\"POISONED\"] = \"1\"\\n')\n")
    repo.commit({**tests, "ci/setup.py": poison}, "tests, and a setup script")
    build_of("pull-request")
    head = repo.commit({"ci/setup.py": "pass\n"}, "the setup script does nothing after all")
    pr_build = build_of("pull-request")
    assert runner.store.records.get_build(pr_build).status.value == "passed"
    repo.checkout("main")
    repo.git("merge", "--ff-only", "--quiet", "pull-request")
    build_of("main")  # the observer sees main move to the pull request's head, and builds it again there
    build_id = keys.build_id(repo.path.name, head)
    wait_until(lambda: runner.ended(build_id) and runner.store.records.get_build(build_id).scope == "protected",
               "main's head built in the protected scope", timeout=BUILD_WAIT_S, process=runner.proc)
    shown = subprocess.run([sys.executable, "-m", "voltci", "report", head, "--repo", repo.path.name, "--json"],
                           cwd=ROOT, env=runner.env, capture_output=True, text=True, timeout=60)
    report = json.loads(shown.stdout)
    log = subprocess.run([sys.executable, "-m", "voltci", "log", head, "--repo", repo.path.name], cwd=ROOT,
                         env=runner.env, capture_output=True, text=True, timeout=60).stdout
    assert report["status"] == "failed", f"main's head {head[:10]} shows {report['status']}:\n{log[-3000:]}"


# ---------------------------------------------------------------- the worktree's .git link

PLANT_GIT = textwrap.dedent("""\
    import os, stat, sys

    marker = sys.argv[1]
    # The mirror the tree's .git named is shown read-only: find it among the mounts.
    mirror = next(line.split()[4] for line in open("/proc/self/mountinfo")
                  if os.path.isdir(os.path.join(line.split()[4], "objects", "pack")))
    print("the runner's .git is gone:", not os.path.exists(".git"), "; the mirror:", mirror)
    os.makedirs("evil-git/objects/info", exist_ok=True)
    os.makedirs("evil-git/refs/heads", exist_ok=True)
    os.makedirs("evil-git/hooks", exist_ok=True)
    open("evil-git/objects/info/alternates", "w").write(os.path.join(mirror, "objects") + "\\n")
    open("evil-git/HEAD", "w").write("ref: refs/heads/none\\n")
    open("evil-git/config", "w").write("[core]\\n\\trepositoryformatversion = 0\\n\\tbare = false\\n")
    hook = "evil-git/hooks/post-checkout"
    open(hook, "w").write("#!/bin/sh\\necho \\"ran on the host as $(id -u): $VOLT_REDIS_URL\\" > " + marker + "\\n")
    os.chmod(hook, 0o755)
    open(".git", "w").write("gitdir: evil-git\\n")
    """)


def test_a_junit_path_naming_the_git_link_gives_the_build_no_git_of_its_own(runner: Runner) -> None:
    marker = runner.base / "git-hook-ran"
    repo = runner.repo()
    repo.commit(PASSING, "main")
    repo.checkout("pull-request", create=True)
    repo.commit({"plant.py": PLANT_GIT, ".volt.toml": textwrap.dedent(f"""\
        [tests]
        command = ["python", "plant.py", {str(marker)!r}]
        junit = ".git"
        """)}, "a junit path that names the worktree's .git")
    first = runner.build(repo, "pull-request")
    repo.commit({"README": "next\n"}, "the next build of the branch")
    second = runner.build(repo, "pull-request")
    ran = marker.read_text() if marker.exists() else ""
    assert not ran, f"{ran.strip()} (the first build: {first['reason']}; the second: {second['reason']})"
    assert PASSWORD not in ran


# ---------------------------------------------------------------- processes that outlive their build

def test_no_process_of_a_build_outlives_it_and_none_signals_the_runner(runner: Runner) -> None:
    """Daemons (double fork, a new session, a nested user and PID namespace), then a kill of every process
    the build can signal: nothing of it is left on the host once the build has ended, and the runner
    takes the next build."""
    tag = f"volt-redteam-daemon-{os.getpid()}-{time.time_ns()}"
    repo = runner.repo()
    repo.commit({"tests/__init__.py": "", "tests/test_daemons.py": textwrap.dedent(f"""\
        import os, signal, subprocess, time, unittest

        class T(unittest.TestCase):
            def test_leaves_daemons_and_kills_everything(self):
                subprocess.Popen(["setsid", "sh", "-c", "(sleep 600; : {tag}) & exit 0"])
                subprocess.Popen(["unshare", "--user", "--pid", "--fork",
                                  "sh", "-c", "sleep 600; : {tag}"])
                if os.fork() == 0:
                    os.setsid()
                    if os.fork() == 0:
                        os.execvp("sh", ["sh", "-c", "sleep 600; : {tag}"])
                    os._exit(0)
                for _ in range(600):
                    running = []
                    for pid in filter(str.isdigit, os.listdir("/proc")):
                        try:
                            if b"{tag}" in open(f"/proc/{{pid}}/cmdline", "rb").read():
                                running.append(pid)
                        except OSError:
                            pass
                    if len(running) >= 3:
                        break
                    time.sleep(0.05)
                self.assertGreaterEqual(len(running), 3)
                os.kill(-1, signal.SIGKILL)
        """)}, "leaves daemons behind")
    report = runner.build(repo)
    assert report["status"] == "passed", (report["reason"], report["log"][-2000:])  # kill(-1) spares its caller
    survivors = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and tag.encode() in (entry / "cmdline").read_bytes():
                survivors.append(entry.name)
        except OSError:
            continue
    assert survivors == []
    assert runner.still_builds()["status"] == "passed"


# ---------------------------------------------------------------- the build's limits, from inside

LIFT_LIMITS = textwrap.dedent("""\
    set -u
    mkdir -p /tmp/cg
    for controller in memory pids; do
        dir=/tmp/cg/$controller; mkdir -p "$dir"
        if mount -t cgroup -o "$controller" none "$dir" 2>/dev/null; then
            for file in memory.limit_in_bytes pids.max; do
                [ -f "$dir/$file" ] || continue
                before=$(cat "$dir/$file")
                if echo max > "$dir/$file" 2>/dev/null || echo -1 > "$dir/$file" 2>/dev/null; then
                    echo "LIFTED $file: $before -> $(cat "$dir/$file")"
                fi
            done
        elif mount -t cgroup2 none "$dir" 2>/dev/null; then
            for file in memory.max pids.max; do
                before=$(cat "$dir/$file" 2>/dev/null) || continue
                if echo max > "$dir/$file" 2>/dev/null; then
                    echo "LIFTED $file: $before -> $(cat "$dir/$file")"
                fi
            done
        fi
    done
    """)


def test_a_build_cannot_lift_its_own_memory_and_process_limits(runner: Runner) -> None:
    """A nested user and cgroup namespace mounts the step's own cgroup and writes its limits. Closed here
    because the runner is root: mapping the parent's uid 0 into a nested user namespace needs CAP_SETFCAP
    (Linux 5.12), and without a mapping the cgroup files' owner is nobody there. A runner of another uid
    (whose steps' cgroup files that uid owns) would have its builds map it and write them: this test is
    the check to run on such a host."""
    repo = runner.repo()
    repo.commit({".volt.toml": "[tests]\nmemory = \"512M\"\nprocesses = 256\n", "lift.sh": LIFT_LIMITS,
                 "tests/__init__.py": "", "tests/test_limits.py": textwrap.dedent("""\
                     import subprocess, unittest

                     class T(unittest.TestCase):
                         def test_limits_hold(self):
                             for mapping in (["--map-root-user"], []):  # root mapped, or nobody with every cap
                                 done = subprocess.run(["unshare", "--user", *mapping, "--cgroup", "--mount",
                                                        "sh", "lift.sh"], capture_output=True, text=True)
                                 print(mapping, done.returncode, done.stdout, done.stderr)
                                 self.assertNotIn("LIFTED", done.stdout)
                     """)}, "lifts its own limits")
    report = runner.build(repo)
    assert report["status"] == "passed", report["log"][-2000:]
