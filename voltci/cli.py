"""The `volt` command. Thin: each command parses its flags, builds settings, and calls one module.

Every error a person can cause ends as one line on stderr and exit status 2 (see errors.py);
`volt report` also exits 1 for a build that did not pass and 3 for one not finished yet. Everything
is printed through terminal.py, which takes out the control sequences a build's text may carry.
"""

from __future__ import annotations

import functools
import getpass
import json
import logging
import re
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
import redis

from voltci import pullrequests, report
from voltci.clock import now_iso, seconds_between
from voltci.config import Settings, config_file, load_settings
from voltci.connection import connect, redacted
from voltci.dispatch import Placed, parse_priority
from voltci.errors import BadInput, Interrupted, RedisUnavailable, VoltError
from voltci.failover import primary_of
from voltci.keys import parse_job_id
from voltci.logstream import follow_log
from voltci.models import Build
from voltci.observer import RepoWatch, observe_loop
from voltci.outage import describe, is_full
from voltci.pulls import check_number
from voltci.scheduler import Scheduler
from voltci.store import Policy, Store
from voltci.terminal import Cleaner, CleanFormatter, echo
from voltci.watchlist import WatchList


class OneLineErrors:
    """Turns Volt's and Redis' errors into one line on stderr and the right exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)  # type: ignore[misc]
        except VoltError as exc:
            echo(f"volt: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except redis.RedisError as exc:  # one that got past the boundaries that translate them
            echo(f"volt: {describe(exc)}" if is_full(exc) else f"volt: Redis error: {exc}", err=True)
            ctx.exit(RedisUnavailable.exit_code)
        except KeyboardInterrupt:
            echo("volt: interrupted", err=True)
            ctx.exit(Interrupted.exit_code)


class VoltGroup(OneLineErrors, click.Group):
    pass


class VoltCommand(OneLineErrors, click.Command):
    pass


@dataclass
class App:
    """What every command shares: settings from flags/env/config and a lazily opened store."""

    settings: Settings
    _store: Store | None = field(default=None)
    config_path: str | None = None  # as given with --config

    def store(self) -> Store:
        """The store, on a client that has answered (or one line saying why Redis cannot be reached)."""
        if self._store is None:
            self._store = Store(connect(self.settings.effective_redis_url), self.settings)
        return self._store


SETTINGS_AS_FLAGS = ("poll", "keep_builds", "keep_days")


def common_options(func: Callable) -> Callable:
    """--redis-url and --config on every command; builds the App from them."""

    @click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                  help="Config file (default: $VOLT_CONFIG, else ./config/volt.toml if present).")
    @click.option("--redis-url", default=None, metavar="URL",
                  help="Redis to use (default: $VOLT_REDIS_URL, config, redis://127.0.0.1:6379/0).")
    @functools.wraps(func)
    def wrapper(config_path: str | None, redis_url: str | None, **kwargs: Any) -> Any:
        overrides = {"redis_url": redis_url}
        for name in SETTINGS_AS_FLAGS:  # settings that some commands take as flags of their own
            if name in kwargs:
                overrides[name] = kwargs.pop(name)
        app = App(load_settings(config_path, overrides), config_path=config_path)
        return func(app, **kwargs)
    return wrapper


def setup_logging(level: int = logging.INFO) -> None:
    """Log lines on stderr, cleaned for the terminal (they may quote a commit's subject or a job's
    description; rq's worker logs through this handler too)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(CleanFormatter("%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    logging.basicConfig(level=level, handlers=[handler])


@click.group(cls=VoltGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="voltci")
def cli() -> None:
    """Volt CI: every commit of your repositories built and tested, coordinated through Redis."""


# ---------------------------------------------------------------- observer

def observe_options(func: Callable) -> Callable:
    for decorator in reversed([
        click.option("--repo", "repos", multiple=True, metavar="PATH_OR_URL",
                     help="Repository to watch (repeatable; default: the [[repos]] tables of the config file, "
                          "followed as it changes)."),
        click.option("--name", "names", multiple=True, metavar="NAME",
                     help="Name of the repository in Volt, one per --repo (default: from its path)."),
        click.option("--branch", "branches", multiple=True, metavar="BRANCH",
                     help="Branch to build, or a glob such as 'release/*' or '*' (repeatable; default: the "
                          "repository's default branch)."),
        click.option("--poll", type=float, default=None, help="Seconds between polls (default 5)."),
        click.option("--once", is_flag=True, help="One pass, then exit (for cron)."),
        click.option("--supersede", "supersede", multiple=True, metavar="BRANCH",
                     help="A newer commit of BRANCH skips its queued older builds (repeatable; 'all': every "
                          "branch but the default one, which is superseded only when named)."),
        click.option("--interrupt", is_flag=True,
                     help="With --supersede: a newer commit also cancels the branch's older running builds."),
        click.option("--priority", default="normal", metavar="high|normal|low",
                     help="Dispatch priority of these repositories (default: normal)."),
    ]):
        func = decorator(func)
    return func


def make_watches(app: App, repos: tuple[str, ...], names: tuple[str, ...], branches: tuple[str, ...],
                 supersede: tuple[str, ...] = (), priority: str = "normal", interrupt: bool = False) -> WatchList:
    """The repositories to watch, each checked (it exists, its branches exist) and registered: those
    given with --repo, else the config file's [[repos]] tables (followed as the file changes)."""
    if names and len(names) != len(repos):
        raise BadInput("give one --name per --repo, or none")
    level = parse_priority(priority)
    if interrupt and not supersede:
        raise BadInput("--interrupt needs --supersede BRANCH: it cancels the running builds that a newer commit "
                       "of a superseded branch makes pointless")
    if not repos:
        path = config_file(app.config_path)
        if path is None:
            raise BadInput("no repository to watch: give --repo, or [[repos]] tables in the config file "
                           "(--config, VOLT_CONFIG or ./config/volt.toml)")
        return WatchList.from_file(app.store(), path)
    store = app.store()
    watches = [RepoWatch(store, url, names[i] if names else None, list(branches), list(supersede), level, interrupt)
               for i, url in enumerate(repos)]
    for watch in watches:
        watch.validate()
    return WatchList(store, watches)


def run_observer(app: App, watches: WatchList, once: bool) -> None:
    if once:
        for watch in watches.current():
            for build in watch.poll():
                echo(f"queued {build.repo} {build.commit[:10]} {build.subject}")
        return
    stop = threading.Event()
    for watch in watches.current():
        logging.getLogger("volt.observer").info(
            "watching %s (%s) branches %s every %g s%s", watch.name, watch.url, ", ".join(watch.branches),
            app.settings.poll, f", priority {watch.priority.value}" if watch.priority.value != "normal" else "")
    if watches.path is not None:
        logging.getLogger("volt.observer").info("following %s for changes to its [[repos]]", watches.path)
    observe_loop(watches, app.settings.poll, stop)


@click.command(cls=VoltCommand, name="observe", context_settings={"help_option_names": ["-h", "--help"]})
@observe_options
@common_options
def observe(app: App, repos: tuple[str, ...], names: tuple[str, ...], branches: tuple[str, ...],
            once: bool, supersede: tuple[str, ...], interrupt: bool, priority: str) -> None:
    """Watch repositories and enqueue a build for every new commit (also bin/volt-observe)."""
    setup_logging()
    run_observer(app, make_watches(app, repos, names, branches, supersede, priority, interrupt), once)


cli.add_command(observe)


@cli.command(name="notify", cls=VoltCommand)
@click.option("--repo", required=True, help="Name of the repository that changed.")
@click.argument("ref", required=False)
@common_options
def notify_cmd(app: App, repo: str, ref: str | None) -> None:
    """Have the observer look at a repository now (for a git post-receive hook)."""
    heard = app.store().repos.notify(repo, ref)
    if heard:
        echo(f"notified {heard} observer(s) of {repo}" + (f" ({ref})" if ref else ""))
    else:
        echo(f"volt: no observer is listening; {repo} is picked up at its next poll", err=True)


# ---------------------------------------------------------------- runner

@cli.command(cls=VoltCommand)
@click.option("--burst", is_flag=True, help="Exit when the queue is empty.")
@click.option("--name", default=None, help="Worker name (default: host.pid).")
@common_options
def worker(app: App, burst: bool, name: str | None) -> None:
    """Run builds: an rq worker on Volt's queue (same as `rq worker --url URL volt`)."""
    setup_logging()
    from voltci.runner.worker import make_worker  # the build code: only a runner needs it

    w = make_worker(connect(app.settings.effective_redis_url, decode=False), app.settings, name)
    w.work(burst=burst, logging_level="INFO")


# ---------------------------------------------------------------- scheduler

@cli.command(name="scheduler", cls=VoltCommand)
@common_options
def scheduler_cmd(app: App) -> None:
    """Re-dispatch the builds of runners whose heartbeat expired (run one or more; one acts)."""
    setup_logging()
    store = app.store()  # fail now, in one line, if Redis cannot be reached at all
    stop = threading.Event()
    _stop_on_sigterm(stop)
    logging.getLogger("volt.scheduler").info(
        "watching runner heartbeats (ttl %g s) in %s", app.settings.heartbeat_ttl,
        redacted(app.settings.effective_redis_url))
    Scheduler(app.settings, store).run(stop)


def _stop_on_sigterm(stop: threading.Event) -> None:
    def handler(signum: int, frame: object) -> None:
        stop.set()
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@cli.command(cls=VoltCommand)
@click.argument("commit")
@click.option("--repo", default=None, help="Repository name, when the commit prefix is in several.")
@common_options
def cancel(app: App, commit: str, repo: str | None) -> None:
    """Cancel a queued or running build (its tests' whole process group is killed)."""
    store = app.store()
    build_id = store.records.resolve_commit(commit, repo)
    before = store.builds.cancel(build_id)
    if before is None:
        build = store.records.get_build(build_id)
        status_now = build.status.value if build else "gone"
        raise BadInput(f"build of {commit} has already ended ({status_now}); nothing to cancel")
    where = f" on {before.runner}, which stops its tests within a second" if before.status.value == "running" else ""
    echo(f"cancelled {before.repo} {before.short} (was {before.status.value}{where})")


@cli.command(cls=VoltCommand)
@click.argument("repo")
@click.argument("number")
@common_options
def approve(app: App, repo: str, number: str) -> None:
    """Approve the head a pull request waits with (one from a fork whose author is not trusted): it is built."""
    pull = _pull_number(number)
    state, build = pullrequests.approve(app.store(), repo, pull, f"{_user()} (volt approve)")
    if build is None:
        echo(f"{repo} pull request #{pull} at {state.head[:10]} needs no approval: "
             f"{'its author is trusted' if state.trusted else 'that head was approved already'}")
        return
    echo(f"approved {repo} pull request #{pull} at {state.head[:10]}: queued as it would merge into {build.branch}")


def _pull_number(text: str) -> int:
    found = check_number(text.strip())
    if found is None:
        raise BadInput(f"not a pull request number: '{text[:30]}' (a whole number from 1)")
    return found


def _user() -> str:
    try:
        return getpass.getuser()[:50]
    except (KeyError, OSError):
        return "someone"


# ---------------------------------------------------------------- reporter

@cli.command(cls=VoltCommand, name="report")
@click.argument("commit", required=False)
@click.option("--repo", default=None, help="Repository name, when the commit prefix is in several.")
@click.option("--pr", "pull_text", default=None, metavar="N",
              help="The newest build of this pull request (with --repo) instead of a commit's.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report.")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Also write a JUnit XML file.")
@common_options
def report_cmd(app: App, commit: str | None, repo: str | None, pull_text: str | None, as_json: bool,
               junit_path: str | None) -> None:
    """Show a commit's build (or a pull request's, by its head commit or --pr N --repo NAME): exit 0 passed,
    1 failed, 3 not finished, 2 bad input."""
    pull = _pull_number(pull_text) if pull_text is not None else None
    if (commit is None) == (pull is None):
        raise BadInput("give a COMMIT, or --pr N with --repo NAME (not both)")
    if pull is not None and repo is None:
        raise BadInput("--pr needs --repo NAME: pull request numbers are per repository")
    store = app.store()
    if pull is not None and repo is not None:
        build_id = store.pulls.build_of(repo, pull).id
        commit = f"pull request #{pull}"
    else:
        build_id = store.records.resolve_commit(commit or "", repo)
    build = store.records.get_build(build_id)
    if build is None:
        raise BadInput(f"the build of '{commit}' has no record (was it pruned?)")
    tests = store.records.get_tests(build_id) if as_json or junit_path else store.records.listed_tests(build_id)
    attempts = store.records.get_attempts(build_id)
    shards = store.records.get_shards(build_id)
    legs = store.records.get_legs(build_id)
    if junit_path:
        try:
            with open(junit_path, "wb") as fh:
                fh.write(report.as_junit(build, tests, legs))
        except OSError as exc:
            raise BadInput(f"cannot write {junit_path}: {exc.strerror}") from None
    if as_json:
        echo(json.dumps(report.as_dict(build, tests, attempts, shards, legs), indent=2))
    else:
        echo(report.as_text(build, tests, attempts, shards, legs))
    sys.exit(report.exit_status(build))


@cli.command(cls=VoltCommand)
@click.option("--repo", default=None, help="Only this repository.")
@click.option("-n", "limit", type=click.IntRange(1, 10000), default=20, show_default=True, help="How many tests.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@common_options
def flaky(app: App, repo: str | None, limit: int, as_json: bool) -> None:
    """The tests that were flaky most often (failed, then passed when run again on their own)."""
    store = app.store()
    known = store.repos.known()
    if repo is not None and repo not in known:
        raise BadInput(f"unknown repository '{repo}'")
    found = store.history.flaky_tests([repo] if repo else sorted(known), limit)
    if as_json:
        echo(json.dumps([f.to_dict() for f in found], indent=2))
        return
    if not found:
        echo("no flaky tests recorded" + (f" for '{repo}'" if repo else ""))
    for f in found:
        last = f.last_build.rsplit("-", 1)[-1][:10]
        echo(f"{f.times:>5}x  {f.repo}  {f.test}  (last in {last})")


@cli.command(name="test-history", cls=VoltCommand)
@click.argument("repo")
@click.argument("test_id")
@click.option("--branch", default=None, help="Only the builds of this branch.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@common_options
def test_history_cmd(app: App, repo: str, test_id: str, branch: str | None, as_json: bool) -> None:
    """One test's outcome and duration in each of the repository's newest builds, when it last failed
    and with what message, and how often it was flaky (the web page's /repo/NAME/test/ID)."""
    from voltci import testhistory

    store = app.store()
    if not store.repos.is_known(repo):
        raise BadInput(f"unknown repository '{repo}'")
    if not testhistory.is_test_id(test_id):
        raise BadInput(f"not a test id: {test_id[:200]!r}")
    found = testhistory.read(store, repo, test_id, branch)
    if found is None:
        raise BadInput(f"no test '{test_id}' in the newest builds of '{repo}' (volt keeps a test's history "
                       f"for the newest {testhistory.TRAIL_BUILDS})")
    echo(json.dumps(testhistory.as_dict(found), indent=2) if as_json else testhistory.as_text(found))


@cli.command(name="log", cls=VoltCommand)
@click.argument("commit")
@click.option("--repo", default=None, help="Repository name, when the commit prefix is in several.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing the output as it comes, until the build ends.")
@click.option("--leg", default=None, metavar="NAME", help="The output of this matrix leg (like py3.12).")
@common_options
def log_cmd(app: App, commit: str, repo: str | None, follow: bool, leg: str | None) -> None:
    """Print a build's output (setup and tests); -f follows it live while the build runs, and says on
    stderr the moment its first test fails. A matrix build's own output is its split into legs; each
    leg's is its own (--leg NAME)."""
    store = app.store()
    build_id = store.records.resolve_commit(commit, repo)
    if leg is not None:
        build_id = _leg_of(store, build_id, commit, leg)
    if not follow:
        echo(store.logs.read(build_id), nl=False)
        return
    limit_s = app.settings.build_timeout * app.settings.max_attempts + 600
    cleaner = Cleaner()  # a sequence may be cut between two pieces of the stream
    at_line_start = True

    def write(text: str) -> None:
        nonlocal at_line_start
        click.echo(cleaner.feed(text), nl=False)
        at_line_start = text.endswith("\n") if text else at_line_start

    def first_failure(running: Build) -> None:
        """Said on stderr, as Volt's other words are: stdout stays the build's output."""
        sys.stdout.flush()
        echo(("" if at_line_start else "\n") + f"[volt: {report.first_failure_line(running)}]", err=True)

    build = follow_log(store, build_id, write, limit_s, first_failure)
    click.echo(cleaner.flush(), nl=False)
    if build is None or not build.status.is_final:
        raise BadInput(f"the build of {commit} did not end within {limit_s:g} s; stopped following")
    echo(f"[volt: build {build.status.value}{' — ' + build.reason if build.reason else ''}]", err=True)
    sys.exit(report.exit_status(build))


def _leg_of(store: Store, build_id: str, commit: str, name: str) -> str:
    """The id of the matrix leg `name` of a build, or one line saying which legs it has."""
    legs = store.records.get_legs(build_id)
    for leg in legs:
        if leg.leg == name:
            return leg.id
    if not legs:
        raise BadInput(f"the build of {commit} has no matrix legs (its .volt.toml has no [matrix], or it has not "
                       f"been split yet)")
    raise BadInput(f"the build of {commit} has no leg {name[:100]!r}; its legs: {', '.join(leg.leg for leg in legs)}")


@cli.command(cls=VoltCommand)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@common_options
def status(app: App, as_json: bool) -> None:
    """Runners (alive, heartbeat age, current build), the queue (each build's position and why it stands
    there), running builds, lost attempts, and how much of Redis Volt uses."""
    store = app.store()
    memory = store.usage.memory()
    order = store.queue.plan()
    data: dict[str, Any] = {
        "redis": redacted(app.settings.effective_redis_url),
        "replication": {"primary": primary_of(store.r).address, **store.runners.replication()},
        "queue": app.settings.queue,
        "queued": store.queue.depth(),
        "dispatch": app.settings.dispatch,
        "queue_order": [_standing(n, placed) for n, placed in enumerate(order[:QUEUE_LISTED], 1)],
        "running": [{"repo": b.repo, "commit": b.commit, "runner": b.runner, "started_at": b.started_at,
                     "age_s": seconds_between(b.started_at, now_iso()) if b.started_at else 0.0,
                     "attempt": b.attempt} for b in store.records.running_builds()],
        "runners": [row.to_dict() for row in store.runners.table()],
        "lost": [lost.to_dict() for lost in store.runners.recent_lost()],
        "memory": {"used_bytes": memory.used, "maxmemory_bytes": memory.maxmemory, "policy": memory.policy,
                   "full": memory.full},
        "repositories": [{"repo": u.repo, "builds": u.builds, "bytes_per_finished_build": u.bytes_per_build}
                         for u in map(store.usage.repo_usage, sorted(store.repos.known()))],
    }
    if as_json:
        echo(json.dumps(data, indent=2))
        return
    replication = data["replication"]
    replicas = ", ".join(f"{r['address']} ({r['state']}, lag {r['lag_s']} s, {r['behind_bytes']} bytes behind)"
                         for r in replication["replicas"]) or "none"
    echo(f"redis: primary {replication['primary']}; replicas: {replicas}")
    echo(f"queue '{data['queue']}': {data['queued']} queued, {len(data['running'])} running"
               f" (dispatch: {data['dispatch']})")
    for q in data["queue_order"][:QUEUE_SHOWN]:
        echo(f"  {q['position']:>4}. {q['repo'] or '-':<16} {q['commit'][:10] or q['job']:<10}  {q['why']}")
    if len(order) > QUEUE_SHOWN:
        echo(f"        … and {len(order) - QUEUE_SHOWN} more (volt status --json lists {QUEUE_LISTED})")
    for b in data["running"]:
        echo(f"  running {b['repo']} {b['commit'][:10]} attempt {b['attempt']} on {b['runner']}"
                   f" for {b['age_s']:.0f} s")
    alive = [r for r in data["runners"] if r["alive"]]
    echo(f"runners: {len(alive)} alive" + (f", {len(data['runners']) - len(alive)} gone"
                                                  if len(alive) < len(data["runners"]) else ""))
    for r in data["runners"]:
        doing = f"building {r['build']} (attempt {r['attempt']})" if r["build"] else ("idle" if r["alive"] else "")
        echo(f"  {r['name']:<28} {'alive' if r['alive'] else 'gone':<6} heartbeat {r['heartbeat_age_s']:.1f} s"
                   f" ago  {doing}".rstrip())
    if data["lost"]:
        echo("recently lost attempts:")
        for lost in data["lost"]:
            echo(f"  {lost['lost_at']} {lost['repo']} {lost['commit'][:10]} attempt {lost['attempt']} on "
                       f"{lost['runner'] or '-'}: {lost['reason']}; {lost['then']}")
    limit = f"{_size(memory.maxmemory)} maxmemory" if memory.maxmemory else "no maxmemory"
    echo(f"redis memory: {_size(memory.used)} used of {limit} ({memory.policy})"
               + ("; FULL: writes are refused" if memory.full else ""))
    for u in data["repositories"]:
        per = _size(u["bytes_per_finished_build"]) if u["bytes_per_finished_build"] is not None else "-"
        echo(f"  {u['repo']:<28} {u['builds']} build(s) kept, {per} per finished build")


QUEUE_SHOWN = 30  # queued builds `volt status` lists; --json lists QUEUE_LISTED
QUEUE_LISTED = 1000


def _standing(position: int, placed: Placed) -> dict[str, Any]:
    """A queued job for `volt status`: where it stands in the queue and why."""
    found = parse_job_id(placed.job_id)
    commit = found[0].rsplit("-", 1)[-1] if found else ""
    return {"position": position, "job": placed.job_id, "repo": placed.repo, "commit": commit,
            "tier": placed.tier.name.lower(), "why": placed.why}


def _size(count: int) -> str:
    """Bytes for people: 512 B, 4.2 KiB, 10.1 MiB, 16.0 GiB."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


@cli.command(cls=VoltCommand)
@click.option("--repo", default=None, help="Only this repository.")
@click.option("-n", "limit", type=click.IntRange(1, 10000), default=20, show_default=True, help="How many builds.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@common_options
def history(app: App, repo: str | None, limit: int, as_json: bool) -> None:
    """The latest builds, newest first, one line each."""
    store = app.store()
    if repo is not None and not store.repos.is_known(repo):
        raise BadInput(f"unknown repository '{repo}'")
    builds = store.history.builds(repo, limit)
    if as_json:
        echo(json.dumps([report.summary_dict(b) for b in builds], indent=2))
        return
    if not builds:
        echo("no builds recorded" + (f" for '{repo}'" if repo else ""))
    for b in builds:
        echo(report.one_line(b))


# ---------------------------------------------------------------- detection

@cli.command(name="detect", cls=VoltCommand)
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option("--python", "python", default=None, metavar="VERSION",
              help="The plan for this Python (like 3.12) instead of this host's own: its tox env when listed.")
def detect_cmd(path: str, as_json: bool, python: str | None) -> None:
    """How a build on this host would set up and run a project's tests, read from its own files (nothing
    is built): by default for this host's own Python, as a runner here builds without a .volt.toml."""
    from pathlib import Path

    from voltci.runner.detect import DetectError, describe, detect
    from voltci.runner.interpreters import own_version

    if not Path(path).is_dir():
        raise BadInput(f"{path}: not a directory")
    if python is not None and not re.fullmatch(r"3\.\d{1,2}", python):
        raise BadInput(f"--python must be a version like 3.12, got {python!r}")
    version = python or own_version()
    try:
        plan = detect(Path(path), python=version)
    except DetectError as exc:
        raise BadInput(str(exc)) from None
    if as_json:
        echo(json.dumps({"python": version, **plan.to_json()}, indent=2))
        return
    whose = "as --python asks" if python else "this host's own, as a build here without a .volt.toml has it"
    echo(f"[volt: the plan for Python {version}, {whose}]\n" + describe(plan))


@cli.command(cls=VoltCommand)
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.option("--repo", default=None, help="Only this repository.")
@click.option("--keep-builds", "keep_builds", default=None, metavar="N",
              help="Builds to keep per repository, newest first (default: the keep_builds setting; 0: no limit).")
@click.option("--keep-days", "keep_days", default=None, metavar="DAYS",
              help="Days of builds to keep (default: the keep_days setting; 0: no limit).")
@common_options
def prune(app: App, dry_run: bool, repo: str | None) -> None:
    """Apply retention now: remove the ended builds beyond keep_builds or older than keep_days (never a
    queued or running build, nor the newest build of a branch), and say what was removed."""
    settings = app.settings
    policy = Policy(settings.keep_builds, settings.keep_days)
    store = app.store()
    if repo is not None and not store.repos.is_known(repo):
        raise BadInput(f"unknown repository '{repo}'")
    if not policy.limited:
        echo("retention is off (keep_builds = 0 and keep_days = 0): nothing to prune")
        return
    before = store.usage.memory().used
    removed = store.retention.prune(policy, repo, dry_run)
    verb = "would remove" if dry_run else "removed"
    for builds in removed.values():
        for build in builds:
            echo(f"{verb} {build.repo} {build.short} {build.branch} {build.status.value} "
                       f"(queued {build.queued_at[:19] or '?'})")
    count = sum(map(len, removed.values()))
    repos = sum(1 for builds in removed.values() if builds)
    limits = " and ".join(part for part in (f"the newest {policy.keep_builds} per repository" if policy.keep_builds
                                            else "", f"{policy.keep_days:g} days" if policy.keep_days else "")
                          if part)
    summary = f"{verb} {count} build(s) of {repos} repository(ies), keeping {limits}"
    if not dry_run:
        summary += f"; Redis memory {_size(before)} → {_size(store.usage.memory().used)}"
    echo(summary)


# ---------------------------------------------------------------- web

@cli.command(name="web", cls=VoltCommand)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (loopback unless told otherwise).")
@click.option("--port", type=click.IntRange(0, 65535), default=8008, show_default=True, help="Port to listen on.")
@common_options
def web_cmd(app: App, host: str, port: int) -> None:
    """The web page: builds, tests, logs, runners, badges, /api/ and rq-dashboard under /rq."""
    from voltci.web.server import serve

    setup_logging(logging.WARNING)
    app.store()  # fail now, in one line, if Redis cannot be reached
    serve(app.settings, host, port, on_ready=lambda url: echo(
        f"Volt web: {url} (rq-dashboard at {url}rq/; {'token set' if app.settings.web_token else 'read-only'})"))


# ---------------------------------------------------------------- one machine

@cli.command(cls=VoltCommand)
@click.option("--repo", "repos", multiple=True, metavar="PATH_OR_URL",
              help="Repository to watch (repeatable; default: an example repository made for you).")
@click.option("--branch", "branches", multiple=True, help="Branch to build (default: the default branch).")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True, help="Runners to start.")
@click.option("--poll", type=float, default=None, help="Seconds between polls (default 5).")
@click.option("--burst", is_flag=True, help="Exit once every build found by the first poll has finished.")
@click.option("--timeout", "burst_timeout", type=float, default=600, show_default=True,
              help="With --burst: give up after this many seconds.")
@click.option("--redis-dir", type=click.Path(file_okay=False), default=None,
              help="Keep the embedded Redis' data here (append-only), so builds outlive volt up.")
@click.option("--web", "with_web", is_flag=True, help="Also serve the web page on 127.0.0.1.")
@click.option("--web-port", type=click.IntRange(0, 65535), default=8008, show_default=True,
              help="Port of the web page, with --web.")
@common_options
def up(app: App, repos: tuple[str, ...], branches: tuple[str, ...], workers: int, burst: bool,
       burst_timeout: float, redis_dir: str | None, with_web: bool, web_port: int) -> None:
    """Everything on one machine: Redis (unless given), runners and the observer; Ctrl-C stops it all."""
    setup_logging(logging.WARNING)  # builds are printed as lines of their own; problems still show
    from voltci.up import run_up  # runners and the web page: the other commands need neither

    sys.exit(run_up(app.settings, list(repos), list(branches), workers, burst, burst_timeout, redis_dir,
                    web_port if with_web else None))


def main() -> None:
    cli(prog_name="volt")


def observe_entry() -> None:
    observe(prog_name="volt-observe")
