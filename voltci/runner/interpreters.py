"""The Python interpreters of this runner host, by version ("3.12"): what matrix legs it can run, and
what its heartbeat advertises.

Looked for, in this order (the first one found for a version is it): the runner's own interpreter,
the paths of the `pythons` setting, pyenv's versions directory (`$PYENV_ROOT/versions/*/bin`,
`~/.pyenv` by default), and `python3.X` on PATH. Each candidate is run once and says its own
version: a pyenv shim of a version that is not selected fails, and so is no interpreter; a link
that names one version and runs another counts as the one it runs. A name on PATH that claims a
version already found is not run at all (pyenv's shims take half a second each).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

from voltci.config import path_list

PROBE_TIMEOUT_S = 10.0
_NAME = re.compile(r"python3\.\d{1,2}")
_PROBE = "import sys; print('%d.%d' % sys.version_info[:2])"


def own_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def candidates(pythons: str = "", path: list[str] | None = None, pyenv_root: str | None = None) -> list[str]:
    """Paths that may be interpreters, in the order they are preferred."""
    found = [os.path.expanduser(p) for p in path_list(pythons)]
    root = Path(pyenv_root or os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    if root.is_dir():
        for version in sorted(root.iterdir()):
            found += sorted(str(p) for p in (version / "bin").glob("python3.*") if _NAME.fullmatch(p.name))
    for directory in os.get_exec_path() if path is None else path:
        if os.path.isdir(directory):
            found += sorted(str(p) for p in Path(directory).iterdir() if _NAME.fullmatch(p.name))
    return list(dict.fromkeys(found))


def probe(path: str) -> str | None:
    """The version `path` runs ("3.12"), or None when it does not run (a failing shim, a broken link)."""
    try:
        done = subprocess.run([path, "-I", "-c", _PROBE], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    version = done.stdout.strip()
    return version if done.returncode == 0 and re.fullmatch(r"3\.\d{1,2}", version) else None


@cache
def interpreters(pythons: str = "") -> dict[str, str]:
    """version -> interpreter path on this host (found once per process and `pythons` setting)."""
    return discover(pythons)


def discover(pythons: str = "", path: list[str] | None = None, pyenv_root: str | None = None) -> dict[str, str]:
    """version -> interpreter path, oldest first: the runner's own, then the first of `candidates` that
    runs as each version."""
    found = {own_version(): sys.executable}
    given = set(path_list(pythons))
    for candidate in candidates(pythons, path, pyenv_root):
        claimed = os.path.basename(candidate)[len("python"):]
        if not os.access(candidate, os.X_OK) or (candidate not in given and claimed in found):
            continue
        version = probe(candidate)
        if version is not None and version not in found:
            found[version] = candidate
    return dict(sorted(found.items(), key=lambda item: tuple(int(n) for n in item[0].split("."))))
