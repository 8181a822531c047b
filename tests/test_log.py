"""A build's output in Redis: copied while it runs, capped with a marker, and followed live with
`volt log -f` (nothing lost, nothing printed twice)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest
from sample_project import FAILING
from support import ROOT, RQ_WORKER, SHA_A, add, child_env, run_rq_worker_burst, run_volt, running, wait_until

from voltci import keys
from voltci.logstream import LogPump, TreeNames, follow_log
from voltci.store import Store
from voltci.web import create_app


def test_pump_copies_what_is_appended_and_caps_it(fake, tmp_path) -> None:
    out = tmp_path / "output.log"
    out.write_bytes(b"")
    store = running(fake, "b1")
    pump = LogPump(store, "b1", 1, out, cap_bytes=20)
    with open(out, "ab") as fh:
        fh.write("héllo ".encode()[:2])  # half of the é
        fh.flush()
        pump.pump()
        fh.write("héllo ".encode()[2:] + b"world\n")
        fh.flush()
        pump.pump()
        assert store.logs.read("b1") == "héllo world\n"
        fh.write(b"x" * 100)
    pump.finish()
    text = store.logs.read("b1")
    assert text.startswith("héllo world\nxxxxxxx\n[volt: the output was cut here, at 20 bytes")
    assert text.endswith("[volt: 93 more bytes of output were not kept]\n")


@pytest.mark.e2e
def test_follow_writes_everything_once_even_across_a_new_attempt(fake, tmp_path) -> None:
    build = add(fake, "proj", SHA_A)
    Store(fake).builds.start_attempt(build.id, 1, "r1")
    out = tmp_path / "output.log"
    out.write_text("")
    pump = LogPump(Store(fake), build.id, 1, out, cap_bytes=10_000)
    with open(out, "a") as fh:
        fh.write("before following\n")
    pump.pump()
    written: list[str] = []
    follower = threading.Thread(target=lambda: written.append(
        "".join(collect(fake, build.id))))
    follower.start()
    time.sleep(0.3)
    for n in range(5):
        with open(out, "a") as fh:
            fh.write(f"line {n}\n")
        pump.pump()
        time.sleep(0.05)
    # The runner dies; attempt 2 starts elsewhere with its output afresh, and finishes.
    fake.hset(keys.build(build.id), mapping={"attempt": "2", "status": "queued"})
    Store(fake).builds.start_attempt(build.id, 2, "r2")
    second = LogPump(Store(fake), build.id, 2, tmp_path / "second.log", cap_bytes=10_000)
    (tmp_path / "second.log").write_text("attempt two\n")
    second.finish()
    from support import outcome
    Store(fake).builds.finish(build.id, 2, "r2", outcome())
    follower.join(timeout=20)
    assert written == ["before following\nline 0\nline 1\nline 2\nline 3\nline 4\n"
                       "\n[volt: attempt 2 started on another runner; its output follows]\nattempt two\n"]


def collect(conn, build_id: str) -> list[str]:
    pieces: list[str] = []
    follow_log(Store(conn), build_id, pieces.append, limit_s=20)
    return pieces


CHATTY = {
    "tests/__init__.py": "",
    "tests/test_chatty.py": (
        "import sys, time, unittest\n\n\nclass Chatty(unittest.TestCase):\n"
        "    def test_a_talks(self):\n"
        "        for n in range(30):\n"
        "            print(f'tick {n} ' + 'ü' * 10, flush=True)\n"
        "            time.sleep(0.1)\n"
        "    def test_b_floods(self):\n"
        "        sys.stdout.write('x' * (4 * 1024 * 1024))\n"
    ),
}


def test_volt_log_follows_a_running_build_and_caps_a_flood(rq_conn, conn, settings, make_repo, tmp_path) -> None:
    repo = make_repo()
    sha = repo.commit(CHATTY, "chatty tests")
    env = {"VOLT_WORKSPACE_DIR": settings.workspace_dir, "VOLT_LOG_MAX_BYTES": str(1024 * 1024)}
    assert run_volt("observe", "--once", "--repo", str(repo.path), "--redis-url", settings.effective_redis_url,
                    env=env).returncode == 0
    worker = subprocess.Popen([*RQ_WORKER, "--burst", "--url", settings.effective_redis_url, settings.queue],
                              env=child_env(**env), cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: conn.strlen(keys.build_log(keys.build_id("proj", sha))) > 0, "output to appear")
        follow = run_volt("log", "-f", sha[:8], "--redis-url", settings.effective_redis_url, timeout=120)
        worker.wait(timeout=120)
    finally:
        if worker.poll() is None:
            worker.kill()
    stored = run_volt("log", sha, "--redis-url", settings.effective_redis_url).stdout
    assert follow.returncode == 0, follow.stderr
    assert follow.stdout == stored
    assert all(f"tick {n} {'ü' * 10}" in stored for n in range(30))
    assert "[volt: the output was cut here, at 1048576 bytes (log_max_bytes)]" in stored
    assert stored.rstrip().endswith("more bytes of output were not kept]")
    assert "[volt: build passed]" in follow.stderr
    assert run_rq_worker_burst(settings).returncode == 0  # nothing left queued


def test_volt_log_bad_input(redis_url) -> None:
    for args, fragment in ((["xyz"], "not a commit"), (["-f", "abcdef"], "unknown commit")):
        proc = run_volt("log", *args, "--redis-url", redis_url)
        assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [proc.stderr.strip()]
        assert fragment in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- files named relative to the tree

TREE = "/srv/ws/host/pool/proj-1a2b/0"
TRACEBACK = (f'Traceback (most recent call last):\n  File "{TREE}/tests/test_ops.py", line 19, in test_percent\n'
             f"cwd {TREE} stays; {TREE}/../x and {TREE}x are not in it; /srv/ws/host/pool/proj-1a2b/1/t.py neither\n"
             f"{TREE}/{TREE}/a.py /srv/ws/host/pool/proj-1a2b/0")


def test_tree_names_come_out_wherever_the_pieces_are_cut() -> None:
    whole = TRACEBACK.replace(f"{TREE}/", "")
    assert 'File "tests/test_ops.py"' in whole
    for cut in range(len(TRACEBACK) + 1):
        for second in (cut, min(len(TRACEBACK), cut + 3), min(len(TRACEBACK), cut + 40)):
            names = TreeNames([f"{TREE}/"])
            pieces = [TRACEBACK[:cut], TRACEBACK[cut:second], TRACEBACK[second:]]
            out = "".join(names.feed(piece) for piece in pieces) + names.flush()
            assert out == whole, (cut, second)
            assert len(names.held) == 0


def test_tree_names_hold_back_no_more_than_a_path_and_only_what_may_begin_one() -> None:
    names = TreeNames([f"{TREE}/"])
    assert names.feed("plain text /srv/ws/ho") == "plain text " and names.held == "/srv/ws/ho"
    assert names.feed("me/x\n") == "/srv/ws/home/x\n" and names.held == ""  # it was not the tree after all
    assert names.feed("x" * 100_000 + "/") == "x" * 100_000 and names.held == "/"
    assert TreeNames([]).feed(f"{TREE}/a") == f"{TREE}/a"


def test_the_tree_is_named_as_given_and_as_the_kernel_names_it(tmp_path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    names = TreeNames.of_tree(tmp_path / "link")
    assert names.feed(f"{tmp_path}/link/a.py {real}/b.py\n") == "a.py b.py\n"


def test_pump_stores_the_output_with_files_relative_to_the_tree(fake, tmp_path) -> None:
    out = tmp_path / "output.log"
    out.write_text("")
    store = running(fake, "b1")
    pump = LogPump(store, "b1", 1, out, cap_bytes=100_000, tree=tmp_path / "tree")
    text = TRACEBACK.replace(TREE, str(tmp_path / "tree"))
    with open(out, "a") as fh:
        for start in range(0, len(text), 7):  # the runner reads while the tests write, in pieces cut anywhere
            fh.write(text[start:start + 7])
            fh.flush()
            pump.pump()
    pump.finish()
    assert store.logs.read("b1") == TRACEBACK.replace(f"{TREE}/", "").replace(TREE, str(tmp_path / "tree"))


def test_volt_log_names_files_as_the_report_does(settings, make_repo) -> None:
    """A real build: `volt log`, `volt log -f` and the web page's log name `tests/test_broken.py`, as
    the report does, and nothing of the workspace the build ran in."""
    repo = make_repo()
    sha = repo.commit(FAILING, "broken")
    url = settings.effective_redis_url
    assert run_volt("observe", "--once", "--repo", str(repo.path), "--redis-url", url,
                    env={"VOLT_WORKSPACE_DIR": settings.workspace_dir}).returncode == 0
    assert run_rq_worker_burst(settings).returncode == 0
    report = json.loads(run_volt("report", sha, "--json", "--redis-url", url).stdout)
    assert 'File "tests/test_broken.py"' in report["tests"][0]["message"]
    stored = run_volt("log", sha, "--redis-url", url)
    followed = run_volt("log", "-f", sha, "--redis-url", url)
    assert 'File "tests/test_broken.py", line 6, in test_assert' in stored.stdout and followed.stdout == stored.stdout
    named = [line for line in stored.stdout.splitlines() if not line.startswith("[volt: ")  # Volt's own lines
             and (settings.workspace_dir in line or os.path.realpath(settings.workspace_dir) in line)]
    assert named == []
    page = create_app(settings).test_client().get(f"/api/builds/proj/{sha}/log")
    assert page.status_code == 200 and page.get_data(as_text=True) == stored.stdout


def test_follow_says_the_first_failure_once_between_the_output_before_the_build_ends(fake, tmp_path) -> None:
    build = add(fake, "proj", SHA_A)
    store = Store(fake)
    store.builds.start_attempt(build.id, 1, "r1")
    out = tmp_path / "output.log"
    out.write_text("")
    pump = LogPump(store, build.id, 1, out, cap_bytes=10_000)
    seen: list[str] = []
    follower = threading.Thread(target=lambda: follow_log(
        store, build.id, seen.append, limit_s=20,
        first_failure=lambda b: seen.append(f"<first failure: {b.first_failure}>")))
    follower.start()
    time.sleep(0.3)
    for n in range(30):  # output keeps coming: the follower is never idle for long
        with open(out, "a") as fh:
            fh.write(f"line {n}\n")
        pump.pump()
        if n == 5:
            store.builds.set_progress(build.id, 1, 1, "tests/test_x.py::test_y")
        if n == 8:
            store.builds.set_progress(build.id, 2, 2, "tests/test_x.py::test_z")  # not the first: not said
        time.sleep(0.1)
    wait_until(lambda: "<first failure: tests/test_x.py::test_y>" in seen, "the first failure while it runs")
    from support import outcome
    store.builds.finish(build.id, 1, "r1", outcome())
    follower.join(timeout=20)
    told = [n for n, piece in enumerate(seen) if piece.startswith("<first failure")]
    assert len(told) == 1 and "line 5\n" in "".join(seen[:told[0]])  # after what came before it
    assert "".join(p for p in seen if not p.startswith("<")) == "".join(f"line {n}\n" for n in range(30))


def test_follow_says_a_first_failure_known_before_it_started_at_once(fake) -> None:
    build = add(fake, "proj", SHA_A)
    store = Store(fake)
    store.builds.start_attempt(build.id, 1, "r1")
    store.builds.set_progress(build.id, 1, 1, "t::early")
    said: list[str] = []
    follower = threading.Thread(target=lambda: follow_log(store, build.id, lambda text: None, limit_s=20,
                                                          first_failure=lambda b: said.append(b.first_failure)))
    follower.start()
    wait_until(lambda: said, "the first failure")
    from support import outcome
    store.builds.finish(build.id, 1, "r1", outcome())
    follower.join(timeout=20)
    assert said == ["t::early"]


def test_follow_says_a_legs_first_failure_though_its_output_never_pauses(fake, tmp_path) -> None:
    from voltci.models import Leg

    build = add(fake, "proj", SHA_A)
    store = Store(fake)
    store.builds.start_attempt(build.id, 1, "r1")
    (leg,) = store.legs.start(build.id, 1, [Leg.of("3.12", {})], "r1") or []
    store.builds.start_attempt(leg.id, 1, "r2")
    out = tmp_path / "output.log"
    out.write_text("")
    pump = LogPump(store, leg.id, 1, out, cap_bytes=100_000)
    said: list[str] = []
    follower = threading.Thread(target=lambda: follow_log(store, leg.id, lambda text: None, limit_s=20,
                                                          first_failure=lambda b: said.append(b.first_failure)))
    follower.start()
    time.sleep(0.3)
    store.builds.set_progress(leg.id, 1, 1, "t::in_leg")
    for n in range(60):  # never a second without output
        with open(out, "a") as fh:
            fh.write(f"line {n}\n")
        pump.pump()
        time.sleep(0.05)
    assert said == ["t::in_leg"]  # said while the output still came
    from support import outcome
    store.builds.finish(leg.id, 1, "r2", outcome())
    follower.join(timeout=20)
    assert said == ["t::in_leg"]
