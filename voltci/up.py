"""`volt up`: everything on one machine — an embedded Redis unless one is named, N runners, the
scheduler, the observer and, with --web, the web page — printing each build as it lands under a
live status line (see live.py), cleaned of the control sequences a subject may carry (terminal.py).
Ctrl-C stops everything it started.

The embedded Redis gets a fresh random password: other users of the host could otherwise queue
jobs and rewrite results through its port. The password is in its redis.conf (mode 0600), reaches
the runners in their environment (VOLT_REDIS_URL), and is never on a command line or printed.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import redis

from voltci import report
from voltci.config import Settings, as_environment
from voltci.connection import connect, redacted
from voltci.example import create_example_repo
from voltci.live import LiveView
from voltci.models import Build
from voltci.observer import RepoWatch, observe_loop
from voltci.redis_server import RedisServer
from voltci.runner.limits import Limits
from voltci.runner.procs import descendants, kill_all
from voltci.runner.sandbox import SandboxUnavailable, describe_network, describe_runner
from voltci.scheduler import Scheduler
from voltci.store import Store
from voltci.store.channels import Subscription
from voltci.terminal import clean, echo
from voltci.web import server as web_server

log = logging.getLogger("volt.up")
WORKER_STOP_TIMEOUT_S = 10.0
SUPERVISE_INTERVAL_S = 0.5


class WorkerPool:
    """N `volt worker` processes, each in its own process group, restarted when one dies."""

    def __init__(self, count: int, settings: Settings, log_dir: Path):
        self.count = count
        self.settings = settings
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen | None] = [None] * count

    def _spawn(self, index: int) -> subprocess.Popen:
        env = {**os.environ, **as_environment(self.settings)}
        with open(self.log_dir / f"worker-{index + 1}.log", "ab") as log_file:
            return subprocess.Popen([sys.executable, "-m", "voltci", "worker"], env=env, stdin=subprocess.DEVNULL,
                                    stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for index in range(self.count):
            self.procs[index] = self._spawn(index)

    def supervise(self) -> None:
        for index, proc in enumerate(self.procs):
            if proc is not None and proc.poll() is not None:
                log.warning("runner %d exited with status %s; starting it again", index + 1, proc.returncode)
                self.procs[index] = self._spawn(index)

    def stop(self, grace_s: float = WORKER_STOP_TIMEOUT_S) -> None:
        """Ask the runners to stop (rq's warm shutdown lets a build finish within `grace_s`), then kill
        what is left of each runner's tree: work-horse and test processes in their own groups too."""
        live = [p for p in self.procs if p is not None and p.poll() is None]
        trees = {proc.pid: descendants(proc.pid) for proc in live}
        for proc in live:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in live:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                trees[proc.pid] += descendants(proc.pid)
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=WORKER_STOP_TIMEOUT_S)
            kill_all(trees[proc.pid])


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def run_up(settings: Settings, repos: list[str], branches: list[str], workers: int, burst: bool,
           burst_timeout: float, redis_dir: str | None = None, web_port: int | None = None) -> int:
    """Run until Ctrl-C (or, with `burst`, until the first poll's builds end). Returns the exit status."""
    state_dir = Path(settings.workspace_dir)
    server = None
    pool = None
    web = None
    view = None
    stop = threading.Event()
    _stop_on_signals()
    try:
        walls = describe_runner(settings.sandbox, Limits.of_runner(settings.build_memory, settings.build_processes),
                                settings.build_disk)
    except SandboxUnavailable as exc:
        echo(f"volt: {exc}", err=True)
        return exc.exit_code
    try:
        if settings.redis_url is None:
            server = _start_embedded_redis(redis_dir)
            settings = replace(settings, redis_url=server.url)
            echo(f"Redis:    embedded redis-server at {redacted(server.url)} (data in {server.data_dir};"
                       f" its password is in {server.config_path})")
        else:
            echo(f"Redis:    {redacted(settings.effective_redis_url)}")
        store = Store(connect(settings.effective_redis_url), settings)
        watches = _watches(store, repos or [str(_example(state_dir))], branches)
        pool = WorkerPool(workers, settings, state_dir / "logs")
        pool.start()
        echo(f"Runners:  {workers} (logs in {state_dir / 'logs'}); {walls}")
        network = describe_network(settings.sandbox, settings.build_network, settings.build_network_allow)
        echo(f"Network:  {network}")
        threading.Thread(target=Scheduler(settings).run, args=(stop,), name="scheduler", daemon=True).start()
        if web_port is not None:
            web, _ = web_server.start(settings, "127.0.0.1", web_port)
            echo(f"Web:      {web_server.url_of(web)} (rq-dashboard at {web_server.url_of(web)}rq/)")
        if not burst:
            echo("Press Ctrl-C to stop.")
        echo("")
        view = LiveView(store)
        events = store.listen_events()
        first = [build for watch in watches for build in watch.poll()]
        for build in first:
            view.line(clean(report.one_line(build)))
        if burst:
            return _until_finished(store, events, pool, view, {b.id for b in first}, burst_timeout)
        threading.Thread(target=observe_loop, args=(watches, settings.poll, stop),
                         kwargs={"on_build": lambda b: view.line(clean(report.one_line(b)))}, daemon=True).start()
        _until_interrupted(store, events, pool, view)
        return 0
    except KeyboardInterrupt:
        if view is not None:
            view.close()
        echo("\nstopping…")
        return 0
    finally:
        stop.set()
        if view is not None:
            view.close()
        if web is not None:
            web.shutdown()
        if pool is not None:
            pool.stop()
        if server is not None:
            server.stop()
            if not redis_dir:
                shutil.rmtree(server.data_dir, ignore_errors=True)


def _stop_on_signals() -> None:
    """SIGTERM (systemd, timeout, kill) and SIGHUP (terminal closed) stop `volt up` as Ctrl-C does, so
    that it stops what it started instead of leaving the runners and Redis behind."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)


def _start_embedded_redis(redis_dir: str | None) -> RedisServer:
    """A private redis-server with a new random password (a fresh data dir, or `redis_dir` with its AOF)."""
    password = secrets.token_urlsafe(32)
    if redis_dir:
        return RedisServer(Path(redis_dir), appendonly=True, password=password).start()
    return RedisServer(Path(tempfile.mkdtemp(prefix="volt-redis-")), password=password).start()


def _example(state_dir: Path) -> Path:
    example = create_example_repo(state_dir / "example-repo")
    echo(f"Example:  no --repo given, so building the example repository {example}")
    return example


def _watches(store: Store, repos: list[str], branches: list[str]) -> list[RepoWatch]:
    watches = [RepoWatch(store, url, branches=branches) for url in repos]
    for watch in watches:
        watch.validate()
        echo(f"Watching: {watch.name} ({watch.url}) branches {', '.join(watch.branches)}")
    return watches


def _next_finished(store: Store, events: Subscription, pool: WorkerPool, view: LiveView,
                   shown: set[str] | None = None) -> str | None:
    """Wait a moment for a finished build, print it (unless `shown` has it), keep the runners up and
    the status line fresh; the build id, if one ended."""
    pool.supervise()
    view.refresh()
    try:
        message = events.get(timeout=SUPERVISE_INTERVAL_S)
        if message is None or not isinstance(message[1].get("build"), str):
            return None
        build_id = message[1]["build"]
        build = store.get_build(build_id)
    except redis.RedisError as exc:
        log.warning("Redis unavailable (%s); retrying", exc)
        time.sleep(1.0)
        return None
    if build and build_id not in (shown or ()):
        _show(view, build)
    return build_id


def _show(view: LiveView, build: Build) -> None:
    view.finished(build)
    view.line(clean(report.one_line(build)))


def _until_interrupted(store: Store, events: Subscription, pool: WorkerPool, view: LiveView) -> None:
    while True:
        _next_finished(store, events, pool, view)


def _until_finished(store: Store, events: Subscription, pool: WorkerPool, view: LiveView,
                    pending: set[str], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    shown: set[str] = set()
    while pending:
        ended = _next_finished(store, events, pool, view, shown)
        if ended is not None:
            shown.add(ended)
        for build_id in sorted(pending):
            build = store.get_build(build_id)
            if build is not None and not build.status.is_final:
                continue
            if build is not None and build_id not in shown:  # it ended as the wait for its message timed out
                _show(view, build)
                shown.add(build_id)
            pending.discard(build_id)
        if pending and time.monotonic() > deadline:
            view.close()
            echo(f"volt: {len(pending)} build(s) did not finish within {timeout:g} s", err=True)
            return 1
    return 0
