"""A static import graph of a commit's Python files, read as data: which files import which, so that the
tests whose modules import a changed module (directly, or through a few others) can run first.

The sources are the commit's (commitfiles.py) and hostile: they are never imported, compiled or parsed
by Python's parser — `import` statements are found by a line scan (a regular expression per line,
bounded lines and names), which a file cannot make slow or crash. A module name is matched to files by
its dotted path from any directory (`pkg.sub.mod` is `pkg/sub/mod.py` or `src/pkg/sub/mod.py`, a test
script's sibling `helpers` is `tests/helpers.py`): a name that matches a file it does not mean only
widens what is likely, never what the build runs.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

MAX_LINE = 4096  # longer lines are not statements anyone writes imports on
MAX_NAMES_PER_FILE = 512
MAX_DEPTH = 3  # importers of importers of importers: beyond that, everything imports everything
_IMPORT = re.compile(rb"^[ \t]*import[ \t]+([\w., \t]+)")
_FROM = re.compile(rb"^[ \t]*from[ \t]+(\.*)([\w.]*)[ \t]+import[ \t]+\(?([\w., \t]*)")
_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


def module_names(path: str) -> list[str]:
    """Every dotted name `path` may be imported by: its path from each directory above it
    (`src/pkg/mod.py` is `src.pkg.mod`, `pkg.mod` and `mod`; a package's `__init__.py` is the package)."""
    parts = path[:-3].split("/") if path.endswith(".py") else []
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    if not parts or not all(part.isidentifier() for part in parts):
        return []
    return [".".join(parts[start:]) for start in range(len(parts))]


def imported_names(source: bytes, path: str) -> set[str]:
    """The modules a file's import statements name (and, for `from a import b`, `a.b` too: b may be a
    module), relative imports resolved against the file's own package."""
    names: set[str] = set()
    package = path.split("/")[:-1]
    for line in source.splitlines():
        if len(line) > MAX_LINE or b"import" not in line:
            continue
        found = _FROM.match(line)
        if found:
            dots, base, what = (group.decode("ascii", "replace") for group in found.groups())
            if dots:
                up = len(dots) - 1
                if up > len(package):
                    continue
                base = ".".join([*package[:len(package) - up], *([base] if base else [])])
            if base:
                names.add(base)
                names.update(f"{base}.{name}" for name in _first_names(what) if "." not in name)
        else:
            plain = _IMPORT.match(line)
            if plain:
                names.update(_first_names(plain.group(1).decode("ascii", "replace")))
        if len(names) > MAX_NAMES_PER_FILE:
            break
    return names


def _first_names(text: str) -> list[str]:
    """`a.b as c, d` -> a.b, d: the name of each comma-separated item, not its alias."""
    names = []
    for item in text.split(","):
        words = item.split()
        if words and _NAME.fullmatch(words[0]):
            names.append(words[0])
    return names


@dataclass
class ImportGraph:
    """Files, and the files each imports (as far as their names can be matched)."""

    imports: dict[str, set[str]] = field(default_factory=dict)  # file -> files it imports

    @classmethod
    def of_sources(cls, sources: dict[str, bytes]) -> ImportGraph:
        by_name: dict[str, set[str]] = {}
        for path in sources:
            for name in module_names(path):
                by_name.setdefault(name, set()).add(path)
        graph = cls()
        for path, source in sources.items():
            targets: set[str] = set()
            for name in imported_names(source, path):
                parts = name.split(".")
                for end in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b too
                    targets |= by_name.get(".".join(parts[:end]), set())
            targets.discard(path)
            graph.imports[path] = targets
        return graph

    def importers(self, changed: set[str], depth: int = MAX_DEPTH) -> dict[str, int]:
        """Each file that imports a file of `changed`, through at most `depth` files, with how many steps
        away it is (the changed files themselves are 0)."""
        reverse: dict[str, set[str]] = {}
        for path, targets in self.imports.items():
            for target in targets:
                reverse.setdefault(target, set()).add(path)
        distance = dict.fromkeys(changed, 0)
        todo = deque(sorted(changed))
        while todo:
            path = todo.popleft()
            if distance[path] >= depth:
                continue
            for importer in sorted(reverse.get(path, ())):
                if importer not in distance:
                    distance[importer] = distance[path] + 1
                    todo.append(importer)
        return distance
