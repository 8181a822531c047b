"""Every command against a Redis that wants a password and speaks only TLS (`rediss://`), as a
multi-host deployment runs it: the URL from --redis-url or VOLT_REDIS_URL, the CA in the URL."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis
from sample_project import PASSING
from support import ROOT, child_env, run_volt, wait_until

from voltci.redis_server import free_port

pytestmark = pytest.mark.e2e  # every test here starts processes: builds, volt, redis-server

PASSWORD = "pw-Volt-1"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture
def tls_redis(tmp_path):
    """redis-server with TLS only (no plain port) and a password; yields (url, url with a wrong password)."""
    binary, tool = shutil.which("redis-server"), shutil.which("openssl")
    assert binary and tool, "redis-server (with TLS) and openssl are missing: run `bash .ci/packages`"
    certs = tmp_path / "certs"
    certs.mkdir()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=volt-test-ca",
            "-keyout", "ca.key", "-out", "ca.crt", cwd=certs)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
            "-out", "server.csr", cwd=certs)
    (certs / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.cnf", "-out", "server.crt", cwd=certs)
    port = free_port()
    proc = subprocess.Popen([binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                             "--tls-cert-file", str(certs / "server.crt"), "--tls-key-file", str(certs / "server.key"),
                             "--tls-ca-cert-file", str(certs / "ca.crt"), "--tls-auth-clients", "no",
                             "--requirepass", PASSWORD, "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={certs / 'ca.crt'}"
    client = redis.Redis.from_url(url)
    wait_until(client.ping, "redis-server with TLS to start", 20, ignoring=(redis.RedisError,), process=proc)
    client.close()
    yield url, url.replace(PASSWORD, "wrong-password")
    proc.terminate()
    proc.wait(timeout=10)


def test_every_command_works_over_tls_with_a_password(tls_redis, make_repo, tmp_path) -> None:
    url, _ = tls_redis
    repo = make_repo()
    sha = repo.commit(PASSING, "tests")
    env = {"VOLT_REDIS_URL": url, "VOLT_WORKSPACE_DIR": str(tmp_path / "ws")}
    observed = subprocess.run([sys.executable, str(ROOT / "bin" / "volt-observe"), "--once", "--repo", str(repo.path)],
                              env=child_env(**env), capture_output=True, text=True, timeout=60)
    assert observed.returncode == 0, observed.stderr
    worker = run_volt("worker", "--burst", "--redis-url", url, env={"VOLT_WORKSPACE_DIR": env["VOLT_WORKSPACE_DIR"]},
                      timeout=120)
    assert worker.returncode == 0, worker.stderr[-2000:]
    # --redis-url works, and says once that `ps` shows the password it carries
    assert worker.stderr.count("the Redis URL on the command line carries its password") == 1
    assert PASSWORD not in worker.stderr
    reported = run_volt("report", sha, "--json", env=env)
    assert reported.returncode == 0 and json.loads(reported.stdout)["status"] == "passed", reported.stderr
    for args in (["status"], ["history"]):
        assert run_volt(*args, env=env).returncode == 0
    assert PASSWORD not in run_volt("status", "--json", env=env).stdout

    port = free_port()
    web = subprocess.Popen([sys.executable, "-m", "voltci", "web", "--port", str(port)], env=child_env(**env),
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    scheduler = subprocess.Popen([sys.executable, "-m", "voltci", "scheduler"], env=child_env(**env), cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        page = wait_until(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/repo/proj", timeout=2).read()
                          .decode(), "the web page", 30, ignoring=(OSError,), process=web)
        assert sha[:10] in page and "passed" in page
        time.sleep(1.5)
        assert scheduler.poll() is None
    finally:
        web.terminate()
        scheduler.terminate()
        web.wait(timeout=10)
        out, _ = scheduler.communicate(timeout=10)
    assert "acting as the scheduler" in out and PASSWORD not in out


@pytest.mark.parametrize("command", [["status"], ["report", "abcd"], ["scheduler"], ["worker", "--burst"], ["web"]])
def test_a_wrong_password_is_one_line_without_the_password(tls_redis, command) -> None:
    _, wrong = tls_redis
    proc = run_volt(*command, "--redis-url", wrong)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "refused the credentials" in lines[0] and "wrong-password" not in lines[0]
