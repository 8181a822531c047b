"""Requirements files and requirement strings, read for the names they bring in (is pytest one?).

pip installs them; Volt only reads them to know what a plan will have, so a nested `-r` is followed
within the tree and a bounded depth, and anything pip would understand but we do not is skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from voltci.runner import untrusted
from voltci.runner.detect.files import DetectError, read_text

# In the order the issue lists them; the first pattern that matches any file wins.
USUAL_FILES = ("requirements-test*.txt", "requirements_test*.txt", "test-requirements.txt", "test_requirements.txt",
               "requirements/test*.txt", "requirements/requirements-test*.txt", "tests/requirements*.txt",
               "test/requirements*.txt", "requirements-dev.txt", "dev-requirements.txt")
MAX_DEPTH = 5
_NAME = re.compile(r"\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(\[[^\]]*\])?")
_FILE_OPTION = re.compile(r"^(-r|-c|--requirement|--constraint)\s*=?\s*(\S+)$")


def canonical(name: str) -> str:
    """PEP 503 normalised name: `Foo_Bar` and `foo.bar` are the same project."""
    return re.sub(r"[-_.]+", "-", name).lower()


def name_of(requirement: str) -> str | None:
    """The project a requirement string names (None for options, paths and URLs)."""
    text = requirement.strip()
    if not text or text.startswith(("-", ".", "/")) or "://" in text.split("@")[0]:
        return None
    match = _NAME.match(text)
    return canonical(match.group(1)) if match else None


def extras_of(requirement: str) -> list[str]:
    match = _NAME.match(requirement.strip())
    if not match or not match.group(2):
        return []
    return [canonical(e) for e in match.group(2)[1:-1].split(",") if e.strip()]


def file_option(line: str) -> tuple[str, str] | None:
    """("-r" or "-c", path) for a line that names another requirements file."""
    match = _FILE_OPTION.match(line.strip())
    if not match:
        return None
    return ("-c" if match.group(1) in ("-c", "--constraint") else "-r"), match.group(2)


def inside(relative: str, named_in: str) -> str:
    """`relative` as a path inside the tree, or a DetectError naming the file that named it."""
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise DetectError(f"{named_in}: names '{relative}', which is not a file inside the repository")
    return str(path)


def names_in_file(tree: Path, name: str, named_in: str, depth: int = 0) -> set[str]:
    """The projects a requirements file names, following its `-r` lines (not its `-c` constraints)."""
    if depth > MAX_DEPTH:
        raise DetectError(f"{name}: requirements files nest deeper than {MAX_DEPTH} (a loop?)")
    text = read_text(tree, inside(name, named_in))
    if text is None:
        raise DetectError(f"{named_in}: names {name}, which does not exist")
    found: set[str] = set()
    base = PurePosixPath(name).parent
    for line in requirement_lines(text):
        option = file_option(line)
        if option is not None:
            if option[0] == "-r":
                found |= names_in_file(tree, str(base / option[1]), name, depth + 1)
            continue
        project = name_of(line)
        if project:
            found.add(project)
    return found


def requirement_lines(text: str) -> Iterator[str]:
    """The lines of a requirements file that say something: comments and blank lines left out."""
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            yield line


def usual_files(tree: Path) -> list[str]:
    """Test requirements files of the usual names, those of the first pattern that has any."""
    for pattern in USUAL_FILES:
        found = sorted(str(p.relative_to(tree)) for p in untrusted.matching(tree, pattern)
                       if untrusted.kind(p, tree) in ("file", "link"))
        if found:
            return found
    return []
