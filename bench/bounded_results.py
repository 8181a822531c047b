"""What a hostile commit's results cost the runner host, against the bounds Volt promises.

    python bench/bounded_results.py [--only NAME...]

Starts a private redis-server and one `volt worker`, makes a git repository, and builds one commit per
attack: 100,000 failing tests with 1 KiB random messages, a JUnit file of 200 MB (one failure of 100 MB
of text and a hundred of 1 MiB), a forged duration of 1e999, and a results line of 100 MB with no
newline. For each it prints the build's status, Redis' growth (`INFO memory` used_memory before the
build is queued and after it ended) ÷ 16 MiB, and the peak RSS of the work-horse that read the build's
output (its VmHWM, read from /proc every 20 ms while it runs) ÷ 256 MiB: both ratios must stay ≤ 1. It
exits 1 when one does not, or when the worker died.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import redis  # noqa: E402
from table import print_table  # noqa: E402

from voltci.config import Settings, as_environment  # noqa: E402
from voltci.observer import RepoWatch  # noqa: E402
from voltci.redis_server import RedisServer  # noqa: E402
from voltci.runner.procs import children, descendants, kill_all  # noqa: E402
from voltci.store import Store  # noqa: E402

MIB = 1024 * 1024
REDIS_BOUND = 16 * MIB
HORSE_BOUND_KIB = 256 * 1024
WAIT_S = 900
GIT_ENV = {"GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "bench@volt.invalid", "GIT_COMMITTER_NAME": "Bench",
           "GIT_COMMITTER_EMAIL": "bench@volt.invalid"}

FORGE = """
import json, os, sys, unittest

OUT = sys.argv[sys.argv.index("--out") + 1]

class Forge(unittest.TestCase):
    def test_forge(self):
        path = OUT + ".forged"
        good = json.dumps({"id": "tests.test_x.Forge.test_forge", "outcome": "passed", "duration_s": 0.1})
        with open(path, "w") as fh:
            fh.write(good + "\\n")
%s
        os.replace(path, OUT)
"""

ATTACKS: dict[str, dict[str, str | None]] = {
    "100k failing tests, 1 KiB random messages": {"tests/test_x.py": textwrap.dedent("""
        import base64, os, unittest

        def make(n):
            def test(self):
                self.fail(base64.b64encode(os.urandom(768)).decode())
            return test

        Many = type("Many", (unittest.TestCase,), {f"test_{n:06}": make(n) for n in range(100_000)})
    """)},
    "a JUnit file of 200 MB": {".volt.toml": '[tests]\ncommand = ["python", "gen.py"]\njunit = "report.xml"\n',
                               "gen.py": textwrap.dedent("""
        import os
        with open("report.xml", "w") as fh:
            fh.write("<testsuite><testcase classname='big' name='huge'><failure>")
            for _ in range(100):
                fh.write("y" * (1 << 20))
            fh.write("</failure></testcase>")
            for n in range(100):
                fh.write(f"<testcase classname='big' name='t{n}'><failure>{os.urandom(512 * 1024).hex()}</failure>"
                         "</testcase>")
            fh.write("</testsuite>")
    """)},
    "a forged duration of 1e999": {".volt.toml": None, "gen.py": None, "tests/test_x.py": FORGE % (
        "            fh.write('{\"id\": \"t.x\", \"outcome\": \"passed\", \"duration_s\": 1e999}\\n')")},
    "a results line of 100 MB, no newline": {"tests/test_x.py": FORGE % (
        "            fh.write('{\"id\": \"')\n            for _ in range(100):\n"
        "                fh.write('x' * (1 << 20))")},
}


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, env={**os.environ, **GIT_ENV}, check=True, capture_output=True,
                   timeout=120)


def commit(repo: Path, files: dict[str, str | None], message: str) -> None:
    for name, text in files.items():
        path = repo / name
        if text is None:
            path.unlink(missing_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "--allow-empty", "-m", message)


class HorsePeak:
    """The highest VmHWM of the worker's children (its work-horses) while it runs."""

    def __init__(self, worker_pid: int):
        self.worker_pid, self.kib = worker_pid, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)
        self.thread.start()

    def watch(self) -> None:
        while not self.stop.wait(0.02):
            for pid in children(self.worker_pid):
                try:
                    text = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                peak = [int(line.split()[1]) for line in text.splitlines() if line.startswith("VmHWM:")]
                self.kib = max([self.kib, *peak])

    def done(self) -> int:
        self.stop.set()
        self.thread.join(timeout=10)
        return self.kib


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="attacks whose name holds one of these words")
    args = parser.parse_args()
    attacks = {name: files for name, files in ATTACKS.items()
               if not args.only or any(word in name for word in args.only)}
    with tempfile.TemporaryDirectory(prefix="volt-bounded-") as tmp:
        base = Path(tmp)
        server = RedisServer(base / "redis").start()
        settings = Settings(redis_url=server.url, workspace_dir=str(base / "ws"), build_timeout=WAIT_S)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("VOLT_")}, **as_environment(settings),
               "PYTHONPATH": str(ROOT)}
        with open(base / "worker.log", "wb") as log:
            worker = subprocess.Popen([sys.executable, "-m", "voltci", "worker", "--name", "bench"], cwd=ROOT, env=env,
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        conn = redis.Redis.from_url(server.url, decode_responses=True)
        rq_conn = redis.Redis.from_url(server.url)
        rows: list[tuple[str, str]] = []
        failed = False
        try:
            repo = base / "repo"
            repo.mkdir()
            git(repo, "init", "--quiet", "--initial-branch=main")
            commit(repo, {"tests/__init__.py": "", "tests/test_x.py":
                          "import unittest\n\nclass T(unittest.TestCase):\n    def test_ok(self):\n        pass\n"},
                   "a passing test: the environment the others reuse")
            watch = RepoWatch(Store(rq_conn, settings), str(repo))
            watch.validate()
            store = Store(conn, settings)
            for name, files in {"warm-up": {}, **attacks}.items():
                if name != "warm-up":
                    commit(repo, files, name)
                before = int(conn.info("memory")["used_memory"])
                horse = HorsePeak(worker.pid)
                (queued,) = watch.poll()
                deadline = time.monotonic() + WAIT_S
                while (build := store.records.get_build(queued.id)) is None or not build.status.is_final:
                    if time.monotonic() > deadline or worker.poll() is not None:
                        how = "died" if worker.poll() is not None else "is alive"
                        raise SystemExit(f"{name}: the build did not end (the worker {how})")
                    time.sleep(0.2)
                peak = horse.done()
                grown = int(conn.info("memory")["used_memory"]) - before
                if name == "warm-up":
                    continue
                failed |= grown > REDIS_BOUND or peak > HORSE_BOUND_KIB or build.attempt != 1
                rows += [(f"{name}: status", f"{build.status.value}" + (f" — {build.reason}" if build.reason else "")),
                         (f"{name}: Redis growth ÷ 16 MiB", f"{grown / REDIS_BOUND:.2f} ({grown / MIB:.1f} MiB)"),
                         (f"{name}: work-horse peak RSS ÷ 256 MiB",
                          f"{peak / HORSE_BOUND_KIB:.2f} ({peak / 1024:.0f} MiB)")]
            alive = worker.poll() is None
            rows.append(("the worker, after every attack", "alive" if alive else "DIED"))
            failed |= not alive
        finally:
            kill_all([*descendants(worker.pid), worker.pid])
            worker.wait(timeout=10)
            conn.close()
            rq_conn.close()
            server.stop()
    print_table(rows)
    print("every ratio ≤ 1" if not failed else "a bound was broken")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
