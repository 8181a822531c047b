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
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from voltci.config import host_dir
from voltci.errors import VoltError
from voltci.locks import AllBusy, first_free
from voltci.runner.interpreters import interpreters, own_version

DEPENDENCY_FILES = ("pyproject.toml", "setup.cfg", "setup.py", ".volt.toml")
REQUIREMENTS_GLOBS = ("requirements*.txt", "*/requirements*.txt")
READY = ".volt-ready"
SLOTS = 8
CREATE_TIMEOUT_S = 600
UNUSED_FOR_S = 7 * 24 * 3600
LOCK_POLL_S = 0.5
STAMPS = ("installed", "backend", "project")  # installs.py, project_install.py


class EnvironmentUnavailable(VoltError):
    """The build's environment cannot be made (no such Python here, venv failed), in one line."""


@dataclass(frozen=True)
class Environment:
    path: Path
    python: Path
    reused: bool


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
        files += sorted(tree.glob(pattern))
    for path in files:
        if path.is_file():
            digest.update(str(path.relative_to(tree)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@contextmanager
def environment(workspace_dir: str, repo: str, tree: Path, python_version: str | None, with_pip: bool,
                wait_s: float, pythons: str = "", variables: dict[str, str] | None = None) -> Iterator[Environment]:
    """An environment for this build of `repo` (or of one matrix leg of it, with its `variables`), held
    for the duration of the `with` block."""
    python = find_python(python_version, pythons)
    base = host_dir(workspace_dir) / "envs" / repo
    base.mkdir(parents=True, exist_ok=True)
    digest = dependency_hash(tree, python, variables)
    try:
        with first_free([base / f"{digest}-{slot}.lock" for slot in range(SLOTS)], wait_s, LOCK_POLL_S) as slot:
            path = base / f"{digest}-{slot}"
            reused = (path / READY).exists()
            if not reused:
                _create(python, path, with_pip)
            os.utime(path)
            _remove_unused(base, keep=path)
            yield Environment(path, path / "bin" / "python", reused)
    except AllBusy:
        raise EnvironmentUnavailable(f"all {SLOTS} environment slots of {repo} on this host stayed busy") from None


def _create(python: str, path: Path, with_pip: bool) -> None:
    shutil.rmtree(path, ignore_errors=True)  # a half-made one, from a runner killed while making it
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
    (path / READY).write_text("")


def _remove_unused(base: Path, keep: Path) -> None:
    """Remove environments of this repository unused for a week (and not held by a build)."""
    now = time.time()
    for entry in base.iterdir():
        if not entry.is_dir() or entry == keep:
            continue
        try:
            if now - entry.stat().st_mtime < UNUSED_FOR_S:
                continue
        except OSError:
            continue
        with open(entry.with_name(entry.name + ".lock"), "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            shutil.rmtree(entry, ignore_errors=True)
            _remove_stamps(entry)


def _remove_stamps(env_path: Path) -> None:
    for kind in STAMPS:
        stamp(env_path, kind).unlink(missing_ok=True)
