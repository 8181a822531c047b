"""Matrix builds end to end: real runners on this host's interpreters, each leg on its own Python with
its own variables, environment and log; one report; a lost leg run again elsewhere; a sharded leg;
a leg whose Python no runner has; a wrong `[matrix]`."""

from __future__ import annotations

import json

import pytest
import xmlschema
from cluster import SLOW_TEST, Cluster
from support import SCHEMAS, assert_one_line_error, run_volt, wait_until

from voltci.models import AttemptState, Status
from voltci.runner.interpreters import interpreters, own_version
from voltci.store import Store

OWN = own_version()
OTHER = next((v for v in reversed(interpreters()) if v != OWN and tuple(map(int, v.split("."))) >= (3, 9)), None)
needs_two = pytest.mark.skipif(OTHER is None, reason="this host has one Python 3.9+ only")

SUITE = {
    "tests/__init__.py": "",
    "tests/test_legs.py": (
        "import os, sys, unittest\n\n\n"
        "class Legs(unittest.TestCase):\n"
        "    def test_where(self):\n"
        "        print('PYTHON %d.%d FLAVOR %s' % (sys.version_info[:2] + (os.environ['FLAVOR'],)))\n\n"
        "    def test_flavor(self):\n"
        f"        self.assertNotEqual(('%d.%d' % sys.version_info[:2], os.environ['FLAVOR']), ({OTHER!r}, 'b'))\n\n"
        "    def test_once(self):\n"
        "        if not os.path.exists('.tried'):\n"
        "            open('.tried', 'w').close()\n"
        "            self.fail('fails the first time in each leg')\n"
    ),
}


def volt_toml(pythons: list[str], extra: str = "") -> str:
    return f"[matrix]\npython = {json.dumps(pythons)}\n{extra}"


@pytest.fixture
def cluster(tmp_path):
    cluster = Cluster(tmp_path)
    yield cluster
    cluster.stop()


def report_json(cluster: Cluster, sha: str, *more: str) -> dict:
    proc = run_volt("report", sha, "--json", *more, "--redis-url", cluster.server.url)
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)


@needs_two
def test_each_leg_runs_on_its_python_with_its_variables_and_the_build_reports_once(cluster, make_repo,
                                                                                  tmp_path) -> None:
    repo = make_repo()
    toml = volt_toml([OWN, OTHER, "3.99"], 'env = [{FLAVOR = "a"}, {FLAVOR = "b"}]\n'
                                           'exclude = [{python = "3.99", FLAVOR = "b"}]\n')
    sha = repo.commit({".volt.toml": toml, **SUITE}, "a matrix")
    cluster.worker("r1")
    cluster.worker("r2")
    cluster.scheduler()
    wait_until(lambda: cluster.beat("r1") and cluster.beat("r2"), "both runners")
    assert OWN in cluster.beat("r1")["pythons"] and OTHER in cluster.beat("r1")["pythons"]
    (build,) = cluster.watch(repo).poll()
    done = cluster.wait_final(build.id)

    data = report_json(cluster, sha)
    legs = {leg["name"]: leg for leg in data["legs"]}
    assert list(legs) == [f"py{OWN}-FLAVOR=a", f"py{OWN}-FLAVOR=b", f"py{OTHER}-FLAVOR=a", f"py{OTHER}-FLAVOR=b",
                          "py3.99-FLAVOR=a"]
    assert {name: leg["status"] for name, leg in legs.items()} == {
        f"py{OWN}-FLAVOR=a": "passed", f"py{OWN}-FLAVOR=b": "passed", f"py{OTHER}-FLAVOR=a": "passed",
        f"py{OTHER}-FLAVOR=b": "failed", "py3.99-FLAVOR=a": "error"}
    assert "no live runner has python 3.99" in legs["py3.99-FLAVOR=a"]["reason"]
    assert legs[f"py{OTHER}-FLAVOR=a"]["env"] == {"FLAVOR": "a"} and legs[f"py{OTHER}-FLAVOR=a"]["python"] == OTHER
    assert (done.status, data["status"]) == (Status.ERROR, "error") and "py3.99-FLAVOR=a: no live runner" in done.reason
    assert data["counts"] == {"total": 12, "passed": 11, "failed": 1, "errors": 0, "skipped": 0, "flaky": 4}
    by_leg = {(t["leg"], t["id"].rsplit(".", 1)[1]): t for t in data["tests"]}
    assert len(by_leg) == len(data["tests"]) == 12  # the same test in four legs is four entries
    assert by_leg[(f"py{OTHER}-FLAVOR=b", "test_flavor")]["outcome"] == "failed"
    assert all(by_leg[(leg, "test_once")].get("flaky") for leg in list(legs)[:4])  # re-run per leg

    # Each leg's own log: its interpreter, its variables, its own environment.
    made = set()
    for name, (python, flavor) in {f"py{OWN}-FLAVOR=a": (OWN, "a"), f"py{OTHER}-FLAVOR=b": (OTHER, "b"),
                                   f"py{OTHER}-FLAVOR=a": (OTHER, "a")}.items():
        log = run_volt("log", sha, "--leg", name, "--redis-url", cluster.server.url)
        assert log.returncode == 0 and f"PYTHON {python} FLAVOR {flavor}" in log.stdout, log.stdout
        made |= {line for line in log.stdout.splitlines() if "the environment" in line}
    assert len({line.split()[-1] for line in made}) == 3
    assert "a matrix of 5 legs" in run_volt("log", sha, "--redis-url", cluster.server.url).stdout
    assert_one_line_error(run_volt("log", sha, "--leg", "py2.7", "--redis-url", cluster.server.url),
                          f"has no leg 'py2.7'; its legs: py{OWN}-FLAVOR=a")

    text = run_volt("report", sha, "--junit", str(tmp_path / "junit.xml"), "--redis-url", cluster.server.url).stdout
    assert f"=== leg py{OTHER}-FLAVOR=b: 1 failing" in text and "leg py3.99-FLAVOR=a: error" in text
    xmlschema.XMLSchema(str(SCHEMAS / "junit-windyroad.xsd")).validate(str(tmp_path / "junit.xml"))
    assert (tmp_path / "junit.xml").read_text().count("<testsuite ") == 5


def test_a_leg_lost_with_its_runner_runs_again_elsewhere(cluster, make_repo) -> None:
    repo = make_repo()
    repo.commit({".volt.toml": volt_toml([OWN], 'env = [{N = "1"}, {N = "2"}]\n'), **SLOW_TEST}, "slow legs")
    cluster.worker("r1", FAULT_SLEEP="4")
    cluster.scheduler()
    wait_until(lambda: cluster.beat("r1"), "r1")
    (build,) = cluster.watch(repo).poll()
    beat = wait_until(lambda: (b := cluster.beat("r1")) and "-L" in b["build"] and
                      cluster.build(b["build"]).status is Status.RUNNING and b, "r1 to run a leg")
    cluster.kill_runner("r1")
    cluster.worker("r2", FAULT_SLEEP="4")
    done = cluster.wait_final(build.id)
    assert done.status is Status.PASSED and done.results_stored == 1, done.reason
    lost = Store(cluster.conn).records.get_build(beat["build"])
    assert lost.attempt == 2 and lost.runner == "r2"
    first = Store(cluster.conn).records.get_attempts(lost.id)[0]
    assert first.state is AttemptState.LOST and "r1" in first.reason


def test_a_leg_is_itself_split_into_shards_from_its_own_timings(tmp_path, make_repo) -> None:
    cluster = Cluster(tmp_path, shard_threshold=20)
    try:
        repo = make_repo()
        suite = {"tests/__init__.py": ""}
        for module in range(3):
            suite[f"tests/test_m{module}.py"] = "import unittest\n\n\nclass T(unittest.TestCase):\n" + "".join(
                f"    def test_{n}(self):\n        pass\n" for n in range(10))
        sha = repo.commit({".volt.toml": volt_toml([OWN]), **suite}, "one leg, many tests")
        cluster.worker("r1")
        cluster.worker("r2")
        cluster.scheduler()
        wait_until(lambda: cluster.beat("r1") and cluster.beat("r2"), "both runners")
        (build,) = cluster.watch(repo).poll()
        assert cluster.wait_final(build.id).status is Status.PASSED
        (leg,) = Store(cluster.conn).records.get_legs(build.id)
        assert leg.shards == 2 and not leg.shard_rest  # split by module: no durations of this leg yet
        assert {s.runner for s in Store(cluster.conn).records.get_shards(leg.id)} == {"r1", "r2"}
        data = report_json(cluster, sha)
        assert data["counts"]["total"] == 30 and {t["leg"] for t in data["tests"]} == {f"py{OWN}"}
        assert len(Store(cluster.conn).history.timings(build.repo, f"py{OWN}").tests) == 30

        repo.commit({"README": "again\n"}, "the next commit")
        (second,) = cluster.watch(repo).poll()
        assert cluster.wait_final(second.id).status is Status.PASSED
        (again,) = Store(cluster.conn).records.get_legs(second.id)
        assert again.shards == 2 and again.shard_rest  # planned from this leg's recorded timings
    finally:
        cluster.stop()


@pytest.mark.parametrize("toml, key", [
    ("[matrix]\npython = []\n", "'matrix.python'"),
    ('[matrix]\npython = ["3.12"]\nenv = [{"NOT-A-NAME" = "1"}]\n', "'NOT-A-NAME' is not a variable name"),
])
def test_a_wrong_matrix_ends_the_build_error_naming_the_key(cluster, make_repo, toml: str, key: str) -> None:
    repo = make_repo()
    repo.commit({".volt.toml": toml, **SUITE}, "a wrong matrix")
    cluster.worker("r1")
    (build,) = cluster.watch(repo).poll()
    done = cluster.wait_final(build.id)
    assert done.status is Status.ERROR and key in done.reason and done.legs == 0
