"""/metrics: Prometheus' text format from what Volt records in Redis, parsed back with prometheus_client's
own parser — from the web app in this process, and from a `volt web` process started afterwards."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

from dispatch_scene import Scene
from prometheus_client.parser import text_string_to_metric_families
from support import ROOT, child_env

from voltci.heartbeat import Heartbeat
from voltci.models import RunnerBeat, Status
from voltci.store import Store
from voltci.web import create_app


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value, for every sample of the exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def record_some_builds(scene: Scene) -> None:
    scene.repo("A")
    scene.repo("B")
    scene.push("A", 1)
    scene.run_one({})  # A 1 passed
    scene.push("A", 3, start=1)
    scene.run_one({"A": 2})  # the head, A 4, failed
    lost = scene.take()
    assert scene.store.builds.redispatch(lost.id, lost.attempt, "runner stopped sending heartbeats") == "requeued"
    scene.push("B", 2)  # B 1, B 2 waiting


def test_metrics_come_from_redis_and_parse(conn, settings) -> None:
    scene = Scene(conn, settings)
    record_some_builds(scene)
    Heartbeat(Store(conn), RunnerBeat(name="idle-runner"), 1.0, 60.0).send()
    response = create_app(settings).test_client().get("/metrics")
    assert response.status_code == 200 and response.content_type.startswith("text/plain; version=0.0.4")
    found = samples(response.get_data(as_text=True))
    assert found[("volt_queue_depth", (("repository", "A"),))] == 2  # A 3, and A 2 re-dispatched
    assert found[("volt_queue_depth", (("repository", "B"),))] == 2
    assert found[("volt_runners", (("state", "idle"),))] == 1
    assert found[("volt_runners", (("state", "busy"),))] == 0
    assert found[("volt_builds_total", (("repository", "A"), ("status", "passed")))] == 1
    assert found[("volt_builds_total", (("repository", "A"), ("status", "failed")))] == 1
    assert found[("volt_build_duration_seconds_count", ())] == 2
    assert found[("volt_build_duration_seconds_bucket", (("le", "1.0"),))] == 2  # both took well under a second
    assert found[("volt_build_duration_seconds_bucket", (("le", "+Inf"),))] == 2
    assert 0 <= found[("volt_build_duration_seconds_sum", ())] < 2
    assert found[("volt_queue_wait_seconds_count", ())] == 3  # three attempts started
    assert found[("volt_lost_attempts_total", ())] == 1


def test_another_volt_web_process_serves_the_same_values(conn, settings) -> None:
    scene = Scene(conn, settings)
    record_some_builds(scene)
    here = samples(create_app(settings).test_client().get("/metrics").get_data(as_text=True))
    web = subprocess.Popen([sys.executable, "-m", "voltci", "web", "--port", "0", "--redis-url",
                            settings.effective_redis_url], cwd=ROOT, env=child_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = web.stdout.readline()
        assert line.startswith("Volt web: http://"), line + web.stderr.read()
        url = line.split()[2]
        with urllib.request.urlopen(url + "metrics", timeout=10) as reply:
            there = samples(reply.read().decode())
        ignore = {"volt_runners"}  # runner rows age between the two scrapes; everything else is Redis' record
        assert {k: v for k, v in there.items() if k[0] not in ignore} == \
            {k: v for k, v in here.items() if k[0] not in ignore}
        scene.run_one({})  # a build ends: the other process sees it at its next scrape
        with urllib.request.urlopen(url + "metrics", timeout=10) as reply:
            later = samples(reply.read().decode())
        assert sum(v for k, v in later.items() if k[0] == "volt_builds_total") == 3
    finally:
        web.terminate()
        web.wait(timeout=15)


def test_builds_ended_without_running_are_counted_but_have_no_duration(conn, settings) -> None:
    scene = Scene(conn, settings)
    scene.repo("A")
    (build,) = scene.push("A", 1)
    scene.store.builds.cancel(build.id)
    found = samples(create_app(settings).test_client().get("/metrics").get_data(as_text=True))
    assert found[("volt_builds_total", (("repository", "A"), ("status", Status.CANCELLED.value)))] == 1
    assert found[("volt_build_duration_seconds_count", ())] == 0
