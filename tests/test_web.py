"""`volt web` through Flask's test client against a real Redis: pages, badge, JSON, bad input as 404
and 400 without touching Redis, escaping, and the token that cancel and rebuild need."""

from __future__ import annotations

import html
import json
from dataclasses import replace

import pytest
from support import SHA_A, SHA_B, snapshot

from voltci import jobqueue, keys
from voltci.models import Build, Counts, Outcome, RunOutcome, Status, TestResult
from voltci.store import Store
from voltci.web import PER_PAGE, create_app

SCRIPT = "<script>window.voltHacked=1</script>"


def add_build(rq_conn, conn, settings, sha: str, status: Status | None = None, branch: str = "main") -> Build:
    build = Build(id=keys.build_id("proj", sha), repo="proj", url="/r", commit=sha, branch=branch,
                  subject=f"subject {SCRIPT}", author="A <a@b>")
    Store(rq_conn, settings).builds.submit(build)
    if status is not None:
        Store(conn).builds.start_attempt(build.id, 1, "host.1")
        tests = [TestResult("t.T.test_ok", Outcome.PASSED, 0.1, order=0),
                 TestResult(f"t.T.test_bad (name='{SCRIPT}')", Outcome.FAILED, 0.2,
                            message=f"Traceback …\nAssertionError: {SCRIPT}", order=1)]
        Store(conn).builds.finish(build.id, 1, "host.1", RunOutcome(status, tests, Counts(total=2, passed=1, failed=1),
                                                                    log_tail=f"log {SCRIPT}"))
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
    before = snapshot(conn)
    response = web.get(path)
    assert response.status_code == code
    if path.startswith("/api/"):
        assert response.get_json()["status"] == code
    else:
        assert f"{code} " in response.get_data(as_text=True)
    assert snapshot(conn) == before


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
    assert Store(conn).records.get_build(build.id).status is Status.QUEUED
    done = web.post(f"{url}/cancel", data={"token": "s3cret"})
    assert done.status_code == 303 and Store(conn).records.get_build(build.id).status is Status.CANCELLED
    assert web.post(f"{url}/cancel", data={"token": "s3cret"}).status_code == 409
    again = web.post(f"{url}/rebuild", headers={"Authorization": "Bearer s3cret"})
    assert again.status_code == 303
    rebuilt = Store(conn).records.get_build(build.id)
    assert (rebuilt.status, rebuilt.attempt) == (Status.QUEUED, 2)
    assert keys.job_id(build.id, 2) in jobqueue.waiting_job_ids(rq_conn, settings)


def test_without_a_token_everything_is_read_only(settings, conn, rq_conn) -> None:
    conn.hset(keys.repos(), "proj", json.dumps({"url": "/r"}))
    build = add_build(rq_conn, conn, settings, SHA_A)
    web = create_app(settings).test_client()
    response = web.post(f"/build/proj/{build.commit}/cancel", data={"token": ""})
    assert response.status_code == 403 and "no web_token is configured" in response.get_data(as_text=True)
    assert web.post("/rq/queue/volt/queued/empty").status_code == 403  # rq-dashboard's actions too
    assert Store(conn).records.get_build(build.id).status is Status.QUEUED
    assert web.get("/rq/", follow_redirects=True).status_code == 200
    assert "Cancel" not in web.get(f"/build/proj/{build.commit}").get_data(as_text=True)


# ---------------------------------------------------------------- trends, test history, search

def ended(conn, n: int, status: Status, tests: list[TestResult], branch: str = "main", output: str = "") -> Build:
    """Build `n` of proj (later n: newer), stored as an ended build is."""
    sha = f"{n:04x}".ljust(40, "a")
    build = Build(id=keys.build_id("proj", sha), repo="proj", url="/r", commit=sha, branch=branch,
                  subject=f"subject {SCRIPT}", queued_at=f"2026-01-01T00:{n:02d}:00+00:00",
                  started_at=f"2026-01-01T00:{n:02d}:07+00:00", finished_at=f"2026-01-01T00:{n:02d}:59+00:00",
                  duration_s=52.0, runner="host.1")
    failed = sum(1 for t in tests if t.outcome in (Outcome.FAILED, Outcome.ERROR))
    Store(conn).builds.record_finished(build, RunOutcome(status, tests, Counts(total=len(tests), failed=failed,
                                                                               passed=len(tests) - failed)),
                                       output, score=float(n))
    return build


def one_test(outcome: Outcome, test_id: str = f"t.T.test_x (p='{SCRIPT}')", seconds: float = 0.5) -> list[TestResult]:
    message = f"AssertionError: {SCRIPT}" if outcome in (Outcome.FAILED, Outcome.ERROR) else ""
    return [TestResult("t.T.test_ok", Outcome.PASSED, 0.01, order=0), TestResult(test_id, outcome, seconds, message, 1)]


def test_repository_page_charts_its_builds_and_escapes_them(web, conn) -> None:
    builds = [ended(conn, n, status, one_test(Outcome.PASSED), branch="main" if n != 1 else "dev")
              for n, status in enumerate([Status.PASSED, Status.FAILED, Status.ERROR, Status.PASSED])]
    page = web.get("/repo/proj").get_data(as_text=True)
    assert SCRIPT not in page and 'id="trend-chart"' in page
    data = page[page.index('<script type="application/json" id="trend-data">') + 48:]
    chart = json.loads(data[:data.index("</script>")])
    assert [(p["commit"], p["status"]) for p in chart] == [
        (b.short, s) for b, s in zip(builds, ["passed", "failed", "error", "passed"], strict=True)]
    first = chart[0]
    assert (first["wait_s"], first["duration_s"], first["url"]) == (7.0, 52.0, f"/build/proj/{builds[0].commit}")
    dev = web.get("/repo/proj?branch=dev").get_data(as_text=True)
    assert builds[1].short in dev and builds[0].short not in dev and "<option selected>dev</option>" in dev
    trend = web.get("/api/repos/proj/trend?branch=main").get_json()
    assert [p["commit"] for p in trend["builds"]] == [builds[0].short, builds[2].short, builds[3].short]


def test_a_branch_without_builds_and_a_repository_with_one_build(web, conn) -> None:
    empty = web.get("/repo/proj?branch=nosuch")
    assert empty.status_code == 200 and "No builds of branch <code>nosuch</code> yet" in empty.get_data(as_text=True)
    assert "No builds yet" in web.get("/repo/proj").get_data(as_text=True)
    ended(conn, 0, Status.PASSED, one_test(Outcome.PASSED))
    one = web.get("/repo/proj").get_data(as_text=True)
    assert "One build so far: a trend needs more." in one
    assert web.get("/repo/proj/slow?branch=nosuch").status_code == 200
    assert "No test of proj has been flaky" in web.get("/repo/proj/flaky").get_data(as_text=True)


@pytest.mark.parametrize("path, code", [
    ("/repo/proj/test/t.T.nosuch", 404), ("/repo/proj/test/%00", 404), ("/repo/proj/test/" + "x" * 5000, 404),
    ("/repo/proj/test/a%0Ab", 404), ("/repo/nosuch/test/t.T.test_ok", 404),
    ("/repo/proj/test/t.T.test_ok?branch=a%20b", 400),
    ("/repo/proj/test/%FF%FE", 404), ("/repo/proj/flaky?branch=..%00", 400), ("/repo/nosuch/slow", 404),
    ("/repo/proj?branch=%3Cscript%3E", 400), ("/repo/proj?branch=dev&page=2", 404),
    ("/api/repos/proj/tests/t.T.nosuch", 404), ("/api/builds/proj/0000/tests?limit=0", 400),
    ("/api/builds/proj/0000/tests?limit=x", 400), ("/api/builds/proj/0000/tests?q=" + "a" * 600, 400),
    ("/api/builds/proj/0000/tests?q=%01", 400), ("/build/proj/0000?q=" + "a" * 600, 400),
    ("/api/repos/nosuch/trend", 404),
])
def test_bad_test_ids_branches_and_searches(web, conn, path, code) -> None:
    ended(conn, 0, Status.PASSED, one_test(Outcome.PASSED))
    before = snapshot(conn)
    response = web.get(path)
    assert response.status_code == code, response.get_data(as_text=True)[:300]
    if path.startswith("/api/"):
        assert response.get_json()["status"] == code
    else:
        assert f"{code} " in response.get_data(as_text=True) and SCRIPT not in response.get_data(as_text=True)
    assert snapshot(conn) == before


def test_test_history_page_and_json(web, conn) -> None:
    builds = [ended(conn, n, Status.FAILED if o is Outcome.FAILED else Status.PASSED,
                    one_test(o, seconds=0.1 * (n + 1)))
              for n, o in enumerate([Outcome.PASSED, Outcome.FAILED, Outcome.FLAKY, Outcome.PASSED])]
    ended(conn, 4, Status.PASSED, one_test(Outcome.PASSED)[:1])  # it no longer runs
    build_page = web.get(f"/build/proj/{builds[1].commit}").get_data(as_text=True)
    url = build_page[build_page.index('class="test-history" href="') + 27:]
    url = html.unescape(url[:url.index('"')])
    assert "%3Cscript%3E" in url and "<" not in url
    page = web.get(url).get_data(as_text=True)
    assert SCRIPT not in page and "t.T.test_x (p=&#39;&lt;script&gt;" in page
    cells = [part.split('"')[0] for part in page.split('data-outcome="')[1:]]
    assert cells == ["passed", "failed", "flaky", "passed", "absent"]
    assert f"<code>{builds[1].short}</code>" in page.split('id="last-failure"')[1].split("</td>")[0]
    assert "AssertionError: &lt;script&gt;" in page
    history = web.get(url.replace("/repo/proj/test/", "/api/repos/proj/tests/")).get_json()
    assert [b["outcome"] for b in history["builds"]] == ["passed", "failed", "flaky", "passed", None]
    assert [b["duration_s"] for b in history["builds"]][:4] == [0.1, 0.2, 0.3, 0.4]
    assert history["last_failure"]["commit"] == builds[1].commit and history["last_failure"]["message"].endswith(SCRIPT)
    assert (history["runs"], history["failed"], history["flaky"]) == (4, 1, 1)


def test_build_page_says_since_when_a_test_fails(web, conn) -> None:
    ended(conn, 0, Status.PASSED, one_test(Outcome.PASSED))
    first = ended(conn, 1, Status.FAILED, one_test(Outcome.FAILED))
    ended(conn, 2, Status.CANCELLED, [])  # ran no tests: passed over
    second = ended(conn, 3, Status.FAILED, one_test(Outcome.FAILED))
    third = ended(conn, 4, Status.FAILED, one_test(Outcome.FAILED))
    assert "first failed in this build</strong>: it passed in the previous one" in \
        web.get(f"/build/proj/{first.commit}").get_data(as_text=True)
    page = web.get(f"/build/proj/{second.commit}").get_data(as_text=True)
    assert "also failed in the previous build" in page and f"{first.short}</code></a>, where it first failed" in page
    page = web.get(f"/build/proj/{third.commit}").get_data(as_text=True)
    assert "3 builds in a row, first failed in" in page and f'class="first" href="/build/proj/{first.commit}"' in page


def test_build_page_of_many_tests_searches_instead_of_listing(web, conn, monkeypatch) -> None:
    from voltci.web import builds as build_pages
    monkeypatch.setattr(build_pages, "ALL_TESTS_UP_TO", 5)
    tests = [TestResult(f"pkg.test_m{i % 3}.T.test_{i}", Outcome.PASSED, i / 1000, "", i) for i in range(40)]
    tests.append(TestResult(f"pkg.T.test_{SCRIPT}", Outcome.SKIPPED, 9.0, "skipped", 40))
    output = "".join(f"line {n} ......\n" for n in range(500))
    build = ended(conn, 0, Status.PASSED, tests, output=output)
    page = web.get(f"/build/proj/{build.commit}").get_data(as_text=True)
    assert 'id="tests"' not in page and "among 41 tests" in page
    slowest = page.split('id="slowest"')[1].split("</table>")[0]
    assert slowest.index("pkg.test_m0.T.test_39") < slowest.index("pkg.test_m2.T.test_38")
    assert "test_&lt;script" not in slowest  # skipped: not among the slowest
    assert 'id="log-folded"' in page and "line 499" in page and "line 480" not in page  # a passing build's output folds
    found = web.get(f"/build/proj/{build.commit}?q=m1 test_1").get_data(as_text=True)
    assert found.count('class="found"') == 1 and "pkg.test_m1.T.test_1<" in found and "pkg.test_m1.T.test_10<" in found
    api = web.get(f"/api/builds/proj/{build.commit}/tests?q=T.TEST_3&limit=2").get_json()
    assert (api["total"], api["matched"], api["more"], len(api["tests"])) == (41, 11, True, 2)
    assert api["tests"][0]["history_url"] == "/repo/proj/test/pkg.test_m0.T.test_3"
    hostile = web.get(f"/api/builds/proj/{build.commit}/tests?q=script").get_json()
    assert hostile["tests"][0]["id"] == f"pkg.T.test_{SCRIPT}" and "%3Cscript%3E" in hostile["tests"][0]["history_url"]


def test_flaky_and_slow_views(web, conn) -> None:
    for n in range(3):
        tests = [TestResult("t.T.test_wobbly", Outcome.FLAKY if n != 1 else Outcome.PASSED, 0.2, "", 0),
                 TestResult("t.T.test_slow", Outcome.PASSED, 2.0 + n, "", 1)]
        build = ended(conn, n, Status.PASSED, tests)
        if n != 1:
            conn.zincrby(keys.repo_flaky("proj"), 1, "t.T.test_wobbly")
            conn.hset(keys.repo_flaky_last("proj"), "t.T.test_wobbly", build.id)
    flaky = web.get("/repo/proj/flaky").get_data(as_text=True)
    row = flaky.split('id="flaky-tests"')[1]
    assert "t.T.test_wobbly" in row and [c.split('"')[0] for c in row.split('data-outcome="')[1:]] == \
        ["flaky", "passed", "flaky"]
    slow = web.get("/repo/proj/slow").get_data(as_text=True)
    assert slow.index("t.T.test_slow") < slow.index("t.T.test_wobbly")
    sparks = slow[slow.index('id="spark-data">') + 16:]
    assert json.loads(sparks[:sparks.index("</script>")])[0] == [2.0, 3.0, 4.0]


def test_a_running_builds_page_says_how_many_failed_so_far_and_the_first_escaped(web, conn, rq_conn,
                                                                                  settings) -> None:
    build = add_build(rq_conn, conn, settings, SHA_A)
    store = Store(conn)
    store.builds.start_attempt(build.id, 1, "host.1")
    page = web.get(f"/build/proj/{SHA_A[:8]}").get_data(as_text=True)
    assert 'id="first-failure"' not in page and 'http-equiv="refresh"' in page  # it refreshes while it runs
    store.builds.set_progress(build.id, 7, 3, f"t.T.test_bad (name='{SCRIPT}')")
    page = web.get(f"/build/proj/{SHA_A[:8]}").get_data(as_text=True)
    said = page[page.index('id="first-failure"'):]
    said = said[:said.index("</p>")]
    assert "3 failed so far: <code>t.T.test_bad (name=&#39;&lt;script&gt;" in said and SCRIPT not in page
    assert "(the first after " in said and " s)" in said
    assert page.index('id="first-failure"') < page.index('class="facts"')  # near the top
    store.builds.finish(build.id, 1, "host.1", RunOutcome(Status.FAILED, [], Counts(total=1, failed=1)))
    page = web.get(f"/build/proj/{SHA_A[:8]}").get_data(as_text=True)
    assert "failed so far" not in page and "<th>first failure</th>" in page and SCRIPT not in page


def test_a_build_page_lists_its_order_dependent_tests_escaped(web, conn, rq_conn, settings) -> None:
    build = Build(id=keys.build_id("proj", SHA_B), repo="proj", url="/r", commit=SHA_B, branch="main")
    Store(rq_conn, settings).builds.submit(build)
    Store(conn).builds.start_attempt(build.id, 1, "host.1")
    hostile = f"t.T.test_later (name='{SCRIPT}')"
    outcome = RunOutcome(Status.PASSED, [TestResult(hostile, Outcome.PASSED, 0.1, order=0)], Counts(total=1, passed=1),
                         order_dependent=[hostile])
    Store(conn).builds.finish(build.id, 1, "host.1", outcome)
    page = web.get(f"/build/proj/{SHA_B[:8]}").get_data(as_text=True)
    assert "Order-dependent tests (1)" in page and SCRIPT not in page
    assert "t.T.test_later (name=&#39;&lt;script&gt;" in page
