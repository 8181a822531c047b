"""The web token rule and rq-dashboard under /rq, attacked over HTTP against a real `volt web` on loopback
and a real Redis holding a failed rq job: every view of rq-dashboard that is not known to only read
needs the token, whatever the method (`GET /rq/requeue/volt` first); with no token nothing in Redis
changes; a path part that is not what its name says is a 404 before rq-dashboard sees it; its pages
run only their own scripts (a nonce per response)."""

from __future__ import annotations

import re
from dataclasses import replace

import flask
import pytest
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from support import run_rq_worker_burst, snapshot
from web_process import call, volt_web

from voltci.jobqueue import JOB_SERIALIZER, volt_queue
from voltci.web import create_app, dashboard, guard

pytestmark = pytest.mark.e2e  # `volt web`, an rq worker and redis-server are real processes

TOKEN = "web-t0ken-for-tests"
BROKEN_JOB = "a-job-that-failed"
VALUES = {"instance_number": 0, "queue_name": "volt", "registry_name": "failed", "per_page": 8, "order": "asc",
          "page": 1, "job_id": BROKEN_JOB, "filename": "css/main.css"}


@pytest.fixture
def failed_job(rq_conn, settings):
    """A job in rq's failed registry of Volt's queue, failed by a real rq worker."""
    volt_queue(rq_conn, settings.queue).enqueue_call("voltci.nonexistent.func", job_id=BROKEN_JOB)
    assert run_rq_worker_burst(settings).returncode == 0
    assert status(rq_conn) == JobStatus.FAILED
    return BROKEN_JOB


def status(rq_conn) -> JobStatus:
    return Job.fetch(BROKEN_JOB, connection=rq_conn, serializer=JOB_SERIALIZER).get_status()


def dashboard_routes(settings) -> list[tuple[str, str, str]]:
    """(endpoint, method, URL path) of every route rq-dashboard has, as the installed version has them."""
    app = create_app(settings)
    found = []
    for rule in app.url_map.iter_rules():
        if not dashboard.is_dashboard(rule.endpoint):
            continue
        _, path = rule.build({name: VALUES[name] for name in rule.arguments}, append_unknown=False)
        found += [(rule.endpoint, method, path) for method in sorted(rule.methods or ())]
    return found


def test_every_dashboard_view_that_is_not_a_read_needs_the_token(settings, rq_conn, conn, failed_job,
                                                                 tmp_path) -> None:
    routes = dashboard_routes(settings)
    writes = {endpoint for endpoint, _, _ in routes if endpoint not in dashboard.READS}
    # what rq-dashboard 0.9 changes things with, read from its web.py: all of it is outside READS
    assert {"rq_dashboard.requeue_all", "rq_dashboard.requeue_job_view", "rq_dashboard.delete_job_view",
            "rq_dashboard.empty_queue", "rq_dashboard.compact_queue"} <= writes
    assert ("rq_dashboard.requeue_all", "GET", "/rq/requeue/volt") in routes
    before = snapshot(conn)
    with volt_web(settings, tmp_path, VOLT_WEB_TOKEN=TOKEN) as url:
        for endpoint, method, path in routes:
            needs_token = not (endpoint in dashboard.READS and method in guard.READ_METHODS)
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"bearer {TOKEN}"},
                            {"Authorization": f"Basic {TOKEN}"}, {"Cookie": f"token={TOKEN}"}):
                answer = call(url + path, method, b"" if method == "POST" else None, headers)
                assert (answer.status == 403) is needs_token, (method, path, headers, answer.status, answer.text[:300])
            if needs_token:
                forged = call(url + path + "?token=" + TOKEN, method, f"token=wrong{TOKEN}".encode() if method == "POST"
                              else None, {"Content-Type": "application/x-www-form-urlencoded"})
                assert forged.status == 403 and (method == "HEAD" or "web token" in forged.text), (method, path)
        assert snapshot(conn) == before  # no request without the token changed anything in Redis
        assert status(rq_conn) == JobStatus.FAILED

        for _, method, path in routes:  # with the token each is served (GET and HEAD before POST)
            answer = call(url + path, method, b"" if method == "POST" else None, {"Authorization": f"Bearer {TOKEN}"})
            assert answer.status != 403, (method, path, answer.status, answer.text[:300])


def test_get_requeue_is_refused_without_the_token_and_works_with_it(settings, rq_conn, failed_job, tmp_path) -> None:
    failed = FailedJobRegistry(settings.queue, connection=rq_conn)
    with volt_web(settings, tmp_path, VOLT_WEB_TOKEN=TOKEN) as url:
        for variant in ("/rq/requeue/volt", "/rq/%72equeue/volt", "/rq/requeue/%76olt", "/rq//requeue/volt",
                        "/rq/./requeue/volt", "/rq/x/../requeue/volt"):
            for method in ("GET", "HEAD", "POST"):
                answer = call(url + variant, method, b"" if method == "POST" else None)
                assert answer.status in (403, 404, 308), (variant, method, answer.status)
                assert status(rq_conn) == JobStatus.FAILED, (variant, method)
        assert failed.get_job_ids() == [BROKEN_JOB]
        done = call(url + "/rq/requeue/volt", headers={"Authorization": f"Bearer {TOKEN}"})
        assert done.status == 200 and b'"count":1' in done.body.replace(b" ", b"")
        assert status(rq_conn) == JobStatus.QUEUED and failed.get_job_ids() == []


def test_without_a_configured_token_the_dashboard_only_reads(settings, rq_conn, failed_job, tmp_path) -> None:
    with volt_web(settings, tmp_path) as url:
        for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer None"}):
            answer = call(url + "/rq/requeue/volt", headers=headers)
            assert answer.status == 403 and "no web_token is configured" in answer.text
        assert call(url + "/rq/0/view/jobs/volt/failed/8/asc/1").status == 200
    assert status(rq_conn) == JobStatus.FAILED


def test_a_view_a_newer_dashboard_adds_needs_the_token(settings) -> None:
    """The rule is by what is known to read: a GET view added under rq-dashboard's name is refused."""
    app = create_app(replace(settings, web_token=TOKEN))
    ran = []
    app.add_url_rule("/rq/purge-everything", endpoint="rq_dashboard.purge_everything",
                     view_func=lambda: ran.append(1) or "purged")
    app.add_url_rule("/volt-new-action", endpoint="new_action", view_func=lambda: ran.append(1) or "done")
    web = app.test_client()
    for path in ("/rq/purge-everything", "/volt-new-action"):
        for method in ("GET", "HEAD", "OPTIONS"):
            assert web.open(path, method=method).status_code == 403, (path, method)
    assert ran == []
    assert web.get("/rq/purge-everything", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert ran == [1]


def test_every_volt_view_is_a_known_read_or_a_guarded_action(settings) -> None:
    """Volt's own GET views are all in the blueprints guard.py knows to read; nothing else answers a GET."""
    app = create_app(settings)
    for rule in app.url_map.iter_rules():
        if dashboard.is_dashboard(rule.endpoint) or rule.endpoint in guard.SIGNED_VIEWS:
            continue
        blueprint, dot, _ = rule.endpoint.partition(".")
        reads = rule.endpoint in guard.READ_VIEWS or bool(dot) and blueprint in guard.READ_BLUEPRINTS
        assert reads == ("GET" in (rule.methods or ())), (rule.endpoint, rule.methods)


HOSTILE_PARTS = ["x');window.voltHacked=1;('", "x'</script><script>window.voltHacked=1</script>", "v%00lt",
                 "..%2F..%2Fetc", "a" * 300]


def test_path_parts_are_checked_before_the_dashboard_sees_them(settings, failed_job, tmp_path) -> None:
    with volt_web(settings, tmp_path) as url:
        for part in HOSTILE_PARTS:
            for path in (f"/rq/0/view/jobs/{part}/queued/8/asc/1", f"/rq/0/data/jobs/{part}/queued/8/asc/1.json",
                         f"/rq/0/view/job/{part}", f"/rq/0/data/job/{part}.json"):
                answer = call(url + path.replace("<", "%3C").replace(">", "%3E").replace("'", "%27"))
                assert answer.status == 404, (path, answer.status)
                assert "voltHacked" not in answer.text
        for path in ("/rq/0/view/jobs/volt/nosuch/8/asc/1", "/rq/0/view/jobs/volt/queued/8/up/1",
                     "/rq/0/data/jobs/volt/queued/x/asc/1.json", "/rq/0/data/jobs/volt/queued/8/asc/-1.json",
                     "/rq/0/data/jobs/volt/queued/100000/asc/1.json", "/rq/1/view", "/rq/7/data/queues.json"):
            answer = call(url + path)
            assert answer.status == 404 and "Traceback" not in answer.text, (path, answer.status)
        for path in ("/rq/", "/rq/0/view/jobs/volt/failed/8/asc/1", "/rq/0/view/job/" + BROKEN_JOB,
                     "/rq/0/data/jobs/volt/failed/8/dsc/1.json", "/rq/0/data/job/" + BROKEN_JOB + ".json",
                     "/rq/static/js/jquery-3.5.1.min.js"):
            assert call(url + path).status == 200, path


def test_dashboard_pages_run_only_their_own_scripts(settings, failed_job, tmp_path) -> None:
    with volt_web(settings, tmp_path) as url:
        pages = [call(url + path) for path in ("/rq/0/view/job/" + BROKEN_JOB, "/rq/0/view/job/" + BROKEN_JOB)]
        nonces = []
        for page in pages:
            policy = page.headers["Content-Security-Policy"]
            nonce = re.search(r"'nonce-([A-Za-z0-9_-]{20,})'", policy).group(1)
            assert "'unsafe-inline'" not in policy.split("script-src", 1)[1].split(";")[0]
            assert "object-src 'none'" in policy and "base-uri 'none'" in policy
            assert page.headers["X-Content-Type-Options"] == "nosniff"
            inline = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", page.text)
            assert inline and all(f'nonce="{nonce}"' in tag for tag in inline)
            nonces.append(nonce)
        assert nonces[0] != nonces[1]
        data = call(url + f"/rq/0/data/job/{BROKEN_JOB}.json")
        assert "Content-Security-Policy" in data.headers and data.headers["X-Content-Type-Options"] == "nosniff"


def test_the_hooks_are_the_only_views_that_skip_the_token(settings) -> None:
    app: flask.Flask = create_app(settings)
    hooks = {"hooks.push_hook", "forgehooks.github_hook", "forgehooks.gitea_hook", "forgehooks.gitlab_hook"}
    assert hooks == guard.SIGNED_VIEWS and hooks <= set(app.view_functions)
