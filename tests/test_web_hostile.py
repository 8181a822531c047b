"""Commit text never runs as script, in a real headless browser (Debian's chromium, as in
test_web_browser.py). Commits whose subjects are `<img src=x onerror=…>`, `<script>`, a `javascript:`
link, `<svg onload>` and an `<iframe srcdoc>`, and whose tests' ids, messages and output carry the same,
are built by real processes; then every page that shows them is opened — rq-dashboard's queues, job
lists and each job's page (which puts a job's description into the page as HTML), and Volt's own
index, repository, build, test, search, flaky, slow, runners, badge and JSON pages — each link to a
`javascript:` URL is clicked, and the test checks that no payload set its marker. On a job page the
payload is in the DOM (the `<img>` is there): the content policy is what stops it."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator

import pytest
import redis
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from support import GitRepo, run_rq_worker_burst, run_volt, wait_until
from test_web_browser import browser  # noqa: F401  (the fixture: headless Chromium)
from web_process import volt_web

from voltci import keys
from voltci.config import Settings
from voltci.jobqueue import volt_queue
from voltci.redis_server import RedisServer

pytestmark = pytest.mark.e2e  # Chromium, volt web, an observer, an rq worker and redis-server

SUBJECTS = [
    "<img src=x onerror=window.voltHacked='img-subject'>",
    "<script>window.voltHacked='script-subject'</script>",
    "<a class=jslink href=javascript:window.voltHacked='link-subject'>go</a>",
    "<svg onload=window.voltHacked='svg-subject'>",
    "<iframe srcdoc='<script>parent.voltHacked=1</script>'></iframe>",
]
TEXT = ("<img src=x onerror=window.voltHacked='img-text'>"
        "<a class=jslink href=javascript:window.voltHacked='link-text'>go</a>"
        "<script>window.voltHacked='script-text'</script>")
HOSTILE_TESTS = {
    "tests/__init__.py": "",
    "tests/test_hostile.py": (
        "import unittest\n\nTEXT = " + repr(TEXT) + "\n\n\n"
        "class Hostile(unittest.TestCase):\n"
        "    def test_fails_with_html(self):\n"
        "        print('output ' + TEXT)\n"
        "        self.fail('message ' + TEXT)\n\n"
        "    def test_id_with_html(self):\n"
        "        with self.subTest('sub ' + TEXT):\n"
        "            raise RuntimeError('error ' + TEXT)\n\n"
        "    def test_fine(self):\n"
        "        pass\n"
    ),
}
FAILED_JOB = "hostile-description"


@pytest.fixture(scope="module")
def hostile_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str], list[str]]]:
    """Five commits with hostile subjects built by real processes, a failed rq job with a hostile
    description, and `volt web` serving them: (base URL, shas newest last, rq job ids). Made once for
    the module, on a Redis of its own: the tests only read the pages."""
    tmp = tmp_path_factory.mktemp("hostile")
    server = RedisServer(tmp / "redis").start()
    rq_conn = redis.Redis.from_url(server.url)
    try:
        settings = Settings(redis_url=server.url, workspace_dir=str(tmp / "ws"), poll=0.2, build_timeout=60)
        repo = GitRepo(tmp / "repos" / "proj")
        shas = []
        for n, subject in enumerate(SUBJECTS):
            shas.append(repo.commit({**HOSTILE_TESTS, "n.txt": str(n)}, subject))
            observed = run_volt("observe", "--once", "--repo", str(repo.path), "--redis-url",
                                settings.effective_redis_url, env={"VOLT_WORKSPACE_DIR": settings.workspace_dir})
            assert observed.returncode == 0, observed.stderr
        volt_queue(rq_conn, settings.queue).enqueue_call("voltci.nonexistent.func", job_id=FAILED_JOB,
                                                         description=SUBJECTS[0] + SUBJECTS[2])
        assert run_rq_worker_burst(settings, timeout=300).returncode == 0
        jobs = [keys.job_id(keys.build_id("proj", sha), 1) for sha in shas]
        with volt_web(settings, tmp) as url:
            yield url, shas, jobs
    finally:
        rq_conn.close()
        server.stop()


def hacked(driver) -> object:
    """The marker a payload sets, after clicking every `javascript:` link of the page."""
    for link in driver.find_elements(By.CSS_SELECTOR, "a[href^='javascript:' i], a.jslink"):
        try:
            link.click()
        except WebDriverException:
            pass  # hidden or covered: the script that would have run is what matters
    return driver.execute_script("return window.voltHacked === undefined ? null : String(window.voltHacked)")


def test_rq_dashboard_runs_no_commit_text(browser, hostile_site) -> None:  # noqa: F811
    url, shas, jobs = hostile_site
    for page in ("/rq/", "/rq/0/view/workers", "/rq/0/view/jobs/volt/finished/8/asc/1",
                 "/rq/0/view/jobs/volt/failed/8/asc/1", "/rq/0/view/jobs/volt/finished/8/dsc/1"):
        browser.get(url + page)
        wait_until(lambda: browser.execute_script("return document.readyState") == "complete", page, 15)
        if "/view/jobs/" in page:
            wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "tr[data-role=job]"), f"the jobs of {page}", 15)
        assert hacked(browser) is None, page
    for job in [*jobs, FAILED_JOB]:
        browser.get(f"{url}/rq/0/view/job/{job}")
        wait_until(lambda: "Status" in browser.find_element(By.ID, "job-data").text, f"job {job}'s data", 15)
        assert hacked(browser) is None, job
    # the description went into the page as HTML — the policy, not the escaping, kept it from running
    browser.get(f"{url}/rq/0/view/job/{jobs[0]}")
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#job-data img[src=x]"), "the payload in the DOM", 15)
    assert hacked(browser) is None
    browser.get(f"{url}/rq/0/view/job/{jobs[2]}")
    links = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#job-data a.jslink"), "the link", 15)
    links[0].click()
    assert browser.execute_script("return window.voltHacked === undefined") is True


def test_a_reflected_queue_name_does_not_run(browser, hostile_site) -> None:  # noqa: F811
    """rq-dashboard puts the queue name of the URL into its script unescaped; Volt refuses the name."""
    url, _, _ = hostile_site
    for name in ("x')}});window.voltHacked='queue';$('x').on('y',function(){if(1){$(this).val('",
                 "x'</script><script>window.voltHacked='queue2'</script>"):
        browser.get(f"{url}/rq/0/view/jobs/{urllib.parse.quote(name, safe='')}/queued/8/asc/1")
        assert hacked(browser) is None, name
        assert browser.find_element(By.TAG_NAME, "h1").text == "404 Not Found"


def test_volt_pages_run_no_commit_text(browser, hostile_site) -> None:  # noqa: F811
    url, shas, _ = hostile_site
    pages = ["/", "/repo/proj", "/repo/proj?page=1&branch=main", "/repo/proj/flaky", "/repo/proj/slow", "/runners",
             "/badge/proj.svg", "/badge/proj.svg?branch=main", "/api/repos/proj/builds", "/metrics"]
    for sha in shas:
        pages += [f"/build/proj/{sha}", f"/build/proj/{sha}?q={urllib.parse.quote(TEXT)}", f"/api/builds/proj/{sha}",
                  f"/api/builds/proj/{sha}/log", f"/api/builds/proj/{sha}/tests?q=sub"]
    for page in pages:
        browser.get(url + page)
        assert hacked(browser) is None, page
    browser.get(f"{url}/build/proj/{shas[0]}")
    assert "message " + TEXT in browser.find_element(By.ID, "failing").text  # shown as text
    test_pages = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#failing a[href*='/test/']")]
    assert test_pages
    for page in test_pages:
        browser.get(page)
        assert "<img src=x onerror=" in browser.find_element(By.TAG_NAME, "body").text, page  # as text
        assert hacked(browser) is None, page
    browser.get(f"{url}/build/proj/{shas[-1]}")  # the search as you type lists the hostile test ids
    box = browser.find_element(By.CSS_SELECTOR, "#test-search input[name=q]")
    box.send_keys("onerror")
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#search-results table.found tr"), "the search", 15)
    assert "sub <img src=x" in browser.find_element(By.ID, "search-results").text
    assert hacked(browser) is None
