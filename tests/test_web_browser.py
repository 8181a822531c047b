"""The web page in a real headless browser (Debian's chromium and chromedriver, installed by
.ci/packages): a failed build built by real processes, its failing test and traceback, the way back
to the history, a 404, and HTML from a test name that must not run; then, on a stored history, the
repository's trend chart (a bar per build, coloured by status, read from the SVG) and the tests chart
below it (a point over each bar, no label or point cut at the edges), a build page's slowest tests
(below its output, only when they took measurable time, timed as every other table times them), a
test's history after pass → fail → pass, the search finding one test among 25,000 in under a second
of page time, and the pages without JavaScript. Screenshots of the build, repository, search and
test-history pages are kept in artifacts/ as artifacts of the run."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request

import pytest
import redis
from sample_project import FAILING, PASSING
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from support import ROOT, child_env, run_rq_worker_burst, run_volt, wait_until

from voltci import keys
from voltci.config import Settings
from voltci.models import Build, Counts, Outcome, RunOutcome, Status, TestResult
from voltci.pulls import PullState
from voltci.redis_server import RedisServer, free_port
from voltci.store import Store
from voltci.web import server as web_server

pytestmark = pytest.mark.e2e  # every test here starts processes: Chromium, volt web, redis-server

ARTIFACTS = ROOT / "artifacts"
SCRIPT = "<script>window.voltHacked=1</script>"
HOSTILE = {
    "tests/test_hostile.py": (
        "import unittest\n\n\nclass Hostile(unittest.TestCase):\n"
        "    def test_named_with_html(self):\n"
        f"        with self.subTest(name={SCRIPT!r}):\n"
        f"            self.fail({SCRIPT!r})\n"
    ),
}
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,1600"]


@pytest.fixture
def browser(tmp_path):
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and chromedriver, "chromium and chromedriver are missing: run `bash .ci/packages`"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def web_url(settings, make_repo, tmp_path):
    """A failed build made by real processes, and `volt web` serving it."""
    repo = make_repo()
    sha = repo.commit({**PASSING, **FAILING, **HOSTILE}, "Break things <b>loudly</b>")
    observed = run_volt("observe", "--once", "--repo", str(repo.path), "--redis-url", settings.effective_redis_url,
                        env={"VOLT_WORKSPACE_DIR": settings.workspace_dir})
    assert observed.returncode == 0, observed.stderr
    assert run_rq_worker_burst(settings).returncode == 0
    port = free_port()
    with open(tmp_path / "web.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "voltci", "web", "--port", str(port),
                                 "--redis-url", settings.effective_redis_url],
                                env=child_env(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: urllib.request.urlopen(url + "/", timeout=2).read(), "the web page", 30, ignoring=(OSError,),
               process=proc)
    yield url, sha
    proc.terminate()
    proc.wait(timeout=10)


def test_failed_build_page_in_a_real_browser(browser, web_url) -> None:
    url, sha = web_url
    browser.get(url + "/")
    browser.find_element(By.LINK_TEXT, "proj").click()
    browser.find_element(By.LINK_TEXT, sha[:10]).click()
    assert browser.current_url == f"{url}/build/proj/{sha}"
    assert browser.find_element(By.ID, "status").text == "failed"

    failing = browser.find_element(By.ID, "failing")
    assert "tests.test_broken.TestBroken.test_assert" in failing.text
    traceback = failing.find_elements(By.CSS_SELECTOR, "details[open] pre.traceback")[0]
    assert traceback.is_displayed() and "AssertionError: 2 != 3 : arithmetic" in traceback.text
    assert SCRIPT in failing.text  # shown as text …
    assert browser.execute_script("return window.voltHacked") is None  # … never run
    timed = [td.text for td in browser.find_elements(By.CSS_SELECTOR,
                                                     "#slowest td:nth-child(3), #tests td:nth-child(3)")]
    assert timed and "0ms" not in timed  # a test under a millisecond reads <1ms, in every table
    assert "<1ms" not in [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#slowest td:nth-child(3)")]
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "build-page.png"))

    browser.find_element(By.ID, "history-link").click()
    assert browser.current_url == f"{url}/repo/proj"
    history = browser.find_element(By.ID, "history").text
    assert sha[:10] in history and "Break things <b>loudly</b>" in history

    browser.get(f"{url}/build/proj/ffffffff")
    assert browser.find_element(By.TAG_NAME, "h1").text == "404 Not Found"
    browser.get(f"{url}/repo/proj?page=abc")
    assert browser.find_element(By.TAG_NAME, "h1").text == "400 Bad Request"


def test_badge_renders_as_an_image(browser, web_url) -> None:
    url, _ = web_url
    browser.get(url + "/repo/proj")
    width = browser.execute_script(
        "const img = document.querySelector('img[alt=status]'); return img.complete ? img.naturalWidth : 0;")
    assert width > 40


# ---------------------------------------------------------------- charts, test history, search

STATUS_CYCLE = [Status.PASSED, Status.FAILED, Status.PASSED, Status.ERROR, Status.PASSED, Status.TIMEOUT,
                Status.PASSED, Status.CANCELLED, Status.PASSED, Status.PASSED]
COLOURS = {"passed": "rgb(46, 125, 50)", "failed": "rgb(198, 40, 40)", "error": "rgb(106, 27, 154)",
           "timeout": "rgb(239, 108, 0)", "cancelled": "rgb(97, 97, 97)"}
SEQUENCE_TEST = "tests.test_seq.TestSeq.test_changes"
HOSTILE_TEST = f"tests.test_hostile.Hostile.test_named (name='{SCRIPT}')"
BIG_TESTS = 25_000


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t))


def ended(store: Store, repo: str, n: int, status: Status, tests: list[TestResult], branch: str = "main",
          start: float = 0.0) -> Build:
    """Build `n` of `repo`, an hour after build n - 1, ended with `status` and `tests`."""
    sha = f"{n:06x}".ljust(40, "d" if repo == "proj" else "e")
    queued = (start or time.time() - 40 * 3600) + n * 3600
    build = Build(id=keys.build_id(repo, sha), repo=repo, url=f"/srv/{repo}", commit=sha, branch=branch,
                  subject=f"Change {n} <b>of {repo}</b>", author="Dev <dev@example.org>", queued_at=iso(queued),
                  started_at=iso(queued + 5 + n), finished_at=iso(queued + 65 + 3 * n), duration_s=60.0 + 2 * n,
                  runner="host.1")
    failed = sum(1 for t in tests if t.outcome in (Outcome.FAILED, Outcome.ERROR))
    counts = Counts(total=len(tests), passed=len(tests) - failed, failed=failed)
    output = "".join("." * 70 + "\n" for _ in range(300)) + f"{len(tests)} tests\n"
    store.builds.record_finished(build, RunOutcome(status, tests, counts, "", output[-300:]), output, queued)
    stored = store.records.get_build(build.id)
    assert stored is not None
    return stored


@pytest.fixture(scope="module")
def charts_site(tmp_path_factory):
    """A Redis of its own holding: `proj`, 30 builds of mixed statuses (build 29 has 25,000 tests);
    `seq`, whose one test passes, fails, then passes; and `volt web` serving it in this process."""
    server = RedisServer(tmp_path_factory.mktemp("charts-redis")).start()
    settings = Settings(redis_url=server.url, workspace_dir=str(tmp_path_factory.mktemp("ws")))
    store = Store(redis.Redis.from_url(server.url, decode_responses=True), settings)
    store.repos.register("proj", "/srv/proj", ["main"])
    store.repos.register("seq", "/srv/seq", ["main"])
    builds = []
    for n in range(30):
        status = STATUS_CYCLE[n % len(STATUS_CYCLE)]
        count = BIG_TESTS if n == 29 else 20
        tests = [TestResult(f"tests.test_mod{i % 7}.TestCase{i % 13}.test_number_{i}",
                            Outcome.FAILED if status is Status.FAILED and i == 3 else Outcome.PASSED,
                            0.002 * (i % 50) + (1.5 if i == 5 else 0), "AssertionError: 3" if i == 3 else "", i)
                 for i in range(count)] if status not in (Status.ERROR, Status.CANCELLED) else []
        if tests:
            tests.append(TestResult(HOSTILE_TEST, Outcome.FAILED, 0.01, f"AssertionError: {SCRIPT}", count))
            status = Status.FAILED if status is Status.PASSED and n % 2 else status
        builds.append(ended(store, "proj", n, status, tests))
    seq = [ended(store, "seq", n, status, [TestResult(SEQUENCE_TEST, outcome, 0.1 * (n + 1), message, 0)])
           for n, (status, outcome, message) in enumerate([(Status.PASSED, Outcome.PASSED, ""),
                                                           (Status.FAILED, Outcome.FAILED, "AssertionError: 1 != 2"),
                                                           (Status.PASSED, Outcome.PASSED, "")])]
    store.repos.register("quick", "/srv/quick", ["main"])  # a build whose tests all took under a millisecond
    builds.append(ended(store, "quick", 0, Status.PASSED, [TestResult(f"tests.test_q.Q.test_{i}", Outcome.PASSED,
                                                                      0.0001 * i, "", i) for i in range(5)]))
    web, thread = web_server.start(settings, "127.0.0.1", 0)
    quick = builds.pop()
    yield web_server.url_of(web).rstrip("/"), builds, seq, quick
    web.shutdown()
    thread.join(timeout=10)
    server.stop()


def wait_for(browser, condition, timeout: float = 10):
    return WebDriverWait(browser, timeout).until(lambda driver: condition())


def text_of(browser, by: str, value: str) -> str:
    """An element's text, "" while a page that follows a click is not there yet (none, or the old one's)."""
    try:
        return browser.find_element(by, value).text
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def test_repository_trend_has_a_bar_per_build_coloured_by_its_status(browser, charts_site) -> None:
    url, builds, _, _ = charts_site
    browser.get(f"{url}/repo/proj")
    bars = wait_for(browser, lambda: (found := browser.find_elements(
        By.CSS_SELECTOR, "#trend-chart .ct-series-duration line.ct-bar")) and len(found) >= 30 and found)
    assert len(bars) == len(builds) == 30
    drawn = [(bar.get_attribute("data-status"), bar.value_of_css_property("stroke")) for bar in bars]
    assert drawn == [(b.status.value, COLOURS[b.status.value]) for b in builds]  # oldest first
    links = browser.find_elements(By.CSS_SELECTOR, "#trend-chart .ct-series-duration a")
    assert [a.get_dom_attribute("href") for a in links] == [f"/build/proj/{b.commit}" for b in builds]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#tests-chart .ct-series-tests .ct-line")) == 1
    assert browser.execute_script("return window.voltHacked") is None
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "repository-page.png"))
    browser.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", bars[1])
    wait_for(browser, lambda: browser.current_url == f"{url}/build/proj/{builds[1].commit}")
    assert browser.find_element(By.ID, "status").text == builds[1].status.value


# Where each label's text, each point and each bar lands on the page, per chart (client pixels).
GEOMETRY = """
const geometry = {};
for (const chart of document.querySelectorAll('[data-chart]')) {
  const svg = chart.querySelector('svg');
  if (!svg) continue;
  const box = svg.getBoundingClientRect();
  const inside = (r) => r.left >= box.left - 0.5 && r.right <= box.right + 0.5 && r.top >= box.top - 0.5 &&
                        r.bottom <= box.bottom + 0.5;
  const cut = [];
  for (const label of svg.querySelectorAll('.ct-label')) {
    const text = document.createRange();
    text.selectNodeContents(label);
    if (label.textContent && !inside(text.getBoundingClientRect())) cut.push('label ' + label.textContent);
  }
  const centres = {};
  for (const element of svg.querySelectorAll('.ct-point, .ct-bar')) {
    const r = element.getBoundingClientRect();
    const half = parseFloat(getComputedStyle(element).strokeWidth) / 2;
    const x = r.left + r.width / 2, y = r.top + r.height / 2;
    const round = element.classList.contains('ct-point');
    const drawn = round ? {left: x - half, right: x + half, top: y - half, bottom: y + half}
                        : {left: x - half, right: x + half, top: r.top, bottom: r.bottom};
    if (!inside(drawn)) cut.push(element.getAttribute('class') + ' ' + element.getAttribute('data-commit'));
    if (!element.closest('.ct-series-wait')) (centres[element.getAttribute('data-commit')] ||= []).push(x);
  }
  geometry[chart.id] = {cut: cut, centres: centres};
}
return geometry;
"""


def test_the_tests_chart_stands_under_the_bars_and_cuts_nothing(browser, charts_site) -> None:
    url, builds, _, _ = charts_site
    browser.get(f"{url}/repo/proj")
    wait_for(browser, lambda: len(browser.find_elements(By.CSS_SELECTOR, "#tests-chart .ct-point")) >= 20)
    geometry = browser.execute_script(GEOMETRY)
    assert geometry["trend-chart"]["cut"] == [] and geometry["tests-chart"]["cut"] == [], geometry
    bars = geometry["trend-chart"]["centres"]
    points = geometry["tests-chart"]["centres"]
    with_tests = [b.short for b in builds if b.counts.total]
    assert sorted(points) == sorted(with_tests) and all(len(points[c]) == 2 for c in with_tests)  # tests, failures
    assert sorted(bars) == sorted(b.short for b in builds)
    column = (bars[builds[1].short][0] - bars[builds[0].short][0])
    off = {commit: max(abs(x - bars[commit][0]) for x in xs) for commit, xs in points.items()}
    assert max(off.values()) <= 1, (column, off)  # not half a column (~18 px here) to the left


def test_build_page_puts_measurable_slowest_tests_below_the_output_timed_as_elsewhere(browser, charts_site) -> None:
    url, builds, _, quick = charts_site
    browser.get(f"{url}/build/proj/{builds[1].commit}")
    slowest = {row.find_element(By.TAG_NAME, "code").text: row.find_elements(By.TAG_NAME, "td")[2].text
               for row in browser.find_elements(By.CSS_SELECTOR, "#slowest tr")[1:]}
    assert len(slowest) == 10 and "<1ms" not in slowest.values() and "0ms" not in slowest.values(), slowest
    assert slowest["tests.test_mod5.TestCase5.test_number_5"] == "1.5s"
    below = browser.execute_script("return document.getElementById('log').compareDocumentPosition("
                                   "document.getElementById('slowest')) & Node.DOCUMENT_POSITION_FOLLOWING")
    assert below, "the slowest tests come before the output"
    others = {row.find_element(By.TAG_NAME, "code").text: row.find_elements(By.TAG_NAME, "td")[2].text
              for row in browser.find_elements(By.CSS_SELECTOR, "#tests tr")[1:]}
    both = set(slowest) & set(others)
    assert len(both) >= 8 and all(slowest[t] == others[t] for t in both), (slowest, others)
    fastest = "tests.test_mod0.TestCase0.test_number_0"  # 0 ms as the trail keeps it, 0.0 s as its result says
    assert others[fastest] == "<1ms"
    box = browser.find_element(By.CSS_SELECTOR, "#test-search input[name=q]")
    box.send_keys("test_number_0")
    results = browser.find_element(By.ID, "search-results")
    wait_for(browser, lambda: results.get_attribute("data-query") == "test_number_0")
    assert [td.text for td in results.find_elements(By.CSS_SELECTOR, "table.found td")][1:] == ["passed", "<1ms"]
    browser.get(f"{url}/build/proj/{builds[1].commit}?q=test_number_0")  # the same found by the server
    assert [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#search-results table.found td")][1:] == [
        "passed", "<1ms"]
    ARTIFACTS.mkdir(exist_ok=True)
    browser.get(f"{url}/build/proj/{builds[1].commit}")
    browser.execute_script("window.scrollTo(0, document.getElementById('slowest').offsetTop - 400)")  # the output's end
    assert browser.save_screenshot(str(ARTIFACTS / "build-page-slowest.png"))
    browser.get(f"{url}/build/quick/{quick.commit}")  # five tests, none of a millisecond: no table of them
    assert not browser.find_elements(By.ID, "slowest")
    rows = browser.find_elements(By.CSS_SELECTOR, "#tests tr")[1:]
    assert [row.find_elements(By.TAG_NAME, "td")[2].text for row in rows] == ["<1ms"] * 5


def test_a_branch_without_builds_is_an_explained_empty_chart(browser, charts_site) -> None:
    url, _, _, _ = charts_site
    browser.get(f"{url}/repo/proj?branch=nosuch")
    assert "No builds of branch nosuch yet" in browser.find_element(By.ID, "trend-empty").text
    assert not browser.find_elements(By.CSS_SELECTOR, ".ct-bar")


def test_test_history_shows_pass_fail_pass_in_order(browser, charts_site) -> None:
    url, _, seq, _ = charts_site
    browser.get(f"{url}/repo/seq")
    browser.find_element(By.LINK_TEXT, seq[1].short).click()
    browser.find_element(By.CSS_SELECTOR, "#failing a.test-history").click()
    assert browser.find_element(By.ID, "test-id").text == SEQUENCE_TEST
    cells = browser.find_elements(By.CSS_SELECTOR, "#strip a.cell")
    assert [c.get_attribute("data-outcome") for c in cells] == ["passed", "failed", "passed"]
    assert [c.get_attribute("href") for c in cells] == [f"{url}/build/seq/{b.commit}" for b in seq]
    points = wait_for(browser, lambda: browser.find_elements(By.CSS_SELECTOR, "#duration-chart .ct-point"))
    assert [p.get_attribute("data-outcome") for p in points] == ["passed", "failed", "passed"]
    assert seq[1].short in browser.find_element(By.ID, "last-failure").text
    assert "AssertionError: 1 != 2" in browser.find_element(By.ID, "last-failure").get_attribute("textContent")
    assert browser.find_element(By.CSS_SELECTOR, "#summary time").get_attribute("title")  # the exact time on hover
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "test-history-page.png"))


def test_search_finds_one_test_among_25000_in_under_a_second(browser, charts_site) -> None:
    url, builds, _, _ = charts_site
    big = builds[29]
    browser.get(f"{url}/build/proj/{big.commit}")
    assert f"among {BIG_TESTS + 1} tests" in browser.find_element(By.ID, "test-search").text
    assert len(browser.page_source) < 200_000  # not 25,000 rows
    box = browser.find_element(By.CSS_SELECTOR, "#test-search input[name=q]")
    wanted = "tests.test_mod0.TestCase4.test_number_24444"
    box.send_keys("test_number_24444")
    results = browser.find_element(By.ID, "search-results")
    wait_for(browser, lambda: results.get_attribute("data-query") == "test_number_24444")
    assert results.find_element(By.ID, "search-count").text == "1 match"
    assert int(results.get_attribute("data-ms")) < 1000, results.get_attribute("data-ms")
    link = results.find_element(By.CSS_SELECTOR, "table.found a")
    assert link.text == wanted
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "build-page-search.png"))
    link.click()
    assert browser.find_element(By.ID, "test-id").text == wanted


def test_names_with_html_stay_text_on_the_new_pages(browser, charts_site) -> None:
    url, builds, _, _ = charts_site
    browser.get(f"{url}/build/proj/{builds[1].commit}")
    failing = browser.find_element(By.ID, "failing")
    assert HOSTILE_TEST in failing.text
    failing.find_elements(By.CSS_SELECTOR, "a.test-history")[-1].click()
    assert browser.find_element(By.ID, "test-id").text == HOSTILE_TEST
    assert SCRIPT in browser.find_element(By.ID, "last-failure").get_attribute("textContent")
    assert browser.execute_script("return window.voltHacked") is None
    browser.get(f"{url}/build/proj/{builds[1].commit}?q=hostile")
    assert browser.find_element(By.CSS_SELECTOR, "#search-results table.found code").text == HOSTILE_TEST
    assert browser.execute_script("return window.voltHacked") is None


def test_without_javascript_the_figures_are_there(tmp_path, charts_site) -> None:
    url, builds, _, _ = charts_site
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}", "--blink-settings=scriptEnabled=false"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        driver.get(f"{url}/repo/proj")
        assert not driver.find_elements(By.CSS_SELECTOR, ".ct-bar")  # no chart …
        rows = driver.find_elements(By.CSS_SELECTOR, "#history tr")[1:]
        assert len(rows) == 25 and builds[-1].short in rows[0].text  # … the same builds as a table
        assert "The charts need JavaScript" in driver.find_element(By.ID, "trends").text
        driver.get(f"{url}/build/proj/{builds[29].commit}")
        box = driver.find_element(By.CSS_SELECTOR, "#test-search input[name=q]")
        box.send_keys("test_number_24444\n")  # the form asks the server
        assert "1 match" in driver.find_element(By.ID, "search-count").text
    finally:
        driver.quit()


# ---------------------------------------------------------------- pull requests

def test_pull_requests_page_lists_them_and_approves_one_with_the_token(browser, tmp_path) -> None:
    """A repository's pull requests, reached from its page: one built (its build linked, its title's HTML
    shown as text), one from a fork waiting; Approve without the token is refused, with it the pull
    request's head is queued and the page says so."""
    server = RedisServer(tmp_path / "redis").start()
    settings = Settings(redis_url=server.url, workspace_dir=str(tmp_path / "ws"), web_token="tok3n")
    store = Store(redis.Redis.from_url(server.url, decode_responses=True), settings)
    store.repos.register("proj", "/srv/proj", ["main"], pull_requests=True, trusted_authors=["alice"])
    built = store.pulls.seen("proj", PullState(7, "7" * 40, "main", "alice", True, True, True,
                                               title=f"Fix it {SCRIPT}"))[2]
    assert built is not None
    assert store.pulls.seen("proj", PullState(9, "9" * 40, "main", "mallory", True, True, False,
                                              title="Please run me"))[0] == "waiting"
    web, thread = web_server.start(settings, "127.0.0.1", 0)
    url = web_server.url_of(web).rstrip("/")
    try:
        browser.get(f"{url}/repo/proj")
        browser.find_element(By.ID, "pulls-link").click()
        assert browser.current_url == f"{url}/repo/proj/pulls"
        seven = browser.find_element(By.ID, "pull-7")
        assert SCRIPT in seven.text and "queued" in seven.text and "7777777777" in seven.text
        assert browser.execute_script("return window.voltHacked") is None
        nine = browser.find_element(By.ID, "pull-9")
        assert "waits for approval" in nine.text and "mallory (from a fork)" in nine.text
        ARTIFACTS.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(ARTIFACTS / "pull-requests-page.png"))
        nine.find_element(By.NAME, "token").send_keys("wrong")
        nine.find_element(By.TAG_NAME, "button").click()
        wait_for(browser, lambda: text_of(browser, By.TAG_NAME, "h1") == "403 Forbidden")  # the answer, loaded
        assert store.pulls.get("proj", 9).state == "waiting"
        browser.get(f"{url}/repo/proj/pulls")
        nine = browser.find_element(By.ID, "pull-9")
        nine.find_element(By.NAME, "token").send_keys("tok3n")
        nine.find_element(By.TAG_NAME, "button").click()
        wait_for(browser, lambda: "approved by the web page" in text_of(browser, By.ID, "pull-9"))  # the new page
        nine = browser.find_element(By.ID, "pull-9")
        assert "approved by the web page" in nine.text and "queued" in nine.text, nine.text
        assert store.pulls.get("proj", 9).state == "open" and store.queue.depth() == 2
        browser.find_element(By.LINK_TEXT, "← proj").click()
        assert "#7 → main" in browser.find_element(By.ID, "history").text
    finally:
        web.shutdown()
        thread.join(timeout=10)
        server.stop()
