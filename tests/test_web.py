"""`volt web` through Flask's test client against a real Redis: pages, badge, JSON, bad input as 404
and 400 without touching Redis, escaping, and the token that cancel and rebuild need."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from support import SHA_A, SHA_B

from voltci import keys, queue
from voltci.models import Build, Counts, Outcome, RunOutcome, Status, TestResult
from voltci.store import Store
from voltci.web import PER_PAGE, create_app

SCRIPT = "<script>window.voltHacked=1</script>"


def add_build(rq_conn, conn, settings, sha: str, status: Status | None = None, branch: str = "main") -> Build:
    build = Build(id=keys.build_id("proj", sha), repo="proj", url="/r", commit=sha, branch=branch,
                  subject=f"subject {SCRIPT}", author="A <a@b>")
    Store(rq_conn, settings).submit(build)
    if status is not None:
        Store(conn).start_attempt(build.id, 1, "host.1")
        tests = [TestResult("t.T.test_ok", Outcome.PASSED, 0.1, order=0),
                 TestResult(f"t.T.test_bad (name='{SCRIPT}')", Outcome.FAILED, 0.2,
                            message=f"Traceback …\nAssertionError: {SCRIPT}", order=1)]
        Store(conn).finish_build(build.id, 1, "host.1",
                             RunOutcome(status, tests, Counts(total=2, passed=1, failed=1), log_tail=f"log {SCRIPT}"))
    return build


@pytest.fixture
def web(settings, conn, rq_conn):
    conn.hset(keys.repos(), "proj", json.dumps({"url": "/r"}))
    return create_app(replace(settings, web_token="s3cret")).test_client()


def test_pages_show_builds_and_escape_what_tests_print(web, conn, rq_conn, settings) -> None:
    failed = add_build(rq_conn, conn, settings, SHA_A, Status.FAILED)
    index = web.get("/").get_data(as_text=True)
    assert "/repo/proj" in index and "failed" in index and SCRIPT not in index
    page = web.get(f"/build/proj/{failed.commit[:8]}").get_data(as_text=True)
    assert "AssertionError: &lt;script&gt;" in page and SCRIPT not in page
    assert "t.T.test_bad (name=&#39;&lt;script&gt;" in page and "log &lt;script&gt;" in page
    assert page.index("t.T.test_bad") < page.index("t.T.test_ok")  # failing first
    history = web.get("/repo/proj").get_data(as_text=True)
    assert failed.short in history and "subject &lt;script&gt;" in history


@pytest.mark.parametrize("path, code", [
    ("/repo/nosuch", 404), ("/repo/bad%20name", 404), ("/build/proj/ffff", 404), ("/build/proj/xyz", 404),
    ("/build/nosuch/abcd", 404), ("/repo/proj?page=abc", 400), ("/repo/proj?page=0", 400),
    ("/repo/proj?page=-1", 400), ("/repo/proj?page=9999999", 400), ("/repo/proj?page=2", 404),
    ("/badge/nosuch.svg", 404), ("/badge/proj.svg?branch=a%20b", 400), ("/api/builds/proj/zz", 404),
    ("/api/repos/proj/builds?page=x", 400), ("/no/such/page", 404),
])
def test_bad_paths_and_queries(web, conn, rq_conn, settings, path, code) -> None:
    add_build(rq_conn, conn, settings, SHA_A, Status.PASSED)
    before = {key: conn.dump(key) for key in conn.keys("*")}
    response = web.get(path)
    assert response.status_code == code
    if path.startswith("/api/"):
        assert response.get_json()["status"] == code
    else:
        assert f"{code} " in response.get_data(as_text=True)
    assert {key: conn.dump(key) for key in conn.keys("*")} == before


def test_history_pages(web, conn, rq_conn, settings) -> None:
    for n in range(PER_PAGE + 3):
        add_build(rq_conn, conn, settings, f"{n:04x}" + "0" * 36)
    first = web.get("/api/repos/proj/builds").get_json()
    second = web.get("/api/repos/proj/builds?page=2").get_json()
    assert (first["total"], first["pages"], len(first["builds"]), len(second["builds"])) == (PER_PAGE + 3, 2,
                                                                                          PER_PAGE, 3)
    assert first["builds"][0]["commit"].startswith(f"{PER_PAGE + 2:04x}")  # newest first
    assert 'rel="next" href="?page=2"' in web.get("/repo/proj").get_data(as_text=True)


def test_badge_follows_the_latest_build_of_a_branch(web, conn, rq_conn, settings) -> None:
    add_build(rq_conn, conn, settings, SHA_A, Status.PASSED, branch="main")
    add_build(rq_conn, conn, settings, SHA_B, Status.FAILED, branch="dev")
    latest = web.get("/badge/proj.svg")
    assert latest.mimetype == "image/svg+xml" and ">failed<" in latest.get_data(as_text=True)
    assert ">passed<" in web.get("/badge/proj.svg?branch=main").get_data(as_text=True)
    assert ">unknown<" in web.get("/badge/proj.svg?branch=other").get_data(as_text=True)


def test_api_build_is_the_report_contract(web, conn, rq_conn, settings) -> None:
    build = add_build(rq_conn, conn, settings, SHA_A, Status.FAILED)
    data = web.get(f"/api/builds/proj/{build.commit}").get_json()
    assert (data["status"], data["counts"]["failed"], data["tests"][1]["message"].endswith(SCRIPT)) == \
        ("failed", 1, True)
    assert web.get("/api/repos").get_json()[0]["latest"]["status"] == "failed"
    assert "runners" in web.get("/api/runners").get_json()


def test_cancel_and_rebuild_need_the_token(web, conn, rq_conn, settings) -> None:
    build = add_build(rq_conn, conn, settings, SHA_A)  # queued
    url = f"/build/proj/{build.commit}"
    assert web.post(f"{url}/cancel").status_code == 403
    assert web.post(f"{url}/cancel", data={"token": "wrong"}).status_code == 403
    assert Store(conn).get_build(build.id).status is Status.QUEUED
    done = web.post(f"{url}/cancel", data={"token": "s3cret"})
    assert done.status_code == 303 and Store(conn).get_build(build.id).status is Status.CANCELLED
    assert web.post(f"{url}/cancel", data={"token": "s3cret"}).status_code == 409
    again = web.post(f"{url}/rebuild", headers={"Authorization": "Bearer s3cret"})
    assert again.status_code == 303
    rebuilt = Store(conn).get_build(build.id)
    assert (rebuilt.status, rebuilt.attempt) == (Status.QUEUED, 2)
    assert keys.job_id(build.id, 2) in queue.waiting_job_ids(rq_conn, settings)


def test_without_a_token_everything_is_read_only(settings, conn, rq_conn) -> None:
    conn.hset(keys.repos(), "proj", json.dumps({"url": "/r"}))
    build = add_build(rq_conn, conn, settings, SHA_A)
    web = create_app(settings).test_client()
    response = web.post(f"/build/proj/{build.commit}/cancel", data={"token": ""})
    assert response.status_code == 403 and "no web_token is configured" in response.get_data(as_text=True)
    assert web.post("/rq/queue/volt/empty").status_code == 403  # rq-dashboard's actions too
    assert Store(conn).get_build(build.id).status is Status.QUEUED
    assert web.get("/rq/", follow_redirects=True).status_code == 200
    assert "Cancel" not in web.get(f"/build/proj/{build.commit}").get_data(as_text=True)
