"""rq-dashboard serves every page against a Redis holding real Volt jobs, and shows builds readably.

This is the check behind the rq pin in requirements.txt ("the newest rq that rq-dashboard works
with"): with the installed rq (asserted to be the pinned one) and rq-dashboard mounted in a Flask
app, every HTML page and JSON endpoint answers 200 for a Redis that holds a finished Volt build, a
queued Volt build, a failed rq job and a job deferred on the queued build. The deferred job is there
because job pages of jobs with dependencies are what rq 2.6+ breaks in rq-dashboard 0.9.0. Each
build's job shows Volt's description (repo, short sha, commit subject), on its own and in the
queued list.
"""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import flask
import pytest
from rq.job import Job, JobStatus
from support import run_rq_worker_burst

from voltci import keys
from voltci.jobqueue import JOB_SERIALIZER, describe, volt_queue
from voltci.models import Status
from voltci.observer import RepoWatch
from voltci.store import Store
from voltci.web import mount_rq_dashboard

REQUIREMENTS = Path(__file__).resolve().parent.parent / "requirements.txt"
REGISTRIES = ("queued", "started", "finished", "failed", "deferred", "scheduled", "canceled")
PASSING_TEST = ("import unittest\n\n\nclass A(unittest.TestCase):\n"
                "    def test_ok(self):\n        self.assertEqual(1 + 1, 2)\n")
FAILING_TEST = ("import unittest\n\n\nclass A(unittest.TestCase):\n"
                "    def test_ok(self):\n        self.assertEqual(1 + 1, 3)\n")
BROKEN_JOB_ID = "not-a-volt-build"
DEFERRED_JOB_ID = "after-the-queued-build"


def pinned(package: str) -> str:
    """The version requirements.txt pins `package` to (`package==X`)."""
    for line in REQUIREMENTS.read_text().splitlines():
        match = re.match(rf"\s*{re.escape(package)}==([^\s#;]+)", line)
        if match:
            return match.group(1)
    raise AssertionError(f"requirements.txt does not pin {package}")


def dashboard_client(redis_url: str) -> flask.testing.FlaskClient:
    """rq-dashboard mounted under /rq of an in-process Flask app, as `volt web` embeds it (JSON jobs)."""
    app = flask.Flask(__name__)
    mount_rq_dashboard(app, redis_url)
    return app.test_client()


def get_ok(client: flask.testing.FlaskClient, url: str) -> flask.Response:
    response = client.get(url, follow_redirects=True)
    assert response.status_code == 200, \
        f"GET {url} -> {response.status_code}:\n{response.get_data(as_text=True)[-2000:]}"
    return response


def get_json(client: flask.testing.FlaskClient, url: str) -> dict:
    response = get_ok(client, url)
    assert response.is_json, f"GET {url} is not JSON: {response.content_type}"
    return response.get_json()


def burst(settings) -> None:
    done = run_rq_worker_burst(settings)
    assert done.returncode == 0, f"rq worker failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture
def volt_jobs(rq_conn, conn, settings, make_repo):
    """Redis with a finished build, a failed rq job, a queued build and a job deferred on it.

    Returns the (finished, queued) builds.
    """
    repo = make_repo("dashproj")
    repo.commit({"tests/__init__.py": "", "tests/test_a.py": PASSING_TEST}, "Add a passing test")
    watch = RepoWatch(Store(rq_conn, settings), str(repo.path))
    watch.validate()
    [finished] = watch.poll()
    # A job whose function does not exist: the worker puts it in the failed registry.
    volt_queue(rq_conn, settings.queue).enqueue_call("voltci.nonexistent.func", job_id=BROKEN_JOB_ID)
    burst(settings)
    assert Store(conn).records.get_build(finished.id).status is Status.PASSED

    repo.commit({"tests/test_a.py": FAILING_TEST}, "Make test_a fail on purpose")
    [queued] = watch.poll()
    volt_queue(rq_conn, settings.queue).enqueue_call(
        "voltci.nonexistent.func", job_id=DEFERRED_JOB_ID, depends_on=keys.job_id(queued.id, 1))
    return finished, queued


def status_of(rq_conn, job_id: str) -> JobStatus:
    return Job.fetch(job_id, connection=rq_conn, serializer=JOB_SERIALIZER).get_status()


def test_installed_rq_is_the_pinned_one():
    assert version("rq") == pinned("rq")
    assert version("rq-dashboard") == pinned("rq-dashboard")


def test_dashboard_serves_every_page_for_volt_jobs(redis_url, rq_conn, settings, volt_jobs):
    finished, queued = volt_jobs
    job_of = {build.id: keys.job_id(build.id, 1) for build in (finished, queued)}
    assert status_of(rq_conn, job_of[finished.id]) == JobStatus.FINISHED
    assert status_of(rq_conn, job_of[queued.id]) == JobStatus.QUEUED
    assert status_of(rq_conn, BROKEN_JOB_ID) == JobStatus.FAILED
    assert status_of(rq_conn, DEFERRED_JOB_ID) == JobStatus.DEFERRED

    client = dashboard_client(redis_url)
    for page in ("/rq/", "/rq/0/view/queues", "/rq/0/view/workers", "/rq/0/view/jobs",
                 f"/rq/0/view/jobs/{settings.queue}/queued/8/asc/1"):
        get_ok(client, page)

    queues = get_json(client, "/rq/0/data/queues.json")["queues"]
    [volt_queue] = [q for q in queues if q["name"] == settings.queue]
    assert volt_queue["count"] == 1
    assert volt_queue["finished_job_registry_count"] == 1
    assert volt_queue["failed_job_registry_count"] == 1
    assert volt_queue["deferred_job_registry_count"] == 1
    assert "workers" in get_json(client, "/rq/0/data/workers.json")

    listed: dict[str, list[dict]] = {}
    for registry in REGISTRIES:
        data = get_json(client, f"/rq/0/data/jobs/{settings.queue}/{registry}/8/asc/1.json")
        assert data["registry_name"] == registry
        listed[registry] = data["jobs"]
    assert [job["id"] for job in listed["queued"]] == [job_of[queued.id]]
    assert listed["queued"][0]["description"] == describe(queued)
    assert [job["id"] for job in listed["finished"]] == [job_of[finished.id]]
    assert [job["id"] for job in listed["failed"]] == [BROKEN_JOB_ID]
    assert "nonexistent" in listed["failed"][0]["exc_info"]
    assert [job["id"] for job in listed["deferred"]] == [DEFERRED_JOB_ID]

    all_ids = sorted({job["id"] for jobs in listed.values() for job in jobs})
    assert all_ids == sorted([BROKEN_JOB_ID, DEFERRED_JOB_ID, *job_of.values()])
    for job_id in all_ids:
        get_ok(client, f"/rq/0/view/job/{job_id}")
        assert get_json(client, f"/rq/0/data/job/{job_id}.json")["id"] == job_id

    for build, status in ((finished, "finished"), (queued, "queued")):
        info = get_json(client, f"/rq/0/data/job/{job_of[build.id]}.json")
        assert info["status"] == status
        assert info["origin"] == settings.queue
        assert_readable(info["description"], build)
    finished_info = get_json(client, f"/rq/0/data/job/{job_of[finished.id]}.json")
    assert finished_info["result"]["status"] == "passed"
    deferred_info = get_json(client, f"/rq/0/data/job/{DEFERRED_JOB_ID}.json")
    assert deferred_info["depends_on"] == [job_of[queued.id]]
    assert deferred_info["depends_on_status"] == ["active"]


def assert_readable(description: str, build) -> None:
    """Volt's description: `<repo> <10-char sha> <subject>`."""
    assert description == describe(build)
    assert description == f"{build.repo} {build.commit[:10]} {build.subject}"
    assert build.repo == "dashproj" and build.subject in ("Add a passing test", "Make test_a fail on purpose")
