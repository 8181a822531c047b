"""A hostile commit's results, through real builds: one `volt worker` on a real Redis builds commit after
commit of one repository, each trying to make the runner read or keep too much — 100,000 failing tests
with random messages, a JUnit file of 200 MB, forged durations, a huge id, deep nesting, binary
garbage, a results file that is a FIFO or a link. After each, on the host: Redis grew by at most 16 MiB
(`INFO memory` used_memory before and after), the work-horse that read the output peaked under 256 MiB
(its VmHWM, read while it runs), the build ended with the status and reason designed, on its first
attempt, and the same worker is alive and takes the next build."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import Cluster
from support import ROOT, GitRepo, wait_until

from voltci.models import Build, Status
from voltci.runner.procs import children

pytestmark = pytest.mark.e2e

REDIS_GROWTH_MAX = 16 * 1024 * 1024
HORSE_PEAK_MAX_KIB = 256 * 1024
BUILD_WAIT_S = 600


class HorseWatch:
    """The peak RSS (VmHWM) of every work-horse a worker forks while it is watched, read from /proc
    every 20 ms: the horse is the process that reads a build's output."""

    def __init__(self, worker_pid: int):
        self.worker_pid, self.peak_kib = worker_pid, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> HorseWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            for pid in children(self.worker_pid):
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_kib = max(self.peak_kib, int(line.split()[1]))


class Host:
    """One worker, one repository; `build(files)` commits and builds, measuring Redis and the horse."""

    def __init__(self, cluster: Cluster, repo: GitRepo):
        self.cluster, self.repo = cluster, repo
        self.worker = cluster.worker("w1")
        wait_until(lambda: cluster.beat("w1"), "the worker's heartbeat", process=self.worker)
        self.watch = cluster.watch(repo)
        self.results: dict[str, tuple[Build, int, int]] = {}

    def used_memory(self) -> int:
        return int(self.cluster.conn.info("memory")["used_memory"])

    def build(self, files: dict[str, str | None], message: str) -> tuple[Build, int, int]:
        """Commit `files` and build the commit: the build as it ended, Redis' growth in bytes, and the
        work-horse's peak RSS in KiB."""
        self.repo.commit(files, message)
        before = self.used_memory()
        with HorseWatch(self.worker.pid) as horse:
            (queued,) = self.watch.poll()
            build = self.cluster.wait_final(queued.id, timeout=BUILD_WAIT_S)
        grown = self.used_memory() - before
        assert self.worker.poll() is None, "the worker died"
        assert build.attempt == 1 and build.results_stored == 1, (build.attempt, build.results_stored, build.reason)
        assert build.runner.startswith("w1"), build.runner
        assert grown <= REDIS_GROWTH_MAX, f"Redis grew by {grown / 2**20:.1f} MiB for {message}"
        assert horse.peak_kib < HORSE_PEAK_MAX_KIB, f"the work-horse peaked at {horse.peak_kib // 1024} MiB"
        return build, grown, horse.peak_kib

    def report(self, build: Build, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "voltci", "report", build.commit, *args], cwd=ROOT,
                              env=self.cluster.env(), capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    tmp = tmp_path_factory.mktemp("bounded")
    cluster = Cluster(tmp, build_timeout=600, heartbeat=1.0, heartbeat_ttl=6.0)
    try:
        repo = GitRepo(tmp / "repo")
        repo.commit(PASSING, "a passing test")
        running = Host(cluster, repo)
        (first,) = running.watch.poll()  # the first build makes the environment the others reuse
        assert cluster.wait_final(first.id, timeout=BUILD_WAIT_S).status is Status.PASSED
        yield running
    finally:
        cluster.stop()


PASSING = {"tests/__init__.py": "", "tests/test_ok.py": textwrap.dedent("""
    import unittest

    class Ok(unittest.TestCase):
        def test_ok(self):
            self.assertTrue(True)
""")}


def forging(host: Host, body: str) -> dict[str, str | None]:
    """A unittest build (the JUnit attacks' files removed) whose test replaces the collector's results
    file with what `body` writes to `path`, a name beside it: the collector writes on into the file it
    had open, the runner reads the forged one."""
    test = textwrap.dedent("""
        import json, os, sys, unittest

        OUT = sys.argv[sys.argv.index("--out") + 1]

        class Forge(unittest.TestCase):
            def test_forge(self):
                path = OUT + ".forged"
                good = json.dumps({"id": "tests.test_ok.Forge.test_forge", "outcome": "passed",
                                   "duration_s": 0.1, "message": ""})
                summary = json.dumps({"summary": {"tests_run": 2, "failures": 0, "errors": 0,
                                                  "skipped": 0, "import_failures": []}})
        """) + textwrap.indent(textwrap.dedent(body).strip(), " " * 8) + "\n        os.replace(path, OUT)\n"
    return unittest_build(host, {"tests/test_ok.py": test})


def unittest_build(host: Host, files: dict[str, str]) -> dict[str, str | None]:
    """`files`, and the JUnit attacks' `.volt.toml` and generator removed where the repository has them."""
    gone: dict[str, str | None] = {name: None for name in (".volt.toml", "gen.py") if (host.repo.path / name).exists()}
    return {**gone, **files}


def test_100k_failing_tests_with_random_messages_keep_redis_within_bounds(host) -> None:
    many = {"tests/test_ok.py": textwrap.dedent("""
        import base64, os, unittest

        def make(n):
            def test(self):
                self.fail(base64.b64encode(os.urandom(768)).decode())
            return test

        Many = type("Many", (unittest.TestCase,), {f"test_{n:06}": make(n) for n in range(100_000)})
    """)}
    build, grown, peak = host.build(many, "100,000 failing tests, 1 KiB random messages each")
    assert build.status is Status.FAILED and build.reason == ""
    assert (build.counts.total, build.counts.failed) == (100_000, 100_000)
    assert build.cut.messages_dropped > 90_000 and build.cut.tests_not_kept == 0
    shown = json.loads(host.report(build, "--json").stdout)
    assert shown["cut"] == build.cut.to_dict() and len(shown["tests"]) == 100_000
    messages = [t["message"] for t in shown["tests"] if t["message"]]
    assert 1000 < len(messages) <= 5000 and sum(len(m) for m in messages) <= 3 * 1024 * 1024
    text = host.report(build).stdout
    assert [line for line in text.splitlines() if line.startswith("cut:")] == [build.cut.line()]
    host.results["100k failing"] = (build, grown, peak)


JUNIT = '[tests]\ncommand = ["python", "gen.py"]\njunit = "report.xml"\n'


def test_a_200_mb_junit_file_is_read_as_a_stream(host) -> None:
    gen = textwrap.dedent("""
        import os
        block = "y" * (1 << 20)
        with open("report.xml", "w") as fh:
            fh.write("<testsuite><testcase classname='big' name='huge'><failure>HEAD")
            for _ in range(100):
                fh.write(block)
            fh.write("TAIL</failure></testcase>")
            for n in range(100):
                fh.write(f"<testcase classname='big' name='t{n}'><failure message='m'>")
                fh.write(os.urandom(512 * 1024).hex())
                fh.write("</failure></testcase>")
            fh.write("</testsuite>")
        print(os.path.getsize("report.xml"))
    """)
    build, grown, peak = host.build({".volt.toml": JUNIT, "gen.py": gen}, "a JUnit file of 200 MB")
    assert build.status is Status.FAILED, build.reason
    assert (build.counts.total, build.counts.failed) == (101, 101)
    assert build.cut.messages_shortened == 101 and build.cut.message_bytes_cut > 190 * 1024 * 1024
    shown = json.loads(host.report(build, "--json").stdout)
    huge = next(t for t in shown["tests"] if t["id"] == "big.huge")
    assert huge["message"].startswith("HEAD") and huge["message"].endswith("TAIL")
    assert "bytes of this message were cut here" in huge["message"]
    host.results["200 MB JUnit"] = (build, grown, peak)


JUNIT_ATTACKS = [
    ("10 million tiny test cases", """
        with open("report.xml", "w") as fh:
            fh.write("<testsuite>")
            for _ in range(1000):
                fh.write("<testcase name='t'/>" * 10_000)
            fh.write("</testsuite>")
     """, "report.xml has more than 2000000 test cases"),
    ("entities that expand a billion times", """
        laughs = "".join(f'<!ENTITY l{n} "' + f"&l{n - 1};" * 10 + '">' for n in range(1, 10))
        with open("report.xml", "w") as fh:
            fh.write('<?xml version="1.0"?><!DOCTYPE t [<!ENTITY l0 "lol">' + laughs + ']>'
                     "<testsuite><testcase name='&l9;'/></testsuite>")
     """, "report.xml declares a DOCTYPE"),
    ("an attribute of 200 MB", """
        with open("report.xml", "w") as fh:
            fh.write("<testsuite><testcase name='")
            for _ in range(200):
                fh.write("z" * (1 << 20))
            fh.write("'/></testsuite>")
     """, "report.xml has a tag, attribute or comment larger than 4 MiB"),
    ("elements nested 100,000 deep", """
        with open("report.xml", "w") as fh:
            fh.write("<testsuite>" + "<a>" * 100_000 + "</a>" * 100_000 + "</testsuite>")
     """, "report.xml nests elements deeper than 32"),
]


@pytest.mark.parametrize(("name", "writes", "reason"), JUNIT_ATTACKS, ids=[row[0] for row in JUNIT_ATTACKS])
def test_a_junit_file_past_a_bound_ends_the_build_error(host, name, writes, reason) -> None:
    build, grown, peak = host.build({".volt.toml": JUNIT, "gen.py": textwrap.dedent(writes)}, name)
    assert build.status is Status.ERROR
    assert build.reason.startswith(f"the test command exited with status 0 and left no usable results: {reason}")
    host.results[name] = (build, grown, peak)


FORGED_DURATION = """
    with open(path, "w") as fh:
        fh.write(good + "\\n")
        fh.write('{"id": "tests.forged", "outcome": "passed", "duration_s": VALUE}\\n')
        fh.write(summary + "\\n")
"""


@pytest.mark.parametrize(("value", "named"), [
    ("1e999", "(inf)"), ("NaN", "(nan)"), ("-1", "(-1)"), ('"x"', "('x')"), ("1" + "0" * 400, "(1000000")])
def test_a_forged_duration_ends_the_build_error_naming_it(host, value, named) -> None:
    build, grown, peak = host.build(forging(host, FORGED_DURATION.replace("VALUE", value)),
                                    f"a forged duration of {value[:12]}")
    assert build.status is Status.ERROR
    assert build.reason.startswith("the test results are not valid: results.jsonl line 2: duration_s is not a "
                                   "number of seconds from 0 to 1000000 "), build.reason
    assert named in build.reason and "\n" not in build.reason
    host.results[f"duration {value[:12]}"] = (build, grown, peak)


FORGERIES = [
    ("a huge id", """
        with open(path, "w") as fh:
            fh.write(json.dumps({"id": "tests.huge_" + "x" * 5_000_000, "outcome": "passed"}) + "\\n")
            fh.write(good + "\\n" + summary + "\\n")
     """, Status.PASSED, ""),
    ("JSON nested 100,000 deep", """
        with open(path, "w") as fh:
            fh.write(good + "\\n" + "[" * 100_000 + "]" * 100_000 + "\\n" + summary + "\\n")
     """, Status.ERROR, "the test results are not valid: results.jsonl line 2 nests deeper than 8 levels"),
    ("binary garbage", """
        with open(path, "wb") as fh:
            fh.write(os.urandom(4 << 20).replace(b"\\n", b"\\x00") + b"\\n")
     """, Status.ERROR, "the test results are not valid: results.jsonl line 1 is not JSON"),
    ("a line of 100 MB with no newline", """
        with open(path, "w") as fh:
            fh.write(good + "\\n" + '{"id": "')
            for _ in range(100):
                fh.write("x" * (1 << 20))
     """, Status.ERROR, "the test results are not valid: results.jsonl line 2 is longer than 8 MiB"),
    ("a record that is not an object", """
        with open(path, "w") as fh:
            fh.write(good + "\\n" + json.dumps(["tests.x", "passed"]) + "\\n" + summary + "\\n")
     """, Status.ERROR, "the test results are not valid: results.jsonl line 2: not a JSON object"),
    ("an outcome Volt does not know", """
        with open(path, "w") as fh:
            fh.write(json.dumps({"id": "tests.x", "outcome": "flaky"}) + "\\n" + summary + "\\n")
     """, Status.ERROR, "the test results are not valid: results.jsonl line 1: outcome is not one of passed, "
                        "failed, error, skipped ('flaky')"),
    ("a FIFO", """
        os.mkfifo(path)
     """, Status.ERROR, "the test results are not valid: cannot read results.jsonl: "),
    ("a link to a host file", """
        os.symlink("/etc/hostname", path)
     """, Status.ERROR, "the test results are not valid: cannot read results.jsonl: "),
]


@pytest.mark.parametrize(("name", "body", "status", "reason"), FORGERIES, ids=[row[0] for row in FORGERIES])
def test_forged_results_end_as_designed(host, name, body, status, reason) -> None:
    build, grown, peak = host.build(forging(host, body), name)
    assert build.status is status, build.reason
    assert build.reason.startswith(reason), build.reason
    assert "\n" not in build.reason and len(build.reason) < 300
    if name == "a huge id":
        shown = json.loads(host.report(build, "--json").stdout)
        ids = [t["id"] for t in shown["tests"]]
        assert len(ids) == 2 and max(map(len, ids)) <= 1024 and build.cut.ids_shortened == 1
        assert shown["cut"]["ids_shortened"] == 1
    if name == "a FIFO":
        assert "not a regular file" in build.reason
    if name == "a link to a host file":
        assert "link" in build.reason
    host.results[name] = (build, grown, peak)


def test_the_worker_that_read_all_of_it_takes_the_next_build(host) -> None:
    build, _, _ = host.build(unittest_build(host, PASSING), "a passing test again")
    assert build.status is Status.PASSED and build.counts.passed == 1 and not build.cut
    assert host.cluster.procs["w1"].pid == host.worker.pid
