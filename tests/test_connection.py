"""Redis URLs: malformed ones and unreachable servers are one clear error; passwords never shown.
A Redis without a password off loopback, and a password on the command line, are one warning line."""

import socket
import subprocess
import sys

import psutil
import pytest
import redis
from support import LOCKED_PASSWORD, ROOT, child_env, run_volt, wait_until

from voltci import connection
from voltci.connection import check_url, connect, redacted
from voltci.errors import BadInput, RedisUnavailable
from voltci.redis_server import find_redis_server, free_port


@pytest.mark.parametrize("url", ["localhost:6379", "http://localhost/0", "redis://", "redis://host:notaport/0",
                                 "redis://host:1/zero"])
def test_malformed_urls_are_bad_input(url: str) -> None:
    with pytest.raises(BadInput, match="malformed Redis URL"):
        check_url(url)


def test_good_urls_pass() -> None:
    for url in ("redis://127.0.0.1:6379/0", "rediss://:pw@host:6380/1", "unix:///tmp/redis.sock", "redis://h"):
        check_url(url)


def test_unreachable_redis_is_one_line_without_password() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    with pytest.raises(RedisUnavailable) as info:
        connect(url, timeout=1)
    assert "hunter2" not in str(info.value) and "\n" not in str(info.value)


def test_redacted_hides_only_the_password() -> None:
    assert redacted("redis://user:pw@h:1/0") == "redis://user:***@h:1/0"
    assert redacted("redis://h:1/0") == "redis://h:1/0"


# ---------------------------------------------------------------- warnings about an open Redis

NO_PASSWORD = "takes no password and is not on loopback"
ON_COMMAND_LINE = "the Redis URL on the command line carries its password"


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True),
                                            ("[::1]", True), ("localhost", True), ("192.0.2.2", False),
                                            ("10.1.2.3", False), ("no-such-host.invalid", False)])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert connection.is_loopback(host) is loopback


def warnings_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("volt: warning:")]


def test_each_warning_is_one_line_once_per_process(monkeypatch, capsys) -> None:
    monkeypatch.setattr(connection, "_warned", set())
    open_client = redis.Redis.from_url("redis://10.1.2.3:6379/0")
    given = redis.Redis.from_url("redis://:p%40ss@127.0.0.1:6379/0")
    for _ in range(3):
        connection.warn_if_unprotected(open_client)
        connection.warn_if_unprotected(given, argv=["volt", "status", "--redis-url", "redis://:p%40ss@127.0.0.1/0"])
    [open_line, argv_line] = warnings_of(capsys.readouterr().err)
    assert NO_PASSWORD in open_line and "10.1.2.3:6379" in open_line
    assert ON_COMMAND_LINE in argv_line and "p@ss" not in argv_line and "p%40ss" not in argv_line


def test_no_warning_for_loopback_a_socket_or_a_password_in_the_environment(monkeypatch, capsys) -> None:
    monkeypatch.setattr(connection, "_warned", set())
    for url in ("redis://127.0.0.1:6379/0", "redis://localhost/0", "unix:///tmp/redis.sock",
                "redis://:pw@10.1.2.3:6379/0"):
        connection.warn_if_unprotected(redis.Redis.from_url(url), argv=["volt", "status"])
    assert capsys.readouterr().err == ""


def outward_address() -> str:
    """An IPv4 address of this host that is not loopback (skip when it has none)."""
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith(("127.", "169.254.")):
                return address.address
    pytest.skip("this host has no address other than loopback")


@pytest.fixture
def open_redis(tmp_path):
    """redis-server without a password on a non-loopback address (protected mode off): the mistake."""
    host = outward_address()
    port = free_port()
    proc = subprocess.Popen([find_redis_server(), "--port", str(port), "--bind", host, "--protected-mode", "no",
                             "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    client = redis.Redis(host=host, port=port, socket_timeout=1)
    wait_until(client.ping, "redis-server to start", 15, ignoring=(redis.RedisError,), process=proc, every=0.05)
    yield f"redis://{host}:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.e2e
def test_every_kind_of_volt_process_warns_once_about_a_redis_open_to_the_network(open_redis, tmp_path) -> None:
    env = {"VOLT_REDIS_URL": open_redis, "VOLT_WORKSPACE_DIR": str(tmp_path / "ws")}
    status = run_volt("status", env=env)
    worker = run_volt("worker", "--burst", env=env)
    rq_worker = subprocess.run([sys.executable, "-m", "rq.cli", "worker", "-w", "voltci.worker.VoltWorker", "--burst",
                                "volt"], env=child_env(RQ_REDIS_URL=open_redis, **env), cwd=ROOT,
                               capture_output=True, text=True, timeout=60)
    for proc in (status, worker, rq_worker):
        assert proc.returncode == 0, proc.stderr
        [line] = warnings_of(proc.stderr)
        assert NO_PASSWORD in line and open_redis.split("//")[1].split("/")[0] in line


def test_no_warning_for_a_password_less_redis_on_loopback(redis_url) -> None:
    proc = run_volt("status", env={"VOLT_REDIS_URL": redis_url})
    assert proc.returncode == 0 and warnings_of(proc.stderr) == [], proc.stderr


def test_a_password_given_with_redis_url_is_warned_about_once(locked_redis) -> None:
    given = run_volt("status", "--redis-url", locked_redis.url)
    assert given.returncode == 0, given.stderr
    [line] = warnings_of(given.stderr)
    assert ON_COMMAND_LINE in line and "VOLT_REDIS_URL" in line and LOCKED_PASSWORD not in given.stderr
    quiet = run_volt("status", env={"VOLT_REDIS_URL": locked_redis.url})
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
