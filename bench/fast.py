"""How much Volt adds to a build, and how much splitting a suite wins, side by side in one run.

    python bench/fast.py [--runs 5] [--package more-itertools==11.2.1]

Everything runs in one process tree against a private redis-server, on a real suite made into a git
repository from its source distribution and given a history of --history commits.
Each figure is the median of --runs runs, taken alternately with its baseline; the bench refuses
to print a ratio from a single run. It prints a table and one closing line of five ratios:

- build overhead: push → result with `volt notify` (a warm runner) ÷ bare `python -m unittest
  discover` of the same commit (goal ≤ 1.15);
- checkout: Volt's workspace preparation ÷ the faster of `git worktree add` and a reused worktree
  (`checkout -f` + `clean -ffdx`), same commits and mirror (goal ≤ 1.25), and ÷ a fresh
  `git clone --no-local` of the repository and checkout (goal ≤ 0.1);
- sharding: push → result with 2 runners (the suite split in two) ÷ with 1 runner (goal ≤ 0.6);
- dispatch: trivial builds per second through Volt ÷ rq jobs per second that run the same trivial
  suite in a subprocess, one worker each, same Redis (goal ≥ 0.5);
- observer: one poll of a repository with nothing new ÷ `git ls-remote` of it (goal ≤ 2).

Builds run sandboxed (the default), so the build overhead includes the sandbox; its own cost is also
printed: one build step (`python -c pass` under the build's limits) in its bubblewrap sandbox and
without, alternately, as the difference of the medians in milliseconds; and so is the cost of a
step's network of its own (slirp4netns and its firewall) over a step without network. Trust scopes
get one more figure: the first build of a new branch (a worktree of its own, its environment an
overlay of the default branch's) ÷ a build of the default branch that reuses its environment.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import redis  # noqa: E402
from real_project import GIT, make_repo  # noqa: E402
from rq import Queue  # noqa: E402
from table import print_table  # noqa: E402

from voltci import keys  # noqa: E402
from voltci.config import (  # noqa: E402
    Settings,
    as_environment,
    host_dir,
)
from voltci.git import Mirror, git  # noqa: E402
from voltci.observer import RepoWatch  # noqa: E402
from voltci.redis_server import RedisServer  # noqa: E402
from voltci.runner.limits import Limits  # noqa: E402
from voltci.runner.procs import Budget, descendants, kill_all, run_process  # noqa: E402
from voltci.runner.sandbox import Sandbox  # noqa: E402
from voltci.runner.steps import BuildSteps  # noqa: E402
from voltci.runner.workspace import checkout  # noqa: E402
from voltci.store import Store  # noqa: E402

WAIT_S = 900.0


class Volt:
    """Observer, scheduler and runners of one Volt against one Redis, as processes."""

    def __init__(self, work: Path, server: RedisServer, **settings: object):
        self.work, self.server = work, server
        work.mkdir(parents=True, exist_ok=True)
        self.settings = Settings(redis_url=server.url, workspace_dir=str(work / "ws"), retries=0, **settings)
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("VOLT_")},
                    **as_environment(self.settings), "PYTHONPATH": str(ROOT)}
        self.procs: list[subprocess.Popen] = []
        self.conn = redis.Redis.from_url(server.url, decode_responses=True)

    def start(self, *args: str) -> subprocess.Popen:
        with open(self.work / f"{args[0]}-{len(self.procs)}.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "voltci", *args], env=self.env, cwd=self.work, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def watch(self, repo: Path, name: str) -> None:
        """The observer on `repo` (woken by `volt notify`, else every 10 minutes), a scheduler, one runner."""
        self.start("observe", "--repo", str(repo), "--name", name, "--poll", "600")
        self.start("scheduler")
        self.runners(1)
        time.sleep(1.0)  # the observer has registered the repository and listens for notifications

    def runners(self, count: int) -> None:
        while self.live_runners() < count:
            self.start("worker")
            deadline = time.monotonic() + 60
            while self.live_runners() < min(count, len([p for p in self.procs if "worker" in str(p.args)])):
                if time.monotonic() > deadline:
                    raise SystemExit("a runner did not start")
                time.sleep(0.1)

    def live_runners(self) -> int:
        return len(Store(self.conn).runners.live())

    def push_and_wait(self, repo: Path, name: str, n: int) -> float:
        """Commit, `volt notify`, and wait for the build's result: seconds from push to result."""
        (repo / "volt-bench.txt").write_text(str(n))
        subprocess.run([*GIT, "add", "volt-bench.txt"], cwd=repo, check=True)
        subprocess.run([*GIT, "commit", "-q", "-m", f"bench {n}"], cwd=repo, check=True)
        sha = subprocess.run([*GIT, "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "voltci", "notify", "--repo", name], env=self.env, check=True,
                       capture_output=True)
        key = keys.build(keys.build_id(name, sha))
        deadline = time.monotonic() + WAIT_S
        while self.conn.hget(key, "status") not in ("passed", "failed", "error", "timeout", "cancelled"):
            if time.monotonic() > deadline:
                raise SystemExit(f"build {sha[:10]} of {name} did not end")
            time.sleep(0.01)
        return time.perf_counter() - started

    def stop(self) -> None:
        for proc in self.procs:
            tree = descendants(proc.pid)
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)
            kill_all(tree)
        self.conn.close()


def median_ratio(ours: list[float], theirs: list[float]) -> float:
    return statistics.median(ours) / statistics.median(theirs)


def timed(func: Callable[[], object]) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def add_history(repo: Path, commits: int) -> None:
    """`commits` more commits (through fast-import), each changing one data file: a long history."""
    head = git(["rev-parse", "HEAD"], cwd=repo).strip()
    stream = []
    for n in range(commits):
        data = f"line {n}\n" * (n % 50 + 1)
        stream += [f"commit refs/heads/main\ncommitter Bench <b@volt.invalid> {1700000000 + n} +0000\n"
                   f"data {len(f'history {n}')}\nhistory {n}\n"
                   + (f"from {head}\n" if n == 0 else "")
                   + f"M 644 inline history/data{n % 20}.txt\ndata {len(data)}\n{data}\n"]
    subprocess.run([*GIT, "fast-import", "--quiet"], cwd=repo, input="".join(stream).encode(), check=True)
    subprocess.run([*GIT, "reset", "-q", "--hard", "main"], cwd=repo, check=True)


def bench_overhead(volt: Volt, repo: Path, name: str, runs: int) -> tuple[list[float], list[float]]:
    volt.push_and_wait(repo, name, 0)  # warm: environment made, worktree in the pool
    ours, bare = [], []
    clone = volt.work / "bare-clone"
    for n in range(1, runs + 1):
        ours.append(volt.push_and_wait(repo, name, n))
        shutil.rmtree(clone, ignore_errors=True)
        subprocess.run([*GIT, "clone", "-q", str(repo), str(clone)], check=True)
        bare.append(timed(lambda: subprocess.run([sys.executable, "-m", "unittest", "discover"], cwd=clone,
                                                 capture_output=True, timeout=WAIT_S)))
    return ours, bare


def bench_sandbox_step(work: Path, runs: int) -> tuple[list[float], list[float], list[float]]:
    """One trivial step run in a build's sandbox without network, in one with a network of its own
    (slirp4netns and its firewall), and without a sandbox, in turn, same limits."""
    tree, scratch = work / "step-tree", work / "step-scratch"
    tree.mkdir(parents=True)
    limits = Limits.of_runner("50%", 4096)
    walled = Sandbox.for_build(tree, scratch, Path(sys.executable), limits)
    networked = walled.with_network(True)
    if networked.refusal():
        raise SystemExit(f"bench: {networked.refusal()}")
    bare = Sandbox.for_build(tree, scratch, Path(sys.executable), limits, enabled=False)
    step = [sys.executable, "-c", "pass"]

    def run(box: Sandbox) -> float:
        return timed(lambda: run_process(step, tree, scratch / "step.log", Budget(60), lambda: None, "bench", box))
    inside, online, outside = [], [], []
    for _ in range(runs):
        inside.append(run(walled.with_network(False)))
        online.append(run(networked))
        outside.append(run(bare))
    return inside, online, outside


def bench_branch_scope(work: Path, repo: Path, runs: int) -> tuple[list[float], list[float]]:
    """A build of the default branch that reuses its environment, against the first build of a new branch
    (its worktree made, its environment an overlay of the default branch's), in turn: checkout, set up
    and the tests, in process."""
    settings = Settings(workspace_dir=str(work / "scope-ws"), retries=0)
    sha = git(["rev-parse", "HEAD"], cwd=repo).strip()
    default = git(["symbolic-ref", "--short", "HEAD"], cwd=repo).strip()

    def build(branch: str) -> float:
        def steps() -> None:
            with checkout(settings.workspace_dir, "scope", str(repo), sha, branch=branch) as space, \
                    BuildSteps(space.tree, space.scratch, "scope", settings, lambda: None, "bench", None,
                               space.scope) as run:
                outcome = run.prepare() or run.set_up() or run.test()
                if outcome.status.value not in ("passed", "failed"):
                    raise SystemExit(f"bench: the build of {branch} ended {outcome.status.value}: {outcome.reason}")
        return timed(steps)
    build(default)  # the default branch's environment, made once
    reused, first = [], []
    for n in range(runs):
        reused.append(build(default))
        first.append(build(f"bench-branch-{n}"))
    return reused, first


def bench_checkout(work: Path, repo: Path, runs: int) -> tuple[list[float], list[float], list[float], list[float]]:
    """Switching between two commits far apart in history, by Volt and by plain git."""
    first = git(["rev-list", "--max-parents=0", "HEAD"], cwd=repo).split()[:1]
    shas = first + [git(["rev-parse", "HEAD"], cwd=repo).strip()]
    workspace_dir = str(work / "checkout-ws")
    branch = git(["symbolic-ref", "--short", "HEAD"], cwd=repo).strip()  # a build of the default branch
    with checkout(workspace_dir, "bench", str(repo), shas[1], branch=branch):
        pass  # the mirror, and a worktree in the pool
    mirror = Mirror(host_dir(workspace_dir) / "mirrors", "bench", str(repo))
    reused = work / "reused"
    git(["worktree", "add", "--detach", "--quiet", str(reused), shas[1]], cwd=mirror.path)
    ours, added, reuse, cloned = [], [], [], []
    for n in range(runs):
        sha = shas[n % 2]

        def volt_checkout(sha: str = sha) -> None:
            with checkout(workspace_dir, "bench", str(repo), sha, branch=branch):
                pass
        ours.append(timed(volt_checkout))
        fresh = work / f"added-{n}"
        added.append(timed(lambda fresh=fresh, sha=sha: git(["worktree", "add", "--detach", "--quiet", str(fresh),
                                                             sha], cwd=mirror.path)))
        shutil.rmtree(fresh)
        git(["worktree", "prune"], cwd=mirror.path)
        reuse.append(timed(lambda sha=sha: (git(["checkout", "--force", "--detach", "--quiet", sha], cwd=reused),
                                            git(["clean", "-ffdxq"], cwd=reused))))
        target = work / f"clone-{n}"
        # --no-local: objects are copied through git's transport, as from a server, not hard-linked.
        cloned.append(timed(lambda target=target, sha=sha: subprocess.run(
            [*GIT, "clone", "-q", "--no-local", "--no-checkout", str(repo), str(target)], check=True) and None
            or git(["checkout", "-q", sha], cwd=target)))
        shutil.rmtree(target)
    return ours, added, reuse, cloned


def bench_sharding(work: Path, server: RedisServer, repo: Path, runs: int) -> tuple[list[float], list[float]]:
    """The same suite pushed to 1 runner and to 2 runners (split in two), alternately."""
    volt = Volt(work / "shard-volt", server, shard_threshold=100, queue="shards")
    try:
        volt.watch(repo, "shards")
        volt.push_and_wait(repo, "shards", 0)  # warm: environment made, what each test cost recorded
        one, two = [], []
        for n in range(1, runs + 1):
            one.append(volt.push_and_wait(repo, "shards", 10_000 + 2 * n))
            volt.runners(2)
            if n == 1:
                volt.push_and_wait(repo, "shards", 10_000)  # warm the second runner's environment and worktree
            two.append(volt.push_and_wait(repo, "shards", 10_000 + 2 * n + 1))
            _stop_one_runner(volt)
        records = Store(volt.conn).records
        split = records.get_build(records.resolve_commit(git(["rev-parse", "HEAD"], cwd=repo).strip(), "shards"))
        if split is None or split.shards < 2:
            raise SystemExit("the 2-runner build was not split: the sharding figure would mean nothing")
        return two, one
    finally:
        volt.stop()


def _stop_one_runner(volt: Volt) -> None:
    workers = [p for p in volt.procs if "worker" in str(p.args) and p.poll() is None]
    victim = workers[-1]
    os.killpg(victim.pid, signal.SIGTERM)
    victim.wait(timeout=30)
    volt.procs.remove(victim)
    deadline = time.monotonic() + 30
    while volt.live_runners() > len(workers) - 1 and time.monotonic() < deadline:
        time.sleep(0.1)


def bench_dispatch(work: Path, server: RedisServer, builds: int, tag: str = "") -> tuple[float, float]:
    """Builds per second of a trivial suite through Volt, and rq jobs per second running the same."""
    repo = work / f"trivial{tag}"
    repo.mkdir()
    subprocess.run([*GIT, "init", "-q", "-b", "main"], cwd=repo, check=True)
    (repo / "test_trivial.py").write_text("import unittest\n\nclass T(unittest.TestCase):\n"
                                          "    def test_ok(self):\n        pass\n")
    subprocess.run([*GIT, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", "trivial"], cwd=repo, check=True)
    volt = Volt(work / f"dispatch-volt{tag}", server, queue=f"dispatch{tag}")
    try:
        rq_conn = redis.Redis.from_url(server.url)
        watch = RepoWatch(Store(rq_conn, volt.settings), str(repo), name=f"trivial{tag}")
        watch.validate()
        first = watch.poll()
        volt.runners(1)
        _wait_all(volt.conn, [b.id for b in first])  # warm
        for n in range(builds):
            (repo / "n.txt").write_text(str(n))
            subprocess.run([*GIT, "add", "n.txt"], cwd=repo, check=True)
            subprocess.run([*GIT, "commit", "-q", "-m", f"n {n}"], cwd=repo, check=True)
        started = time.perf_counter()
        created = watch.poll()
        _wait_all(volt.conn, [b.id for b in created])
        volt_rate = len(created) / (time.perf_counter() - started)
    finally:
        volt.stop()
    queue = Queue(f"raw{tag}", connection=rq_conn)
    jobs = [queue.enqueue("bench_jobs.run_suite", str(repo)) for _ in range(len(created))]
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rq.cli", "worker", "--burst", "--url", server.url, f"raw{tag}"],
                   cwd=ROOT / "bench", env={**os.environ, "PYTHONPATH": f"{ROOT / 'bench'}:{ROOT}"},
                   capture_output=True, check=True, timeout=WAIT_S)
    raw_rate = len(jobs) / (time.perf_counter() - started)
    return volt_rate, raw_rate


def _wait_all(conn: redis.Redis, build_ids: list[str]) -> None:
    """Until every build has ended: only the builds still open are read again, every 50 ms, so the
    waiting takes little of the machine the runner builds on."""
    store, waiting = Store(conn), list(build_ids)
    deadline = time.monotonic() + WAIT_S
    while waiting:
        waiting = [b for b in waiting if not store.records.get_build(b).status.is_final]
        if time.monotonic() > deadline:
            raise SystemExit("builds did not end")
        if waiting:
            time.sleep(0.05)


def only_dispatch(work: Path, builds: int, runs: int) -> None:
    """The dispatch figure alone, `runs` times against one private Redis: each run's ratio, and the median."""
    rates = []
    with RedisServer(work / "redis") as server:
        for n in range(runs):
            rates.append(bench_dispatch(work, server, builds, tag=f"-{n}"))
            print(f"run {n + 1}: {rates[-1][0]:.2f} builds/s through Volt, {rates[-1][1]:.2f} rq jobs/s: "
                  f"ratio {rates[-1][0] / rates[-1][1]:.2f}", flush=True)
    ratio = statistics.median(volt / raw for volt, raw in rates)
    print(f"fast: dispatch {ratio:.2f} (median of {runs} runs of {builds} builds; goal >= 0.5)")


def bench_observer(work: Path, server: RedisServer, repo: Path, runs: int) -> tuple[list[float], list[float]]:
    rq_conn = redis.Redis.from_url(server.url)
    settings = Settings(redis_url=server.url, workspace_dir=str(work / "observer-ws"), queue="observer")
    watch = RepoWatch(Store(rq_conn, settings), str(repo), name="observed")
    watch.validate()
    watch.poll()
    ours, ls_remote = [], []
    for _ in range(runs):
        ours.append(timed(lambda: watch.poll()))
        ls_remote.append(timed(lambda: subprocess.run(["git", "ls-remote", str(repo)], capture_output=True,
                                                      check=True)))
    return ours, ls_remote


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--package", default="more-itertools==11.2.1")
    parser.add_argument("--history", type=int, default=3000, help="Commits added to the first suite's repository.")
    parser.add_argument("--builds", type=int, default=20, help="Trivial builds for the dispatch figure.")
    parser.add_argument("--skip-sharding", action="store_true", help="Leave out the sharding figure.")
    parser.add_argument("--only", choices=["dispatch"], default=None,
                        help="Only this figure, --runs times (each Volt's run then rq's), and their median.")
    args = parser.parse_args()
    if args.runs < 2:
        raise SystemExit("refusing to print a ratio from a single run: use --runs 2 or more")
    work = Path(tempfile.mkdtemp(prefix="volt-fast-"))
    try:
        if args.only == "dispatch":
            only_dispatch(work, args.builds, args.runs)
            return
        with RedisServer(work / "redis") as server:
            repo = make_repo(args.package, work / "src")
            add_history(repo, args.history)
            volt = Volt(work / "volt", server)
            try:
                volt.watch(repo, "suite")
                overhead = bench_overhead(volt, repo, "suite", args.runs)
            finally:
                volt.stop()
            checkout_times = bench_checkout(work, repo, max(args.runs, 6))
            step_times = bench_sandbox_step(work, max(args.runs, 20))
            scope_times = bench_branch_scope(work, repo, args.runs)
            observer_times = bench_observer(work, server, repo, max(args.runs, 10))
            dispatch = bench_dispatch(work, server, args.builds)
            sharding = None if args.skip_sharding else bench_sharding(work, server, repo, args.runs)
        ours, added, reuse, cloned = checkout_times
        best_git = min(statistics.median(added), statistics.median(reuse))
        ratios = {
            "overhead": median_ratio(*overhead),
            "checkout": statistics.median(ours) / best_git,
            "checkout_vs_clone": statistics.median(ours) / statistics.median(cloned),
            "sharding": median_ratio(*sharding) if sharding else float("nan"),
            "dispatch": dispatch[0] / dispatch[1],
            "observer": median_ratio(*observer_times),
        }
        ms = lambda values: f"{statistics.median(values) * 1000:.0f} ms"  # noqa: E731
        sandbox_ms = (statistics.median(step_times[0]) - statistics.median(step_times[2])) * 1000
        network_ms = (statistics.median(step_times[1]) - statistics.median(step_times[0])) * 1000
        ratios["new_branch"] = median_ratio(scope_times[1], scope_times[0])
        rows = [
            ("suite / history", f"{args.package}, {args.history} commits added"),
            ("push → result with volt notify, median", ms(overhead[0])),
            ("bare python -m unittest discover, median", ms(overhead[1])),
            ("  build overhead ratio (goal ≤ 1.15)", f"{ratios['overhead']:.2f}"),
            ("one step (python -c pass) in its sandbox / with a network of its own / without one, median",
             f"{ms(step_times[0])} / {ms(step_times[1])} / {ms(step_times[2])}"),
            ("  the sandbox's own cost per step; its network's", f"{sandbox_ms:.1f} ms; {network_ms:.1f} ms"),
            ("default branch's build, environment reused / a new branch's first build, median",
             f"{ms(scope_times[0])} / {ms(scope_times[1])}"),
            ("  a new branch's first build ÷ a reused environment's", f"{ratios['new_branch']:.2f}"),
            ("Volt workspace preparation, median", ms(ours)),
            ("git worktree add / reused checkout -f + clean, median", f"{ms(added)} / {ms(reuse)}"),
            ("fresh git clone --no-local + checkout, median", ms(cloned)),
            ("  checkout ratio (goal ≤ 1.25); vs clone (goal ≤ 0.1)",
             f"{ratios['checkout']:.2f}; {ratios['checkout_vs_clone']:.3f}"),
            ("push → result, 2 runners / 1 runner, median",
             f"{ms(sharding[0])} / {ms(sharding[1])}" if sharding else "-"),
            ("  sharding ratio (goal ≤ 0.6)", f"{ratios['sharding']:.2f}"),
            ("trivial builds/s through Volt / rq jobs/s (same suite)", f"{dispatch[0]:.1f} / {dispatch[1]:.1f}"),
            ("  dispatch ratio (goal ≥ 0.5)", f"{ratios['dispatch']:.2f}"),
            ("poll with nothing new / git ls-remote, median", f"{ms(observer_times[0])} / {ms(observer_times[1])}"),
            ("  observer ratio (goal ≤ 2)", f"{ratios['observer']:.2f}"),
            ("runs per figure", str(args.runs)),
        ]
        print_table(rows)
        print(f"fast: overhead {ratios['overhead']:.2f} (sandboxed; {sandbox_ms:.1f} ms a step, its network "
              f"{network_ms:.1f} ms), new branch {ratios['new_branch']:.2f}, "
              f"checkout {ratios['checkout']:.2f} "
              f"({ratios['checkout_vs_clone']:.3f} of a clone), sharding {ratios['sharding']:.2f}, "
              f"dispatch {ratios['dispatch']:.2f}, observer {ratios['observer']:.2f} (medians of {args.runs})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
