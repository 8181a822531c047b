"""Pull requests built end to end, through real processes: a bare repository whose pull requests are
`refs/pull/N/head` refs (made with `git update-ref`, as a forge keeps them), the observer's code polling
them, one `volt worker`, a private redis-server and the `volt` commands. A pull request is built as it
would merge; one that conflicts ends `error` naming the files; one nobody trusts waits for `volt
approve`; a pull request's code never runs on the runner host during the merge, and never changes what
a protected branch's build runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from support import ROOT, GitRepo, child_env, wait_until

from voltci import keys, pullrequests
from voltci.config import Settings, as_environment, host_dir
from voltci.models import Build, Status
from voltci.observer import MAX_PULLS_PER_POLL, RepoWatch
from voltci.pullrequests import PullEvent
from voltci.redis_server import RedisServer
from voltci.store import Store

BUILD_WAIT_S = 180
CALC = {"calc.py": "def add(a, b):\n    return a + b\n", "tests/__init__.py": "",
        "tests/test_calc.py": "import unittest\nfrom calc import add\n\n\nclass T(unittest.TestCase):\n"
                              "    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n"}


class Forge:
    """A bare repository as a forge keeps one: branches, and each pull request's head at
    `refs/pull/N/head`; the work repository its commits are made in."""

    def __init__(self, base: Path):
        self.work = GitRepo(base / "work")
        self.bare = base / "forge.git"
        subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(self.bare)], check=True,
                       timeout=60)

    def push(self, branch: str = "main") -> None:
        self.work.git("push", "--quiet", "--force", str(self.bare), f"HEAD:refs/heads/{branch}")

    def open_pull(self, number: int, sha: str) -> None:
        """The pull request's head, as the forge writes it: the objects pushed, the ref made by update-ref."""
        self.work.git("push", "--quiet", "--force", str(self.bare), f"{sha}:refs/volt-test/incoming")
        for args in (["update-ref", f"refs/pull/{number}/head", sha], ["update-ref", "-d", "refs/volt-test/incoming"]):
            subprocess.run(["git", *args], cwd=self.bare, check=True, timeout=60, capture_output=True)


class Runner:
    """One `volt worker`, its host user's own git config naming a filter and a merge driver that leave a
    mark if git ever runs them, and the observer's code."""

    def __init__(self, base: Path):
        self.base = base
        self.server = RedisServer(base / "redis").start()
        self.settings = Settings(redis_url=self.server.url, workspace_dir=str(base / "ws"), build_timeout=120,
                                 retries=1)
        self.home = base / "home"
        self.marks = base / "marks"
        self.marks.mkdir()
        self.home.mkdir()
        (self.home / ".gitconfig").write_text(textwrap.dedent(f"""\
            [filter "evil"]
                smudge = touch {self.marks}/smudge; cat
                clean = touch {self.marks}/clean; cat
                required = true
            [merge "evil"]
                driver = touch {self.marks}/merge-driver; false
            """))
        self.env = child_env(**as_environment(self.settings), HOME=str(self.home))
        self.log_path = base / "worker.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "voltci", "worker", "--name", "pulls"], cwd=ROOT,
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.store = Store(redis.Redis.from_url(self.server.url, decode_responses=True), self.settings)
        self.forges = 0

    def forge(self) -> Forge:
        self.forges += 1
        return Forge(self.base / f"forge{self.forges}")

    def watch(self, forge: Forge, trusted: list[str] | None = None) -> RepoWatch:
        watch = RepoWatch(self.store, str(forge.bare), name=forge.bare.parent.name, pull_requests=True,
                          trusted_authors=["*"] if trusted is None else trusted)
        watch.validate()
        return watch

    def ended(self, build: Build) -> Build:
        def done() -> Build | None:
            found = self.store.records.get_build(build.id)
            return found if found is not None and found.status.is_final else None
        return wait_until(done, f"{build.id} to end", timeout=BUILD_WAIT_S, process=self.proc)

    def volt(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "voltci", *args], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)

    def report(self, *args: str) -> dict:
        shown = self.volt("report", *args, "--json")
        assert shown.stderr == "", shown.stderr
        return json.loads(shown.stdout)

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.server.stop()


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory):
    started = Runner(tmp_path_factory.mktemp("pulls"))
    yield started
    started.stop()


@pytest.fixture
def on_main(runner: Runner) -> Callable[..., tuple[Forge, RepoWatch]]:
    """A new forge whose main holds `files` (CALC unless given), watched by the observer's code (trusting
    everyone unless `trusted` says whom) and polled once: main's build queued, no pull request yet."""
    def make(files: dict[str, str | None] = CALC, trusted: list[str] | None = None) -> tuple[Forge, RepoWatch]:
        forge = runner.forge()
        forge.work.commit(files, "calc")
        forge.push()
        watch = runner.watch(forge, trusted)
        watch.poll()
        return forge, watch
    return make


def only_pull_build(builds: list[Build]) -> Build:
    pulls = [b for b in builds if b.pull_request is not None]
    assert len(pulls) == 1, builds
    return pulls[0]


def test_a_pull_request_is_built_as_it_would_merge_and_found_by_head_and_number(runner: Runner, on_main) -> None:
    """The pull request's test needs what main gained after it branched off: it passes only merged."""
    forge, watch = on_main()
    work = forge.work
    work.checkout("topic", create=True)
    head = work.commit({"tests/test_double.py": "import unittest\nfrom calc import double\n\n\n"
                        "class D(unittest.TestCase):\n    def test_double(self):\n"
                        "        self.assertEqual(double(4), 8)\n"}, "test double()")
    work.checkout("main")
    base = work.commit({"calc.py": CALC["calc.py"] + "\n\ndef double(a):\n    return 2 * a\n"}, "double()")
    forge.push()
    forge.open_pull(1, head)
    created = watch.poll()
    build = only_pull_build(created)
    assert build.id == f"{forge.bare.parent.name}-pr1-{head}" and build.branch == "main"
    ended = runner.ended(build)
    assert ended.status.value == "passed", ended.reason
    by_head = runner.report(head[:10])
    assert by_head["pull_request"] == {"number": 1, "head": head, "base": base}
    assert by_head["counts"]["passed"] == 2 and by_head["branch"] == "main"
    assert runner.report("--pr", "1", "--repo", forge.bare.parent.name)["pull_request"]["base"] == base
    assert watch.poll() == []  # the same head is not built twice
    log = runner.volt("log", head[:10]).stdout
    assert f"pull request #1: its head {head[:10]} merged into main at {base[:10]}" in log, log[-2000:]
    assert "trust scope: pull request #1" in log
    assert f"{head[:10]} #1→main" in runner.volt("history").stdout


def test_a_conflict_ends_the_build_error_naming_the_files(runner: Runner, on_main) -> None:
    forge, watch = on_main({**CALC, "notes.txt": "one\n", "\x01odd name.txt": "x\n"})
    work = forge.work
    work.checkout("topic", create=True)
    head = work.commit({"notes.txt": "two\n", "\x01odd name.txt": "y\n"}, "notes: two")
    work.checkout("main")
    work.commit({"notes.txt": "three\n", "\x01odd name.txt": "z\n"}, "notes: three")
    forge.push()
    forge.open_pull(2, head)
    ended = runner.ended(only_pull_build(watch.poll()))
    assert ended.status.value == "error"
    assert ended.reason.startswith("merge conflict: pull request #2 does not merge into main"), ended.reason
    assert "notes.txt" in ended.reason and "?odd name.txt" in ended.reason and "\n" not in ended.reason
    shown = runner.volt("report", "--pr", "2", "--repo", forge.bare.parent.name)
    assert shown.returncode == 1 and "merge conflict" in shown.stdout


def test_a_pull_request_nobody_trusts_waits_for_volt_approve(runner: Runner, on_main) -> None:
    forge, watch = on_main(trusted=["alice"])
    name = forge.bare.parent.name
    forge.work.checkout("topic", create=True)
    head = forge.work.commit({"README": "hello\n"}, "readme")
    forge.open_pull(3, head)
    assert watch.poll() == []  # polling cannot tell who opened it: it waits
    assert runner.store.pulls.get(name, 3).state == "waiting"
    refused = runner.volt("report", "--pr", "3", "--repo", name)
    assert refused.returncode == 2 and "waits for approval" in refused.stderr and refused.stderr.count("\n") == 1
    bad = [runner.volt("approve", name, "4"), runner.volt("approve", "nope", "3"), runner.volt("approve", name, "0")]
    assert [p.returncode for p in bad] == [2, 2, 2], [p.stderr for p in bad]
    assert all(p.stderr.count("\n") == 1 and "Traceback" not in p.stderr for p in bad), [p.stderr for p in bad]
    approved = runner.volt("approve", name, "3")
    assert approved.returncode == 0 and "approved" in approved.stdout, approved.stderr
    build = runner.store.pulls.build_of(name, 3)
    assert runner.ended(build).status.value == "passed"
    assert watch.poll() == []


def test_a_pull_requests_attributes_name_filters_and_merge_drivers_git_never_runs(runner: Runner, on_main) -> None:
    """The runner user's own git config defines a filter and a merge driver; a pull request's
    .gitattributes names them for every file and both sides change a file git must merge: neither runs
    on the runner host (nor hooks it ships), and the merge is git's own."""
    forge, watch = on_main({**CALC, "shared.txt": "a\nb\nc\nd\ne\nf\n"})
    work = forge.work
    work.checkout("topic", create=True)
    head = work.commit({".gitattributes": "* filter=evil merge=evil diff=evil\n",
                        ".githooks/post-checkout": f"#!/bin/sh\ntouch {runner.marks}/hook\n",
                        "shared.txt": "A\nb\nc\nd\ne\nf\n"}, "attributes")
    work.checkout("main")
    work.commit({"shared.txt": "a\nb\nc\nd\ne\nF\n"}, "main changes the end")
    forge.push()
    forge.open_pull(4, head)
    ended = runner.ended(only_pull_build(watch.poll()))
    assert ended.status.value == "passed", ended.reason
    assert sorted(p.name for p in runner.marks.iterdir()) == []
    tree = [p for p in (host_dir(runner.settings.workspace_dir) / "pool").rglob("shared.txt") if "pull-4" in str(p)]
    assert tree and tree[0].read_text() == "A\nb\nc\nd\ne\nF\n"


def test_a_pull_request_into_a_protected_branch_cannot_poison_what_its_builds_run(runner: Runner) -> None:
    """The pull request would merge into main, a protected branch: its setup step writes a .pth into its
    environment (seeded from main's) — in its own scope. main's next build runs clean."""
    forge = runner.forge()
    work = forge.work
    volt = {".volt.toml": "[tests]\nsetup = [['python', 'setup_step.py']]\n"}
    tests = {"tests/__init__.py": "", "tests/test_main.py": textwrap.dedent("""\
        import os, unittest

        class T(unittest.TestCase):
            def test_not_poisoned(self):
                self.assertNotIn("POISONED", os.environ)
        """)}
    work.commit({**volt, **tests, "setup_step.py": "pass\n"}, "main")
    forge.push()
    watch = runner.watch(forge)
    first = runner.ended(watch.poll()[-1])
    assert first.status.value == "passed", first.reason
    work.checkout("evil", create=True)
    poison = ("import os, site\n"
              "path = os.path.join(site.getsitepackages()[0], 'zz_evil.pth')\n"
              "open(path, 'w').write('import os; os.environ[\"POISONED\"] = \"1\"\\n')\n")
    head = work.commit({"setup_step.py": poison, "tests/test_main.py": textwrap.dedent("""\
        import os, unittest

        class T(unittest.TestCase):
            def test_poisoned_here(self):
                self.assertEqual(os.environ.get("POISONED"), "1")
        """)}, "poisons the environment")
    forge.open_pull(5, head)
    evil = runner.ended(only_pull_build(watch.poll()))
    assert evil.status.value == "passed", evil.reason
    assert evil.scope == "pull-5"
    work.checkout("main")
    work.commit({"README": "next\n"}, "main again")
    forge.push()
    second = runner.ended([b for b in watch.poll() if b.pull_request is None][-1])
    assert second.status.value == "passed", second.reason
    envs = host_dir(runner.settings.workspace_dir) / "envs"
    protected = [p for p in envs.rglob("site-packages") if "scopes" not in p.parts]
    assert protected and not [p for p in protected if (p / "zz_evil.pth").exists()]


def test_closing_a_pull_request_stops_its_running_build(runner: Runner, on_main) -> None:
    """A pull request's build runs a long test; the forge says the pull request was closed (the webhook's
    event, as pullrequests.act takes it): the build ends cancelled within seconds and the runner builds on."""
    forge, watch = on_main()
    work = forge.work
    work.checkout("slow", create=True)
    head = work.commit({"tests/test_slow.py": "import time, unittest\n\n\nclass S(unittest.TestCase):\n"
                        "    def test_slow(self):\n        time.sleep(120)\n"}, "a slow test")
    forge.open_pull(6, head)
    build = only_pull_build(watch.poll())
    wait_until(lambda: "test_slow" in runner.store.logs.read(build.id) or "$ " in runner.store.logs.read(build.id),
               "the slow build to run its tests", timeout=BUILD_WAIT_S, process=runner.proc)
    event = PullEvent("closed", 6, head, "main", "alice", False)
    what, _, cancelled = pullrequests.act(runner.store, forge.bare.parent.name, event)
    assert what == "closed" and [b.id for b in cancelled] == [build.id]
    ended = runner.ended(build)
    assert ended.status is Status.CANCELLED and ended.reason == "pull request #6 was closed"
    assert watch.poll() == []  # its ref stays on the forge: a closed pull request is not built again
    work.checkout("main")
    work.commit({"README": "on\n"}, "main goes on")
    forge.push()
    assert runner.ended([b for b in watch.poll() if b.pull_request is None][-1]).status is Status.PASSED


def test_hostile_refs_and_a_flood_of_pull_requests_cost_a_bounded_pass(settings, rq_conn, tmp_path) -> None:
    """Refs that only look like pull requests are none; a thousand pull requests are recorded at most
    MAX_PULLS_PER_POLL a poll, and those nobody trusts wait, at most PULLS_WAITING_MAX of them."""
    forge = Forge(tmp_path)
    sha = forge.work.commit(CALC, "calc")
    forge.push()
    for ref in ("refs/pull/0/head", "refs/pull/007/head", "refs/pull/99999999999/head", "refs/pull/-1/head",
                "refs/pull/1e3/head", "refs/pull/2/merge", "refs/pull/3000/head/x", "refs/heads/pull/4/head"):
        subprocess.run(["git", "update-ref", ref, sha], cwd=forge.bare, check=True, timeout=60)
    store = Store(redis.Redis.from_url(settings.effective_redis_url, decode_responses=True), settings)
    trusting = RepoWatch(store, str(forge.bare), name="flood", pull_requests=True, trusted_authors=["*"])
    trusting.validate()
    assert [b for b in trusting.poll() if b.pull_request is not None] == []
    assert store.pulls.all("flood") == []
    updates = "".join(f"create refs/pull/{n}/head {sha}\n" for n in range(1, 1001))
    subprocess.run(["git", "update-ref", "--stdin"], cwd=forge.bare, input=updates, text=True, check=True, timeout=60)
    first = trusting.poll()
    assert [b.pull_request.number for b in first] == list(range(1000, 1000 - MAX_PULLS_PER_POLL, -1))
    assert len(trusting.poll()) == MAX_PULLS_PER_POLL
    wary = RepoWatch(store, str(forge.bare), name="wary", pull_requests=True, trusted_authors=["alice"])
    wary.validate()
    for _ in range(4):
        assert [b for b in wary.poll() if b.pull_request is not None] == []
    assert store.r.hlen(keys.repo_pulls("wary")) == keys.PULLS_WAITING_MAX
    assert store.r.hlen(keys.repo_pulls("flood")) == 2 * MAX_PULLS_PER_POLL
