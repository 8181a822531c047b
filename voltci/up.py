"""`volt up`: everything on one machine — an embedded Redis unless one is named, N runners, the
scheduler, the observer and, with --web, the web page — printing each build as it lands under a
live status line (see live.py), cleaned of the control sequences a subject may carry (terminal.py).
Ctrl-C stops everything it started.

The embedded Redis gets a fresh random password: other users of the host could otherwise queue
jobs and rewrite results through its port. The password is in its redis.conf and in a `volt.env`
beside it (both mode 0600), reaches the runners in their environment (VOLT_REDIS_URL), and is never
on a command line or printed: `volt up` prints `source …/volt.env`, the one line another terminal
pastes to reach this Redis, which keeps the password out of that terminal's scrollback and history.

Its input (repositories and their branches, directories, the web port) is checked before anything
starts: bad input is one line and exit status 2, with no Redis or runner started and stopped again.
"""

from __future__ import annotations

import logging
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import redis

from voltci.config import Settings, as_environment
from voltci.connection import connect, redacted
from voltci.errors import BadInput
from voltci.example import ON_PURPOSE, create_example_repo
from voltci.live import LiveView, build_line
from voltci.models import Build
from voltci.observer import RepoWatch, observe_loop
from voltci.redis_server import RedisServer
from voltci.runner.limits import Limits
from voltci.runner.procs import descendants, kill_all
from voltci.runner.sandbox import SandboxUnavailable, describe_network, describe_runner
from voltci.scheduler import Scheduler
from voltci.store import Store
from voltci.store.channels import Subscription
from voltci.terminal import echo
from voltci.web import server as web_server

log = logging.getLogger("volt.up")
WORKER_STOP_TIMEOUT_S = 10.0
SUPERVISE_INTERVAL_S = 0.5
ENV_FILE = "volt.env"  # beside redis.conf: what another terminal sources to reach the embedded Redis


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
    try:
        walls = describe_runner(settings.sandbox, Limits.of_runner(settings.build_memory, settings.build_processes),
                                settings.build_disk)
    except SandboxUnavailable as exc:
        echo(f"volt: {exc}", err=True)
        return exc.exit_code
    check_input(settings, burst_timeout, redis_dir, web_port)
    server = _embedded_redis(redis_dir) if settings.redis_url is None else None  # not started yet
    if server is not None:
        settings = replace(settings, redis_url=server.url)
    pool = None
    web = None
    view = None
    stop = threading.Event()
    _stop_on_signals()
    try:
        store = Store(connect(settings.effective_redis_url, ping=server is None), settings)
        watches = _checked_watches(store, repos or [str(_example(state_dir))], branches)
        if server is not None:
            server.start()
            env_file = write_env_file(server)
            echo(f"Redis:    embedded redis-server at {redacted(server.url)} (data in {server.data_dir})")
            echo("Terminal: to use volt status, report, log … from another terminal, paste this line there:")
            echo(f"          source {shlex.quote(str(env_file))}")
        else:
            echo(f"Redis:    {redacted(settings.effective_redis_url)}")
        for watch in watches:
            watch.register()
            echo(f"Watching: {watch.name} ({watch.url}) branches {', '.join(watch.branches)}")
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
        events = store.logs.listen_events()
        first = [build for watch in watches for build in watch.poll()]
        for build in first:
            view.line(build_line(build))
        if burst:
            return _until_finished(store, events, pool, view, {b.id for b in first}, burst_timeout)
        threading.Thread(target=observe_loop, args=(watches, settings.poll, stop),
                         kwargs={"on_build": lambda b: view.line(build_line(b))}, daemon=True).start()
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
            (server.data_dir / ENV_FILE).unlink(missing_ok=True)  # it names a Redis that is gone
            if not redis_dir:
                shutil.rmtree(server.data_dir, ignore_errors=True)


def check_input(settings: Settings, burst_timeout: float, redis_dir: str | None, web_port: int | None) -> None:
    """What `volt up` can tell is wrong before it starts anything, each as one line (BadInput)."""
    if not burst_timeout > 0:
        raise BadInput(f"--timeout must be a positive number of seconds, got {burst_timeout:g}")
    if redis_dir and settings.redis_url is not None:
        raise BadInput("--redis-dir is where the embedded Redis keeps its data, and a Redis is given (--redis-url, "
                       "VOLT_REDIS_URL or redis_url in the config file): give one or the other")
    _usable_dir(Path(settings.workspace_dir), "the workspace directory (workspace_dir, VOLT_WORKSPACE_DIR)")
    if redis_dir:
        _usable_dir(Path(redis_dir), "--redis-dir")
    if web_port:
        _free_port(web_port)


def _usable_dir(path: Path, what: str) -> None:
    """`path` exists (made if need be) as a directory this user can write in."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"{what} {path} cannot be made: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise BadInput(f"{what} {path} is not writable by this user")


def _free_port(port: int) -> None:
    """The web page's port is free on loopback (bound as the web server will bind it, then let go)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise BadInput(f"--web-port {port}: cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None


def write_env_file(server: RedisServer) -> Path:
    """`volt.env` in the Redis' data directory, readable by this user alone: the Redis URL, password
    included, as `export` lines another terminal sources (rq's own commands read RQ_REDIS_URL).
    Written whole under a temporary name, then renamed over whatever was there."""
    url = shlex.quote(server.url)
    text = (f"# The Redis of a running `volt up` ({redacted(server.url)}): `source` this file, then volt status,\n"
            f"# volt report, volt log, volt web and rq info reach it. It is removed when volt up stops.\n"
            f"export VOLT_REDIS_URL={url}\nexport RQ_REDIS_URL={url}\n")
    fd, temporary = tempfile.mkstemp(prefix=".volt.env.", dir=server.data_dir)  # mode 0600
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    path = server.data_dir / ENV_FILE
    os.replace(temporary, path)
    return path


def _stop_on_signals() -> None:
    """SIGTERM (systemd, timeout, kill) and SIGHUP (terminal closed) stop `volt up` as Ctrl-C does, so
    that it stops what it started instead of leaving the runners and Redis behind."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)


def _embedded_redis(redis_dir: str | None) -> RedisServer:
    """A private redis-server, not started, with a new random password (a fresh data dir, or `redis_dir`
    with its AOF)."""
    password = secrets.token_urlsafe(32)
    if redis_dir:
        return RedisServer(Path(redis_dir), appendonly=True, password=password)
    return RedisServer(Path(tempfile.mkdtemp(prefix="volt-redis-")), password=password)


def _example(state_dir: Path) -> Path:
    try:
        example = create_example_repo(state_dir / "example-repo")
    except OSError as exc:
        raise BadInput(f"cannot make the example repository in {state_dir}: {exc.strerror or exc}") from None
    echo(f"Example:  no --repo given, so building the example repository {example}")
    echo(f"          {ON_PURPOSE}")
    return example


def _checked_watches(store: Store, repos: list[str], branches: list[str]) -> list[RepoWatch]:
    """The repositories, each checked (it exists, its branches exist); registered once Redis runs."""
    watches = [RepoWatch(store, url, branches=branches) for url in repos]
    for watch in watches:
        watch.check()
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
        kind, build_id = message[0], message[1]["build"]
        build = store.records.get_build(build_id)
    except redis.RedisError as exc:
        log.warning("Redis unavailable (%s); retrying", exc)
        time.sleep(1.0)
        return None
    if kind == "first_failure":
        if build is not None:
            view.first_failure(build)
        return None
    if build and build_id not in (shown or ()):
        _show(view, build)
    return build_id


def _show(view: LiveView, build: Build) -> None:
    view.finished(build)
    view.line(build_line(build))


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
            build = store.records.get_build(build_id)
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
