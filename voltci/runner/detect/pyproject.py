"""What a project declares about itself: its name, PEP 735 dependency groups and extras.

Extras come from `[project.optional-dependencies]`, `setup.cfg [options.extras_require]`, and, for
projects whose `setup.py` computes them, the sdist's `*.egg-info/requires.txt` (read as data, its
`[extra]` sections) and `PKG-INFO`'s `Provides-Extra` lines. `setup.py` itself is never run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from voltci.runner import untrusted
from voltci.runner.detect.files import DetectError, exists, read_ini, read_text, read_toml, table
from voltci.runner.detect.requirements import canonical, extras_of, name_of

PYPROJECT = "pyproject.toml"
TEST_NAMES = ("test", "tests", "testing", "dev")
# What pip builds with when pyproject.toml names no build backend (PEP 517's fallback).
LEGACY_REQUIRES = ("setuptools>=40.8.0",)
LEGACY_BACKEND = "setuptools.build_meta:__legacy__"


@dataclass(frozen=True)
class BuildSystem:
    """`[build-system]`: what the project's wheel is built with, as pip reads it."""

    requires: tuple[str, ...] = LEGACY_REQUIRES
    backend: str = LEGACY_BACKEND
    backend_path: tuple[str, ...] = ()


@dataclass(frozen=True)
class Project:
    """The declarations of one source tree; groups are resolved (includes expanded, cycles refused)."""

    name: str | None = None
    pyproject: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)  # canonical name -> requirements
    group_names: dict[str, str] = field(default_factory=dict)   # canonical name -> as written
    extras: dict[str, list[str]] = field(default_factory=dict)  # canonical name -> requirements
    extras_complete: bool = True  # False when setup.py may define extras we cannot see
    extras_from: str = PYPROJECT
    installable: bool = False
    has_uv_lock: bool = False
    src_layout: bool = False

    def group(self, name: str, named_in: str) -> list[str]:
        key = canonical(name)
        if key not in self.groups:
            raise DetectError(f"{named_in}: dependency group '{name}' does not exist in {PYPROJECT}")
        return self.groups[key]

    def extra(self, name: str, named_in: str) -> list[str]:
        key = canonical(name)
        if key not in self.extras and self.extras_complete:
            raise DetectError(f"{named_in}: extra '{name}' does not exist ({self.extras_from} defines "
                              f"{', '.join(sorted(self.extras)) or 'none'})")
        return self.extras.get(key, [])

    def names(self, requirements: list[str]) -> set[str]:
        """Projects these requirements bring in, the project's own extras (`me[test]`) expanded."""
        found: set[str] = set()
        todo, seen = list(requirements), set()
        while todo:
            requirement = todo.pop()
            name = name_of(requirement)
            if name is None:
                continue
            if name == self.name:
                for extra in extras_of(requirement):
                    if extra not in seen:
                        seen.add(extra)
                        todo.extend(self.extras.get(extra, []))
                continue
            found.add(name)
        return found


def load(tree: Path) -> Project:
    data = read_toml(tree, PYPROJECT) or {}
    meta = table(data, "project") or {}
    name = meta.get("name") if isinstance(meta.get("name"), str) else None
    cfg = read_ini(tree, "setup.cfg") if exists(tree, "setup.cfg") else None
    if name is None and cfg is not None and cfg.has_option("metadata", "name"):
        name = cfg.get("metadata", "name").strip()
    groups, group_names = _groups(data)
    extras, complete, source = _extras(tree, meta, cfg)
    return Project(
        name=canonical(name) if name else None, pyproject=data, groups=groups, group_names=group_names,
        extras=extras, extras_complete=complete, extras_from=source,
        installable=bool(table(data, "build-system") or meta) or exists(tree, "setup.py") or
        (cfg is not None and cfg.has_section("metadata")),
        has_uv_lock=exists(tree, "uv.lock") and bool(meta),
        src_layout=untrusted.kind(tree / "src", tree) == "dir",
    )


def build_system(project: Project) -> BuildSystem:
    """`[build-system]` as pip reads it: no table, setuptools' legacy backend; `requires` without a
    backend, that backend with those requirements. Read only for a project that gets installed."""
    found = table(project.pyproject, "build-system")
    if found is None:
        return BuildSystem()
    requires, backend, path = found.get("requires"), found.get("build-backend"), found.get("backend-path", [])
    if not isinstance(requires, list) or not all(isinstance(item, str) for item in requires):
        raise DetectError(f"{PYPROJECT}: [build-system] requires must be a list of strings")
    if backend is not None and not isinstance(backend, str):
        raise DetectError(f"{PYPROJECT}: [build-system] build-backend must be a string")
    if not isinstance(path, list) or not all(isinstance(item, str) for item in path):
        raise DetectError(f"{PYPROJECT}: [build-system] backend-path must be a list of strings")
    for entry in path:
        if PurePosixPath(entry).is_absolute() or ".." in PurePosixPath(entry).parts:
            raise DetectError(f"{PYPROJECT}: [build-system] backend-path names '{entry}', which is not inside "
                              "the repository")
    return BuildSystem(tuple(requires), backend or LEGACY_BACKEND, tuple(path))


def _groups(data: dict[str, Any]) -> tuple[dict[str, list[str]], dict[str, str]]:
    raw = data.get("dependency-groups", {})
    if not isinstance(raw, dict):
        raise DetectError(f"{PYPROJECT}: [dependency-groups] must be a table of lists")
    written = {canonical(k): k for k in raw}
    by_key = {canonical(k): v for k, v in raw.items()}

    def resolve(key: str, path: list[str]) -> list[str]:
        if key in path:
            cycle = " -> ".join(written[k] for k in [*path[path.index(key):], key])
            raise DetectError(f"{PYPROJECT}: dependency group '{written[key]}' includes itself ({cycle})")
        items = by_key[key]
        if not isinstance(items, list):
            raise DetectError(f"{PYPROJECT}: dependency group '{written[key]}' must be a list")
        out: list[str] = []
        for item in items:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, dict) and set(item) == {"include-group"} and isinstance(item["include-group"], str):
                included = canonical(item["include-group"])
                if included not in by_key:
                    raise DetectError(f"{PYPROJECT}: dependency group '{written[key]}' includes "
                                      f"'{item['include-group']}', which does not exist")
                out.extend(resolve(included, [*path, key]))
            else:
                raise DetectError(f"{PYPROJECT}: dependency group '{written[key]}' has an entry that is neither "
                                  f"a requirement nor {{include-group = \"...\"}}: {item!r}")
        return out

    return {key: resolve(key, []) for key in by_key}, written


def _extras(tree: Path, meta: dict[str, Any], cfg: Any) -> tuple[dict[str, list[str]], bool, str]:
    """The extras, whether that list is all of them, and the file that says so."""
    dynamic = meta.get("dynamic", []) if isinstance(meta.get("dynamic", []), list) else []
    if meta and "optional-dependencies" not in dynamic:
        declared = meta.get("optional-dependencies", {})
        declared = declared if isinstance(declared, dict) else {}
        return {canonical(k): [str(r) for r in v] for k, v in declared.items() if isinstance(v, list)}, True, PYPROJECT
    found: dict[str, list[str]] = {}
    source = "setup.cfg"
    if cfg is not None and cfg.has_section("options.extras_require"):
        for key, value in cfg.items("options.extras_require"):
            found[canonical(key)] = [line.strip() for line in re.split(r"[\n;]", value) if line.strip()]
    metadata = False
    for requires in untrusted.matching(tree, "*.egg-info/requires.txt"):
        relative = str(requires.relative_to(tree))
        for key, reqs in _requires_txt(read_text(tree, relative) or "").items():
            found.setdefault(key, []).extend(reqs)
        source, metadata = relative, True
    info = read_text(tree, "PKG-INFO") if exists(tree, "PKG-INFO") else None
    for line in (info or "").split("\n\n")[0].splitlines():
        if line.lower().startswith("provides-extra:"):
            found.setdefault(canonical(line.split(":", 1)[1].strip()), [])
    if info is not None and not metadata:
        source, metadata = "PKG-INFO", True
    # setup.py (or a dynamic pyproject) may compute extras; only the sdist's metadata then says which exist
    complete = metadata or not (exists(tree, "setup.py") or meta)
    return found, complete, source


def _requires_txt(text: str) -> dict[str, list[str]]:
    """`*.egg-info/requires.txt`: requirements under `[extra]` or `[extra:marker]` headers."""
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            extra = line[1:-1].split(":", 1)[0]
            current = canonical(extra) if extra else None
            if current:
                sections.setdefault(current, [])
        elif line and current:
            sections[current].append(line)
    return sections
