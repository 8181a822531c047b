"""Redis with Sentinel: URLs read strictly, every Volt process on one, and builds flowing through
failovers — the primary SIGKILLed, a replica promoted, the old primary back as a replica — with no build
lost, no result stored twice, no process dead, each failover said once per process and counted."""

from __future__ import annotations

import time

import pytest
from cluster import SLOW_TEST, Cluster
from sentinels import SentinelGroup
from support import assert_one_line_error, run_volt, wait_until

from voltci.connection import parse_sentinel_url, redacted
from voltci.errors import BadInput
from voltci.store import Store


def test_a_sentinel_url_names_its_sentinels_service_database_and_passwords() -> None:
    url = parse_sentinel_url("redis+sentinel://:p%40ss@10.0.0.1:26379,sentinel-b,[::1]:5000/volt/2"
                             "?sentinel_password=s3")
    assert url.sentinels == (("10.0.0.1", 26379), ("sentinel-b", 26379), ("::1", 5000))
    assert (url.service, url.db, url.password, url.tls) == ("volt", 2, "p@ss", False)
    assert url.sentinel_kwargs(5)["password"] == "s3" and url.server_kwargs()["password"] == "p@ss"
    assert parse_sentinel_url("rediss+sentinel://h/svc?ssl_ca_certs=/ca.pem").server_kwargs()["ssl"] is True
    shown = redacted("redis+sentinel://:secret@h1:1,h2:2/volt?sentinel_password=other")
    assert "secret" not in shown and "other" not in shown and "h1:1,h2:2/volt" in shown


@pytest.mark.parametrize(("url", "fragment"), [
    ("redis+sentinel://h1:26379", "no service name"),
    ("redis+sentinel://h1:port/volt", "port must be a number"),
    ("redis+sentinel://h1,/volt", "host is missing"),
    ("redis+sentinel://h1/volt/zero", "database number"),
    ("redis+sentinel://h1/volt?timeout=1", "unknown option 'timeout'"),
])
def test_a_malformed_sentinel_url_is_one_line(url: str, fragment: str) -> None:
    with pytest.raises(BadInput, match=fragment):
        parse_sentinel_url(url)
    assert_one_line_error(run_volt("status", "--redis-url", url), fragment)


def test_no_sentinel_or_no_such_service_is_one_line(tmp_path) -> None:
    assert_one_line_error(run_volt("status", "--redis-url", "redis+sentinel://127.0.0.1:1/volt", timeout=60),
                          "no Sentinel")
    with SentinelGroup(tmp_path, replicas=0, sentinels=1) as group:
        wrong = group.url.replace("/volt/0", "/nosuch/0")
        assert_one_line_error(run_volt("status", "--redis-url", wrong, timeout=60), "no Sentinel")


@pytest.fixture
def sentinel_cluster(tmp_path):
    group = SentinelGroup(tmp_path / "sentinels").start()
    cluster = Cluster(tmp_path, sentinels=group)
    yield cluster
    cluster.stop()
    group.stop()


def test_builds_flow_through_failovers_none_lost_none_twice(sentinel_cluster: Cluster, make_repo) -> None:
    cluster, group = sentinel_cluster, sentinel_cluster.sentinels
    assert group is not None
    repo = make_repo()
    repo.commit(SLOW_TEST, "slow tests")
    watch = cluster.watch(repo)
    builds = watch.poll()
    for n in range(5):
        repo.commit({f"f{n}.txt": str(n)}, f"change {n}")
    builds += watch.poll()
    assert len(builds) == 6
    cluster.worker("r1", FAULT_SLEEP="1.5")
    cluster.worker("r2", FAULT_SLEEP="1.5")
    cluster.scheduler()
    wait_until(lambda: Store(cluster.conn).records.running_builds(), "a build to run", timeout=60)
    wait_until(lambda: "acting as the scheduler" in cluster.log("scheduler"), "the scheduler to act")
    for _ in range(2):
        old = group.fail_over()
        time.sleep(1.0)
        group.rejoin(old)
    for build in builds:
        ended = cluster.wait_final(build.id, timeout=180)
        assert ended.status.value == "passed", ended.reason
        assert ended.results_stored == 1, f"{build.id} stored {ended.results_stored} results"
    for name in ("r1", "r2", "scheduler"):
        assert cluster.procs[name].poll() is None, cluster.log(name)[-3000:]
        said = cluster.log(name)
        assert "the Redis primary changed" in said and "Traceback" not in said, said[-3000:]
    events = Store(cluster.conn).metrics.counters().events
    assert events.get(("failovers", "scheduler"), 0) >= 1 and events.get(("failovers", "runner"), 0) >= 1
    shown = run_volt("status", "--redis-url", group.url, timeout=60)
    assert shown.returncode == 0, shown.stderr
    primary = f"127.0.0.1:{group.primary_port()}"
    assert f"redis: primary {primary}; replicas: 127.0.0.1:" in shown.stdout, shown.stdout


def test_a_plain_rq_worker_with_rqs_sentinel_setting_builds(tmp_path, make_repo) -> None:
    """`rq worker -w voltci.worker.VoltWorker -c CONFIG` where CONFIG has rq's own SENTINEL setting, as the
    docs show for a runner started by rq's command."""
    import subprocess
    import sys

    from sentinels import SERVICE
    from support import ROOT, child_env

    from voltci.config import Settings, as_environment
    from voltci.connection import connect
    from voltci.observer import RepoWatch

    with SentinelGroup(tmp_path / "sentinels") as group:
        settings = Settings(redis_url=group.url, workspace_dir=str(tmp_path / "ws"), build_timeout=120)
        config = tmp_path / "rqconfig.py"
        config.write_text(f"SENTINEL = {{'INSTANCES': {[('127.0.0.1', p) for p in group.sentinel_ports]!r}, "
                          f"'MASTER_NAME': {SERVICE!r}, 'PASSWORD': {group.password!r}, 'DB': 0}}\n")
        repo = make_repo()
        repo.commit({"tests/__init__.py": "", "tests/test_ok.py": "import unittest\n\nclass T(unittest.TestCase):\n"
                                                                  "    def test_ok(self):\n        pass\n"}, "ok")
        conn = connect(group.url, decode=False)
        watch = RepoWatch(Store(conn, settings), str(repo.path))
        watch.validate()
        (queued,) = watch.poll()
        done = subprocess.run([sys.executable, "-m", "rq.cli", "worker", "-w", "voltci.worker.VoltWorker", "-c",
                               "rqconfig", "--burst", settings.queue], cwd=tmp_path, capture_output=True, text=True,
                              timeout=180, env=child_env(**as_environment(settings),
                                                         PYTHONPATH=f"{ROOT}:{tmp_path}"))
        assert done.returncode == 0, done.stderr[-3000:]
        build = Store(connect(group.url), settings).records.get_build(queued.id)
        assert build is not None and build.status.value == "passed", (build, done.stderr[-3000:])


def test_the_web_page_and_rq_dashboard_read_through_the_sentinels(tmp_path) -> None:
    from dataclasses import replace

    from voltci.config import Settings
    from voltci.web import create_app

    with SentinelGroup(tmp_path / "sentinels", replicas=0, sentinels=1) as group:
        settings = Settings(redis_url=group.url, workspace_dir=str(tmp_path / "ws"))
        client = create_app(replace(settings, web_token="t0ken")).test_client()
        assert client.get("/").status_code == 200
        queues = client.get("/rq/0/data/queues.json", follow_redirects=True)
        assert queues.status_code == 200 and "queues" in queues.get_json(), queues.get_data(as_text=True)[:500]
