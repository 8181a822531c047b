"""A commit's files read as data from the runner's mirror, never from its worktree: which files a commit
changed since another, and the Python sources it holds (for the import graph, importgraph.py).

Only git objects are read — `git diff` between two trees and `git cat-file` of blobs — with no
worktree, hook, attribute or config of the commit's in play (merge.SAFE), so nothing the commit holds
runs, and a link it commits is a blob like any other (skipped here). Every read is bounded: files
listed, bytes per file and in all, and the time each git call may take.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from voltci.errors import GitError
from voltci.git import GIT_ENV, git, git_status, is_sha
from voltci.runner.merge import SAFE, SAFE_ENV

GIT_TIMEOUT_S = 20.0
MAX_CHANGED = 5_000  # paths a diff names that are kept; a larger change is a sweep: nothing is likely in it
MAX_SOURCES = 20_000  # Python files read from one commit
MAX_SOURCE_BYTES = 256 * 1024  # one file (a larger one is data or generated, not a module worth a graph)
MAX_TOTAL_BYTES = 48 * 1024 * 1024  # all of them
REGULAR_MODES = ("100644", "100755")
MAX_NAMED_FILES = 200  # files whose changed definitions are read
MAX_DIFF_CHARS = 4 * 1024 * 1024
MAX_NAMES = 500
_DEFINED = re.compile(r"^\s*(?:async\s+)?(?:def|class)\s+([A-Za-z_]\w*)")
SAFE_ENV_READ = {key: value for key, value in SAFE_ENV.items() if key == "GIT_CONFIG_GLOBAL"}


@dataclass(frozen=True)
class Changes:
    """The paths a commit changed since `since` (sorted), or why they are not known."""

    since: str
    paths: tuple[str, ...] = ()
    why_not: str = ""


def changed_paths(git_dir: Path, since: str, commit: str) -> Changes:
    """What `commit` changed since its merge base with `since` (`git diff since...commit`: for a
    force-push or a pull request, only the commit's own side), by path."""
    if not (is_sha(since) and is_sha(commit)):
        return Changes(since, why_not="no full commit sha to compare")
    try:
        code, out, err = git_status([*SAFE, "diff", "--name-only", "-z", "--no-renames", "--no-ext-diff",
                                     "--no-textconv", f"{since}...{commit}", "--"], cwd=git_dir, timeout=GIT_TIMEOUT_S,
                                    env_extra=SAFE_ENV_READ)
    except GitError as exc:
        return Changes(since, why_not=str(exc))
    if code != 0:
        said = [line for line in err.splitlines() if line.strip()]
        return Changes(since, why_not=f"git cannot compare them ({said[-1][-200:] if said else f'exit status {code}'})")
    paths = sorted({path for path in out.split("\0") if path})
    if len(paths) > MAX_CHANGED:
        return Changes(since, why_not=f"it changed {len(paths)} files, more than {MAX_CHANGED}")
    return Changes(since, tuple(paths))


def changed_names(git_dir: Path, since: str, commit: str, paths: tuple[str, ...]) -> set[str]:
    """The functions and classes whose code the commit changed in `paths` (Python files), as far as the
    diff says: the definition each hunk falls in (git's hunk header, the last line above it that starts
    a top-level definition) and the definitions the commit adds or edits. Empty when git cannot say."""
    if not paths or not (is_sha(since) and is_sha(commit)):
        return set()
    try:
        code, out, _ = git_status([*SAFE, "diff", "-U0", "--no-color", "--no-renames", "--no-ext-diff", "--no-textconv",
                                   f"{since}...{commit}", "--", *paths[:MAX_NAMED_FILES]], cwd=git_dir,
                                  timeout=GIT_TIMEOUT_S, env_extra=SAFE_ENV_READ)
    except GitError:
        return set()
    if code != 0:
        return set()
    names: set[str] = set()
    for line in out[:MAX_DIFF_CHARS].splitlines():
        if line.startswith("@@"):
            found = _DEFINED.search(line.rpartition("@@")[2])
        elif line[:1] in "+-" and not line.startswith(("+++", "---")):
            found = _DEFINED.match(line[1:])
        else:
            continue
        if found and len(names) < MAX_NAMES:
            names.add(found.group(1))
    return names


def parent_of(git_dir: Path, commit: str) -> str:
    """The commit's first parent, or "" for a first commit (or one the mirror cannot read)."""
    try:
        out = git([*SAFE, "rev-parse", "--verify", "-q", f"{commit}^1^{{commit}}"], cwd=git_dir,
                  timeout=GIT_TIMEOUT_S, env_extra=SAFE_ENV_READ).strip()
    except GitError:
        return ""
    return out if is_sha(out) else ""


def python_sources(git_dir: Path, commit: str) -> dict[str, bytes]:
    """The commit's `.py` files, path to content, within the bounds above (larger files and links left
    out; past MAX_SOURCES or MAX_TOTAL_BYTES, the rest left out). GitError when git cannot list them."""
    listing = git([*SAFE, "ls-tree", "-r", "-z", "--full-tree", "-l", commit], cwd=git_dir,
                  timeout=GIT_TIMEOUT_S, env_extra=SAFE_ENV_READ)
    wanted: dict[str, str] = {}  # blob -> path (one path per blob is enough for its imports)
    paths: dict[str, list[str]] = {}
    total = 0
    for entry in listing.split("\0"):
        meta, _, path = entry.partition("\t")
        fields = meta.split()
        if len(fields) != 4 or not path.endswith(".py") or fields[0] not in REGULAR_MODES:
            continue
        blob, size_text = fields[2], fields[3]
        size = int(size_text) if size_text.isdigit() else MAX_SOURCE_BYTES + 1
        if size > MAX_SOURCE_BYTES or total + size > MAX_TOTAL_BYTES or len(paths) >= MAX_SOURCES:
            continue
        if blob not in wanted:
            total += size
            wanted[blob] = path
        paths.setdefault(blob, []).append(path)
    contents = _blobs(git_dir, list(wanted), total)
    return {path: contents[blob] for blob, names in paths.items() if blob in contents for path in names}


def _blobs(git_dir: Path, blobs: list[str], expected: int) -> dict[str, bytes]:
    """The contents of `blobs`, by one `git cat-file --batch` (its output is what was listed: bounded)."""
    if not blobs:
        return {}
    try:
        done = subprocess.run(["git", *SAFE, "cat-file", "--batch"], cwd=git_dir,
                              input="\n".join(blobs).encode() + b"\n", capture_output=True, timeout=GIT_TIMEOUT_S,
                              check=False, env={**os.environ, **GIT_ENV, **SAFE_ENV_READ})
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GitError(f"git cat-file could not read the sources: {exc}") from None
    out = done.stdout
    if done.returncode != 0 or len(out) > expected + 128 * len(blobs):
        raise GitError("git cat-file could not read the sources")
    found: dict[str, bytes] = {}
    at = 0
    for _ in blobs:
        header_end = out.find(b"\n", at)
        if header_end < 0:
            break
        header = out[at:header_end].split()
        if len(header) != 3 or not header[2].isdigit():
            break  # "<sha> missing": the rest cannot be framed
        size = int(header[2])
        start = header_end + 1
        found[header[0].decode()] = out[start:start + size]
        at = start + size + 1
    return found
