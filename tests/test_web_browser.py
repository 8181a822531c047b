"""The web page in a real headless browser (Debian's chromium and chromedriver, installed by
.ci/packages): a failed build built by real processes, its failing test and traceback, the way back
to the history, a 404, and HTML from a test name that must not run. A screenshot of the build page
is kept in artifacts/ as an artifact of the run."""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.request

import pytest
from sample_project import FAILING, PASSING
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from support import ROOT, child_env, run_rq_worker_burst, run_volt, wait_until

from voltci.redis_server import free_port

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
