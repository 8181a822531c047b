"""`volt up`: embedded Redis, runners and observer on one machine; results printed as they land;
Ctrl-C (or the end of a --burst run) stops everything it started."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import pytest
import redis
from sample_project import FAILING, PASSING
from support import Events, QuietPool, assert_one_line_error, child_env, run_volt, wait_until

from voltci import keys
from voltci.redis_server import free_port
from voltci.runner.procs import descendants, kill_all, processes_with_env

pytestmark = pytest.mark.e2e  # every test here starts processes: builds, volt, redis-server

STARTUP_TIMEOUT_S = 120


def test_up_burst_builds_the_example_repository(tmp_path) -> None:
    proc = run_volt("up", "--burst", "--workers", "1", env={"VOLT_WORKSPACE_DIR": str(tmp_path / "ws")},
                    timeout=STARTUP_TIMEOUT_S, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "embedded redis-server" in proc.stdout
    assert "example repository" in proc.stdout
    assert "builds are sandboxed by bubblewrap" in proc.stdout
    finished = [line for line in proc.stdout.splitlines() if line.startswith("failed ")]
    assert finished and "3/5 passed" in finished[0], proc.stdout
    # The red build is the example's doing, and says so: before it, and on its own line.
    assert "its first build fails on purpose" in proc.stdout and "fails on purpose" in finished[0]


def test_up_with_a_given_redis_prints_each_result_and_stops_on_ctrl_c(make_repo, redis_url, conn,
                                                                     tmp_path) -> None:
    repo = make_repo()
    repo.commit(PASSING, "passing")
    hanging = {"tests/test_hang.py": (
        "import subprocess, time, unittest\n\nclass T(unittest.TestCase):\n    def test_hang(self):\n"
        "        subprocess.Popen(['sleep', '600'])\n"
        "        time.sleep(600)\n")}
    proc = start_up(tmp_path, "--repo", str(repo.path), "--workers", "2", "--poll", "0.3", "--redis-url", redis_url)
    try:
        lines = read_until(proc, "passed ")
        failing = repo.commit(FAILING, "broken")
        lines += read_until(proc, f"failed    proj {failing[:10]}")
        repo.commit(hanging, "hangs")
        # The hanging test's own child, seen from the host: below `volt up`, inside a build's sandbox.
        wait_until(lambda: sleeping_grandchild(proc), "the hanging test to start its child", STARTUP_TIMEOUT_S)
        family = psutil.Process(proc.pid).children(recursive=True)
        runners = [p for p in psutil.Process(proc.pid).children() if "worker" in " ".join(p.cmdline())]
        assert len(runners) == 2
        assert sleeping_grandchild(proc) in family
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        kill_if_running(proc)
    assert proc.returncode == 0, proc.stderr.read()[-3000:]
    assert_all_gone(family)


def start_up(tmp_path, *args: str) -> subprocess.Popen:
    """`volt up ARGS` in a session of its own, its output readable line by line."""
    return subprocess.Popen([sys.executable, "-m", "voltci", "up", *args],
                            env=child_env(VOLT_WORKSPACE_DIR=str(tmp_path / "ws")), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def kill_if_running(proc: subprocess.Popen) -> None:
    """When a test failed half-way: leave nothing of `volt up` behind, runners' sessions included."""
    if proc.poll() is None:
        leftovers = descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        kill_all(leftovers)
        proc.wait()


def sleeping_grandchild(proc: subprocess.Popen) -> psutil.Process | None:
    for process in psutil.Process(proc.pid).children(recursive=True):
        try:
            if process.cmdline() == ["sleep", "600"]:
                return process
        except psutil.NoSuchProcess:
            continue
    return None


def assert_all_gone(family: list[psutil.Process]) -> None:
    time.sleep(0.2)
    assert [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []


def read_until(proc: subprocess.Popen, fragment: str, timeout: float = STARTUP_TIMEOUT_S) -> list[str]:
    """Lines of `proc`'s stdout up to the first containing `fragment` (bounded by `timeout`)."""
    deadline = time.monotonic() + timeout
    seen = []
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
            continue
        seen.append(line)
        if fragment in line:
            return seen
    raise AssertionError(f"no line with {fragment!r} in {timeout} s; got {seen!r}; "
                         f"stderr: {proc.stderr.read() if proc.poll() is not None else ''}")


def test_up_with_a_bad_repository_exits_2_and_leaves_nothing_running(tmp_path) -> None:
    workspace = str(tmp_path / "ws")
    proc = run_volt("up", "--repo", str(tmp_path / "absent"), env={"VOLT_WORKSPACE_DIR": workspace}, cwd=tmp_path)
    assert proc.returncode == 2 and "not a git repository" in proc.stderr and "Traceback" not in proc.stderr
    # Whatever this `volt up` started carries its environment: none of it may be left (other tests of the
    # machine may start redis-servers of their own meanwhile).
    assert [pid for pid, value in processes_with_env("VOLT_WORKSPACE_DIR").items() if value == workspace] == []


def test_up_stopped_by_sigterm_stops_its_runners_and_embedded_redis(tmp_path) -> None:
    proc = start_up(tmp_path, "--workers", "1")
    family = []
    try:
        read_until(proc, "3/5 passed")
        family = psutil.Process(proc.pid).children(recursive=True)
        assert any(p.name() == "redis-server" for p in family)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        kill_if_running(proc)
    assert proc.returncode == 0
    assert_all_gone(family)


def test_up_with_web_serves_the_page_while_it_runs(make_repo, redis_url, tmp_path) -> None:
    repo = make_repo()
    repo.commit({**PASSING, "tests/test_slow.py": "import time, unittest\n\nclass S(unittest.TestCase):\n"
                 "    def test_slow(self):\n        time.sleep(2)\n"}, "slow")
    port = free_port()
    proc = start_up(tmp_path, "--repo", str(repo.path), "--workers", "1", "--burst", "--web", "--web-port", str(port),
                    "--redis-url", redis_url)
    try:
        (line,) = [line for line in read_until(proc, "Web:") if line.startswith("Web:")]
        assert f"http://127.0.0.1:{port}/" in line
        read_until(proc, "queued ")
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/repo/proj", timeout=10).read().decode()
        assert "proj" in page and "slow" in page
        read_until(proc, "passed ")
        proc.wait(timeout=60)
    finally:
        kill_if_running(proc)
    assert proc.returncode == 0, proc.stderr.read()[-3000:]


def command_line(pid: int) -> bytes:
    """/proc/PID/cmdline, or nothing for a process that has ended meanwhile (a build step's)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return b""


def test_up_embedded_redis_wants_a_password_that_no_command_line_or_output_shows(tmp_path) -> None:
    proc = start_up(tmp_path, "--workers", "1")
    seen: list[str] = []
    try:
        seen += read_until(proc, "3/5 passed")
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        [server] = [p for p in family if p.name() == "redis-server"]
        [runner] = [p for p in psutil.Process(proc.pid).children() if "worker" in " ".join(p.cmdline())]
        url = runner.environ()["VOLT_REDIS_URL"]  # runners get the URL in their environment
        parts = urllib.parse.urlsplit(url)
        password = urllib.parse.unquote(parts.password or "")
        assert len(password) >= 32, "the embedded Redis has no generated password"

        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=parts.port, socket_timeout=5).ping()
        assert redis.Redis.from_url(url, socket_timeout=5).ping()

        assert {server.pid, runner.pid} <= {member.pid for member in family}
        for member in family:
            assert password.encode() not in command_line(member.pid), member
        listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
        assert parts.password not in listing and password not in listing
        config = Path(server.cwd()) / "redis.conf"  # redis-server works in its data directory
        assert stat.S_IMODE(config.stat().st_mode) == 0o600 and password in config.read_text()
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        kill_if_running(proc)
    output = "".join(seen) + proc.stdout.read() + proc.stderr.read()
    assert f"redis://:***@127.0.0.1:{parts.port}/0" in output
    assert parts.password not in output and password not in output
    for log in (tmp_path / "ws" / "logs").glob("*.log"):
        assert password not in log.read_text(errors="replace"), log


def test_up_burst_prints_a_build_whose_end_came_between_two_waits_once(fake) -> None:
    """A build may end just as `volt up` stops waiting for the message of an end: it is printed all
    the same (once, even if its message comes later), and --burst then exits 0."""
    import io

    from voltci import up
    from voltci.live import LiveView
    from voltci.models import Build, Counts, RunOutcome, Status
    from voltci.store import Store

    store = Store(fake)
    build = Build(id="proj-" + "a" * 40, repo="proj", url="/r", commit="a" * 40, branch="main")
    store.builds.add(build, 1)
    store.builds.start_attempt(build.id, 1, "r1")
    assert store.builds.finish(build.id, 1, "r1", RunOutcome(Status.PASSED, [], Counts()))
    late = [None, ("message", {"build": build.id})]

    out = io.StringIO()
    view = LiveView(store, out, interactive=False)
    assert up._until_finished(store, Events(late), QuietPool(), view, {build.id}, 10) == 0  # type: ignore[arg-type]
    assert up._next_finished(store, Events(late), QuietPool(), view, {build.id}) == build.id  # type: ignore[arg-type]
    assert out.getvalue().count("passed") == 1 and build.commit[:10] in out.getvalue()


@pytest.mark.parametrize("kept", [False, True], ids=["temporary", "redis-dir"])
def test_another_terminal_reaches_the_embedded_redis_with_the_line_volt_up_prints(tmp_path, kept) -> None:
    """The line is pasted as printed into a shell that knows no Redis but a dead one; `volt status`
    there then reads this `volt up`'s Redis. The file it sources is this user's alone, the password
    appears in no output, and the file goes when `volt up` stops. With --redis-dir, a `volt.env`
    planted there beforehand as a link to another file is replaced, never written through."""
    volt = Path(sys.executable).parent / "volt"
    assert volt.is_file(), f"no volt command beside {sys.executable}: install the checkout with pip install -e ."
    victim = tmp_path / "victim.txt"
    victim.write_text("not a password\n")
    victim.chmod(0o644)
    args = ["--workers", "1"]
    if kept:
        (tmp_path / "redis").mkdir()
        (tmp_path / "redis" / "volt.env").symlink_to(victim)
        args += ["--redis-dir", str(tmp_path / "redis")]
    proc = start_up(tmp_path, *args)
    seen: list[str] = []
    try:
        seen += read_until(proc, "source ")
        (redis_line,) = [line for line in seen if line.startswith("Redis:")]
        pasted = seen[-1]
        env_file = Path(pasted.split("source ", 1)[1].strip())
        assert not env_file.is_symlink() and env_file.stat().st_uid == os.getuid()
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        if not kept:
            assert stat.S_IMODE(env_file.parent.stat().st_mode) & 0o077 == 0  # in a directory of its own
        shell = subprocess.run(["bash", "--norc", "--noprofile"], input=pasted + "volt status --json\n",
                               env=child_env(PATH=f"{volt.parent}:{os.environ['PATH']}",
                                             VOLT_REDIS_URL="redis://127.0.0.1:1/0"),
                               cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert shell.returncode == 0, shell.stderr
        assert json.loads(shell.stdout)["redis"] in redis_line  # the same Redis (its password hidden)
        (export,) = [line for line in env_file.read_text().splitlines() if line.startswith("export VOLT_REDIS_URL=")]
        url = shlex.split(export.split("=", 1)[1])[0]
        password = urllib.parse.unquote(urllib.parse.urlsplit(url).password or "")
        assert len(password) >= 32
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        kill_if_running(proc)
    assert proc.returncode == 0
    output = "".join(seen) + proc.stdout.read() + proc.stderr.read()
    assert password not in output and password not in shell.stdout + shell.stderr
    assert not env_file.exists()
    assert victim.read_text() == "not a password\n" and stat.S_IMODE(victim.stat().st_mode) == 0o644


def test_up_refuses_bad_input_in_one_line_before_it_starts_anything(make_repo, tmp_path) -> None:
    """Each of these is one line and exit status 2, with no Redis started (nothing said of one, no data
    directory made) and no process left."""
    good = make_repo()
    good.commit(PASSING, "passing")
    plain = tmp_path / "plain"
    plain.mkdir()
    empty = tmp_path / "empty"
    subprocess.run(["git", "init", "--quiet", str(empty)], check=True)
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    cases = [
        (["--repo", str(tmp_path / "absent")], {}, "does not exist"),
        (["--repo", str(plain)], {}, "not a git repository"),
        (["--repo", str(empty)], {}, "has no default branch with commits"),
        (["--repo", str(good.path), "--branch", "nosuch"], {}, "unknown branch 'nosuch'"),
        (["--branch", "nosuch"], {}, "unknown branch 'nosuch'"),  # the example repository's
        (["--repo", str(good.path), "--burst", "--timeout", "0"], {}, "--timeout must be a positive"),
        (["--repo", str(good.path), "--burst", "--timeout", "nan"], {}, "--timeout must be a positive"),
        (["--repo", str(good.path), "--redis-dir", str(a_file / "redis")], {}, "--redis-dir"),
        (["--repo", str(good.path), "--redis-dir", str(tmp_path / "rd")], {"VOLT_REDIS_URL": "redis://127.0.0.1:1/0"},
         "give one or the other"),
        (["--repo", str(good.path), "--web", "--web-port", str(busy.getsockname()[1])], {}, "cannot listen"),
        (["--repo", str(good.path)], {"VOLT_WORKSPACE_DIR": str(a_file / "ws")}, "workspace directory"),
    ]
    try:
        for n, (args, env, fragment) in enumerate(cases):
            temporary, workspace = tmp_path / f"tmp{n}", str(tmp_path / f"ws{n}")
            temporary.mkdir()
            proc = run_up_refused(args, {"VOLT_WORKSPACE_DIR": workspace, "TMPDIR": str(temporary), **env}, tmp_path)
            assert_one_line_error(proc, fragment)
            assert "Redis:" not in proc.stdout and "Runners:" not in proc.stdout, (args, proc.stdout)
            assert list(temporary.iterdir()) == [], args  # no data directory of an embedded Redis
            assert [pid for pid, value in processes_with_env("VOLT_WORKSPACE_DIR").items() if value == workspace] == []
    finally:
        busy.close()


def run_up_refused(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """`volt up ARGS`, expected to refuse at once: one that runs instead is stopped with all it started."""
    proc = subprocess.Popen([sys.executable, "-m", "voltci", "up", *args], env=child_env(**env), cwd=cwd,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        kill_if_running(proc)
        raise AssertionError(f"volt up {' '.join(args)} did not refuse; it ran") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_up_gives_an_error_its_reason_in_the_stream(make_repo, redis_url, tmp_path) -> None:
    """Each `error` line says why; and a reason that quotes what the commit wrote (a key of its
    .volt.toml with a line break and control sequences in it) stays on its line: it cannot print a
    line of its own that reads like another build's."""
    repo = make_repo()
    repo.commit({**PASSING, ".volt.toml": "[tests\ncommand = 1\n"}, "Broken .volt.toml")
    repo.checkout("evil", create=True)
    forged = "passed    proj 0123456789 main            0.1s 5/5 passed       All good"
    repo.commit({".volt.toml": f'[tests]\n"x\\n{forged}\\u001b[2K\\r{forged}" = 1\n'}, "Quoted key")
    proc = run_volt("up", "--burst", "--workers", "1", "--repo", str(repo.path), "--branch", "main",
                    "--branch", "evil", "--redis-url", redis_url, env={"VOLT_WORKSPACE_DIR": str(tmp_path / "ws")},
                    cwd=tmp_path, timeout=STARTUP_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    errors = [line for line in proc.stdout.splitlines() if line.startswith("error ")]
    assert len(errors) == 2, proc.stdout
    (broken,) = [line for line in errors if "Broken .volt.toml" in line]
    assert broken.endswith("Broken .volt.toml — .volt.toml is not valid TOML: Expected ']' at the end of a table "
                           "declaration (at line 1, column 7)"), broken
    (quoted,) = [line for line in errors if "Quoted key" in line]
    assert "— .volt.toml: unknown key 'tests.x" in quoted and "\x1b" not in quoted and "\r" not in quoted, quoted
    assert [line for line in proc.stdout.splitlines() if line.startswith("passed")] == []


FAILS_FIRST = {
    "tests/__init__.py": "",
    "tests/test_calc.py": (
        "import time, unittest\n\n\nclass Calc(unittest.TestCase):\n"
        "    def test_a_adds(self):\n        self.assertEqual(1 + 1, 3)\n\n"
        "    def test_b_slow(self):\n        time.sleep(8)\n"
    ),
}


def test_a_first_failure_reaches_the_stream_the_log_follower_and_the_page_while_the_build_runs(
        make_repo, redis_url, conn, tmp_path) -> None:
    repo = make_repo()
    sha = repo.commit(FAILS_FIRST, "breaks calc, then a slow test")
    port = free_port()
    proc = start_up(tmp_path, "--repo", str(repo.path), "--workers", "1", "--burst", "--web", "--web-port", str(port),
                    "--redis-url", redis_url)
    follower = None
    try:
        read_until(proc, "queued ")
        build_id = keys.build_id("proj", sha)
        wait_until(lambda: conn.hget(keys.build(build_id), "status") == "running", "the build to start",
                   STARTUP_TIMEOUT_S, process=proc)
        follower = subprocess.Popen([sys.executable, "-m", "voltci", "log", "-f", sha[:10], "--redis-url", redis_url],
                                    env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = read_until(proc, f"✗ proj main {sha[:10]}: first failure after ")
        said = lines[-1].strip()
        assert said.endswith(" s: tests.test_calc.Calc.test_a_adds") or said.endswith(" s: test_a_adds"), said
        assert conn.hget(keys.build(build_id), "status") == "running"  # said while it runs
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/build/proj/{sha}", timeout=10).read().decode()
        assert "1 failed so far: <code>" in page and "test_a_adds" in page
        ended = read_until(proc, f"failed    proj {sha[:10]}")
        assert not any("first failure" in line for line in ended)  # once
        proc.wait(timeout=60)
        out, err = follower.communicate(timeout=60)
    finally:
        kill_if_running(proc)
        if follower is not None and follower.poll() is None:
            follower.kill()
    assert proc.returncode == 0, proc.stderr.read()[-3000:]
    told = [line for line in err.splitlines() if line.startswith("[volt: first failure after ")]
    assert len(told) == 1 and "test_a_adds" in told[0], err
    assert err.index(told[0]) < err.index("[volt: build failed")  # before its end
    assert "first failure" not in out  # stdout stays the build's output
    report = json.loads(run_volt("report", sha, "--json", "--redis-url", redis_url).stdout)
    assert 0 <= report["first_failure_s"] < 8 and "test_a_adds" in report["first_failure"]
