"""The web page of a 25,000-test repository, served by a baseline revision's code and by this tree, side
by side in one run: page weight (the HTML and every script and style sheet it loads) and server time.

    python bench/web_pages.py [--baseline 0f4df4f] [--runs 7] [--tests 25000] [--builds 30]

Extracts the baseline revision's code with `git archive`, then, for each tree in a process of its
own and against a private redis-server of its own, stores the same history through that tree's
store (its record_finished, as an import of history is stored): --builds ended builds of one
repository, each with --tests tests and pytest's dots as output, the newest one failing three tests.
Each page is then fetched through Flask's test client --runs times; the figures are the median
server time and the bytes of the page and of what it loads (scripts and style sheets, once each,
as a browser with an empty cache fetches them). Pages this tree adds (test history, search) are
measured where the tree has them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from table import print_table  # noqa: E402

from voltci.redis_server import RedisServer  # noqa: E402

# Run by each tree's interpreter path, against its own Redis: fills it with that tree's store, then
# times that tree's pages.
CHILD = r'''
import json, random, re, statistics, sys, time
import redis
from voltci.config import Settings
from voltci.models import Build, Counts, Outcome, RunOutcome, Status, TestResult
from voltci.store import Store
from voltci.web import create_app

url, tests_n, builds_n, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
store = Store(redis.Redis.from_url(url, decode_responses=True))
parted = hasattr(store, "builds")  # a baseline tree from before the store's parts: one Store of every method
register, record_finished = ((store.repos.register, store.builds.record_finished) if parted
                             else (store.register_repo, store.record_finished))
register("big", "/srv/big", ["main"])
rng = random.Random(25)
ids = []
for n in range(tests_n):
    module, case = rng.choice(("specifiers", "version", "markers", "tags")), rng.randrange(40)
    ids.append(f"tests/test_{module}.py::Test{module.title()}::test_case_{case}[{rng.randrange(30)}.{n}]")
failing = {ids[7], ids[tests_n // 2], ids[-3]}
TRACEBACK = "Traceback (most recent call last):\n  ...\nAssertionError: 1 != 2"
dots = "".join("." * 80 + f" [{min(100, (k + 1) * 8000 // tests_n)}%]\n" for k in range(tests_n // 80))

def outcome(fails):
    tests = [TestResult(test_id, Outcome.FAILED if test_id in fails else Outcome.PASSED,
                        round(rng.random() / 200 + (0.8 if i % 997 == 0 else 0), 6),
                        TRACEBACK if test_id in fails else "", i)
             for i, test_id in enumerate(ids)]
    failed = sum(1 for t in tests if t.outcome is Outcome.FAILED)
    counts = Counts(total=len(tests), passed=len(tests) - failed, failed=failed)
    return RunOutcome(Status.FAILED if failed else Status.PASSED, tests, counts, "", dots[-2000:])

started = time.time() - 86400
shas = []
for n in range(builds_n):
    sha = f"{n:08x}".ljust(40, "a")
    at = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(started + n * 600))
    done = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(started + n * 600 + 95))
    build = Build(id=f"big-{sha}", repo="big", url="/srv/big", commit=sha, branch="main",
                  subject=f"Change {n}", author="Dev <dev@example.org>", queued_at=at, started_at=at,
                  finished_at=done, runner="host.1", duration_s=95.0)
    out = outcome(failing if n == builds_n - 1 else set())
    record_finished(build, out, dots + f"{tests_n} passed in 95.00s\n", started + n * 600)
    shas.append(sha)

web = create_app(Settings(redis_url=url)).test_client()
passing, failed = shas[-2], shas[-1]
quoted = ids[tests_n // 2].replace("[", "%5B").replace("]", "%5D")
pages = {
    "build page, passing build": f"/build/big/{passing}",
    "build page, failing build": f"/build/big/{failed}",
    "repository page": "/repo/big",
    "test history page": f"/repo/big/test/{quoted}",
    "search (API, one test of the build)": f"/api/builds/big/{failed}/tests?q=test_case_3%5B2.{tests_n - 5}%5D",
}
ASSET = re.compile(r'<(?:script[^>]*\bsrc|link[^>]*\bhref)="(/[^"]+)"')
result = {}
for name, path in pages.items():
    first = web.get(path)
    if first.status_code != 200:
        result[name] = None
        continue
    body = first.get_data()
    assets = sorted(set(ASSET.findall(body.decode(errors="replace"))))
    asset_bytes = sum(len(web.get(a).get_data()) for a in assets)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        assert web.get(path).status_code == 200
        times.append(time.perf_counter() - t)
    result[name] = {"html": len(body), "assets": asset_bytes, "asset_files": len(assets),
                    "server_s": statistics.median(times)}
print(json.dumps(result))
'''


def measure(tree: Path, work: Path, name: str, args: argparse.Namespace) -> dict:
    server = RedisServer(work / f"redis-{name}").start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOLT_")}
        env["PYTHONPATH"] = str(tree)
        done = subprocess.run([sys.executable, "-c", CHILD, server.url, str(args.tests), str(args.builds),
                               str(args.runs)], cwd=tree, env=env, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise SystemExit(f"{name}: {done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        server.stop()


def kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="0f4df4f", help="git revision of the code to compare with")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--tests", type=int, default=25_000)
    parser.add_argument("--builds", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="volt-web-pages-") as tmp:
        work = Path(tmp)
        baseline = work / "baseline"
        baseline.mkdir()
        archive = subprocess.run(["git", "archive", args.baseline], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(baseline)], input=archive, check=True)
        old = measure(baseline, work, "baseline", args)
        new = measure(ROOT, work, "tree", args)
    rows = [("baseline revision", args.baseline), ("tests per build, builds", f"{args.tests}, {args.builds}")]
    for page in new:
        for label, figures in (("baseline", old.get(page)), ("this tree", new[page])):
            if figures is None:
                rows.append((f"{page}, {label}", "no such page"))
                continue
            total = figures["html"] + figures["assets"]
            rows.append((f"{page}, {label}",
                         f"{kib(total)} ({kib(figures['html'])} HTML + {kib(figures['assets'])} in "
                         f"{figures['asset_files']} file(s)), server {figures['server_s'] * 1000:.0f} ms"))
    print_table(rows)


if __name__ == "__main__":
    main()
