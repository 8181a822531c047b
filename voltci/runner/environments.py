"""Virtual environments for builds: one per repository and set of dependency files, made by the runner
and reused while those files do not change.

An environment is keyed by a hash of the interpreter's version, of the commit's dependency files
(requirements*.txt, pyproject.toml, setup.cfg, setup.py, .volt.toml) and of a matrix leg's variables
(a setup step may install by them); a commit that changes one of them gets a new environment. A
build holds its environment under a file lock for as long as it runs,
and a second build of the same repository on the same host takes another slot, so two builds never
install into one environment at once. Environments unused for a week are removed, with the stamps
beside them (what was installed into them, written by the runner where the build cannot write).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from voltci.config import host_dir
from voltci.errors import VoltError
from voltci.locks import AllBusy, first_free
from voltci.runner import untrusted
from voltci.runner.interpreters import interpreters, own_version
from voltci.runner.scopes import Scope
from voltci.sizes import human_size

DEPENDENCY_FILES = ("pyproject.toml", "setup.cfg", "setup.py", ".volt.toml")
REQUIREMENTS_GLOBS = ("requirements*.txt", "*/requirements*.txt")
READY = ".volt-ready"
SLOTS = 8
CREATE_TIMEOUT_S = 600
UNUSED_FOR_S = 7 * 24 * 3600
LOCK_POLL_S = 0.5
STAMPS = ("installed", "backend", "project")  # installs.py, project_install.py
SCOPES = "scopes"  # the environments of branch scopes, one directory each
SCOPE_UNUSED_S = 3 * 24 * 3600
MAX_DEPENDENCY_FILE = 16 * 1024 * 1024
HASH_CHUNK = 1024 * 1024


class EnvironmentUnavailable(VoltError):
    """The build's environment cannot be made (no such Python here, venv failed), in one line."""


@dataclass(frozen=True)
class Environment:
    """A build's virtual environment. `path` is where it shows to the build (and where its interpreter
    is); `home` is what its scope owns: the environment itself, or, for a branch seeded from the
    protected scope, the directory of its overlay's upper layer (`upper`, with overlayfs's `work`), over
    the protected environment at `path`. Its stamps lie beside `home`."""

    path: Path
    python: Path
    reused: bool
    home: Path
    base: Path  # the interpreter it was made from: the runner's, to trust where the environment is not
    upper: Path | None = None
    work: Path | None = None

    @property
    def lower(self) -> Path | None:
        """The protected environment this one is an overlay of (read-only), if it is one."""
        return self.path if self.upper is not None else None

    def holds(self, relative: str) -> bool:
        """Whether the build sees `relative` (a directory of the environment) in it, as the runner can
        tell from the host: in its own layer, or in the one below."""
        return any((layer / relative).is_dir() for layer in (self.upper, self.path) if layer is not None)

    def make_dir(self, relative: str) -> None:
        """Make a directory of the environment where the build's own writes land (never in the protected
        environment below a branch's layer)."""
        (self.upper or self.path).joinpath(relative).mkdir(parents=True, exist_ok=True)


def stamp(env_path: Path, kind: str) -> Path:
    """The file beside an environment that records what of `kind` (one of STAMPS) is installed in it."""
    if kind not in STAMPS:
        raise ValueError(f"no stamp {kind!r}")
    return env_path.with_name(f"{env_path.name}.{kind}")


def find_python(version: str | None, pythons: str = "") -> str:
    """The interpreter for `version` ("3.11") on this host (interpreters.py says where Volt looks); the
    runner's own when none is asked for."""
    if version is None or version == own_version():
        return sys.executable
    have = interpreters(pythons)
    if version in have:
        return have[version]
    raise EnvironmentUnavailable(f"python {version} is not on this runner host (it has {', '.join(have)})")


def dependency_hash(tree: Path, python: str, variables: dict[str, str] | None = None) -> str:
    digest = hashlib.sha256()
    version = sys.version if python == sys.executable else subprocess.run(
        [python, "-c", "import sys; print(sys.version)"], capture_output=True, text=True, timeout=60).stdout
    digest.update(version.encode())
    for name, value in sorted((variables or {}).items()):
        digest.update(f"{name}={value}\0".encode())
    files = [tree / name for name in DEPENDENCY_FILES]
    for pattern in REQUIREMENTS_GLOBS:
        files += untrusted.matching(tree, pattern)
    for path in files:
        _hash_file(digest, path, tree)
    return digest.hexdigest()[:16]


def _hash_file(digest: hashlib._Hash, path: Path, tree: Path) -> None:
    """Add one dependency file of the commit to `digest`, read through the gate: a link counts as the
    text it points to (never followed), and a file larger than any real one ends the build."""
    found = untrusted.kind(path, tree)
    if found is None or found in ("dir", "other"):
        return
    relative = str(path.relative_to(tree)).encode()
    if found == "link":
        digest.update(relative + b"\0link\0" + os.fsencode(untrusted.link_target(path, tree)) + b"\0")
        return
    digest.update(relative + b"\0")
    try:
        with untrusted.open_binary(path, tree) as fh:
            for _ in range(MAX_DEPENDENCY_FILE // HASH_CHUNK):
                chunk = fh.read(HASH_CHUNK)
                if not chunk:
                    break
                digest.update(chunk)
            else:
                raise EnvironmentUnavailable(f"{relative.decode(errors='replace')} is larger than "
                                             f"{human_size(MAX_DEPENDENCY_FILE)}: no dependency file is")
    except OSError as exc:
        raise EnvironmentUnavailable(f"{relative.decode(errors='replace')} cannot be read: {exc.strerror or exc}") \
            from None
    digest.update(b"\0")


@contextmanager
def environment(workspace_dir: str, repo: str, tree: Path, python_version: str | None, with_pip: bool,
                wait_s: float, pythons: str = "", variables: dict[str, str] | None = None,
                scope: Scope | None = None, overlay: bool = False) -> Iterator[Environment]:
    """An environment for this build of `repo` (or of one matrix leg of it, with its `variables`), in its
    trust `scope` (None: protected), held for the duration of the `with` block. A branch's scope seeds
    its environment from a protected one with the same dependencies when `overlay` is possible (the
    runner's bwrap mounts overlays), else makes one of its own."""
    python = find_python(python_version, pythons)
    base = host_dir(workspace_dir) / "envs" / repo
    base.mkdir(parents=True, exist_ok=True)
    digest = dependency_hash(tree, python, variables)
    try:
        if scope is None or scope.protected:
            with _slot(base, digest, wait_s) as path:
                reused = _ready(path, python, with_pip)
                _remove_unused(base, keep=path)
                yield Environment(path, path / "bin" / "python", reused, path, Path(python))
            return
        own = base / SCOPES / scope.name
        _remove_unused_scopes(base / SCOPES)
        with _slot(own, digest, wait_s) as path, _seed(base, digest) if overlay else nullcontext() as seed:
            if seed is None:
                reused = _ready(path, python, with_pip)
                yield Environment(path, path / "bin" / "python", reused, path, Path(python))
            else:
                yield _layer(path, seed, Path(python))
    except AllBusy:
        raise EnvironmentUnavailable(f"all {SLOTS} environment slots of {repo} on this host stayed busy") from None


@contextmanager
def _slot(base: Path, digest: str, wait_s: float) -> Iterator[Path]:
    """The first free slot of the environments of `digest` in `base`, held (and marked used) for the block."""
    base.mkdir(parents=True, exist_ok=True)
    with first_free([base / f"{digest}-{slot}.lock" for slot in range(SLOTS)], wait_s, LOCK_POLL_S) as slot:
        path = base / f"{digest}-{slot}"
        yield path
        if path.exists():
            os.utime(path)


def _ready(path: Path, python: str, with_pip: bool) -> bool:
    """Make the environment at `path` unless it is there already; whether it was (reused)."""
    if (path / READY).exists() and (path / "pyvenv.cfg").exists():
        os.utime(path)
        return True
    _create(python, path, with_pip)
    return False


@contextmanager
def _seed(base: Path, digest: str) -> Iterator[Path | None]:
    """A made protected environment of `digest`, held (no protected build changes it while a branch's
    overlay shows it), or None when none is made or every one is busy."""
    for slot in range(SLOTS):
        path = base / f"{digest}-{slot}"
        if not (path / READY).exists():
            continue
        try:
            with first_free([base / f"{digest}-{slot}.lock"], 0.0) as _:
                if (path / READY).exists():
                    yield path
                    return
        except AllBusy:
            continue
    yield None


def _layer(own: Path, seed: Path, base: Path) -> Environment:
    """The branch's layer over `seed` at `own`: kept while it was made over this very seed (its READY
    mark names the seed's making), else made anew — empty, with the seed's stamps, which say what the
    combined view holds."""
    try:  # the seed is a protected build's environment: its mark is read through the gate
        made_over = untrusted.read_text(seed / READY, seed, 64).strip()
    except OSError:
        made_over = ""
    made_over = made_over or str(os.stat(seed).st_ino)
    mark = own / READY
    reused = mark.is_file() and mark.read_text(encoding="utf-8").strip() == f"{seed}\0{made_over}"
    if not reused:
        untrusted.remove_tree(own)
        _remove_stamps(own)
        (own / "upper").mkdir(parents=True)
        (own / "work").mkdir()
        for kind in STAMPS:
            if stamp(seed, kind).is_file():
                shutil.copyfile(stamp(seed, kind), stamp(own, kind))
        mark.write_text(f"{seed}\0{made_over}", encoding="utf-8")
    return Environment(seed, seed / "bin" / "python", True, own, base, own / "upper", own / "work")


def _create(python: str, path: Path, with_pip: bool) -> None:
    untrusted.remove_tree(path)  # a half-made one, from a runner killed while making it
    _remove_stamps(path)  # ... and what was installed into an earlier one of the same name
    command = [python, "-m", "venv", str(path)] + ([] if with_pip else ["--without-pip"])
    try:
        made = subprocess.run(command, capture_output=True, text=True, timeout=CREATE_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise EnvironmentUnavailable(f"making the virtual environment took more than {CREATE_TIMEOUT_S} s") from None
    if made.returncode != 0:
        last = (made.stderr.strip().splitlines() or ["no output"])[-1]
        raise EnvironmentUnavailable(f"cannot make a virtual environment with {python}: {last}")
    (path / READY).write_text(secrets.token_hex(8))  # names this making: a branch's layer over it checks it


def _remove_unused_scopes(scopes: Path) -> None:
    """Remove the environments of branch scopes no build used for three days (a branch merged or
    deleted), and a scope's directory once nothing is left in it."""
    try:
        entries = [entry for entry in scopes.iterdir() if entry.is_dir()]
    except OSError:
        return
    for scope in entries:
        _remove_unused(scope, keep=None, unused_s=SCOPE_UNUSED_S)
        try:
            if not any(entry.suffix != ".lock" for entry in scope.iterdir()):
                untrusted.remove_tree(scope)
        except OSError:
            continue


def _remove_unused(base: Path, keep: Path | None, unused_s: float = UNUSED_FOR_S) -> None:
    """Remove environments in `base` unused for `unused_s` (a week for the protected scope's), unless a
    build holds one."""
    now = time.time()
    for entry in base.iterdir():
        if not entry.is_dir() or entry == keep or entry.name == SCOPES:
            continue
        try:
            if now - entry.stat().st_mtime < unused_s:
                continue
        except OSError:
            continue
        with open(entry.with_name(entry.name + ".lock"), "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            untrusted.remove_tree(entry)
            _remove_stamps(entry)


def _remove_stamps(env_path: Path) -> None:
    for kind in STAMPS:
        stamp(env_path, kind).unlink(missing_ok=True)


def discard(env_path: Path) -> None:
    """Remove an environment and its stamps (a build past its disk limit made or changed it), so the next
    build makes it again; its ready mark first, so that a runner killed meanwhile leaves none to reuse."""
    untrusted.remove_tree(env_path / READY)
    _remove_stamps(env_path)
    untrusted.remove_tree(env_path)
