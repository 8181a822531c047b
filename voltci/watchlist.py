"""The repositories an observer watches, each with its own rules: the `[[repos]]` tables of the config
file, read again whenever the file changes, so that adding a repository needs no restart.

    [[repos]]
    url = "https://git.example.org/team/app.git"
    name = "app"                      # default: from the URL
    branches = ["main", "release/*"]  # names or globs; "*" is every branch (default: the default branch)
    priority = "high"                 # high, normal (default) or low: see dispatch.py
    supersede = ["feature/*"]         # a newer commit skips that branch's queued older builds ("all" too)
    interrupt = true                  # … and cancels its running older builds (needs supersede)
    pull_requests = true              # its pull requests too (pulls.py), each as it would merge
    trusted_authors = ["alice"]       # forge users whose pull requests from forks need no approval
    forge = "github"                  # and forge_api, forge_project, forge_token_env: see forge.py

A file that no longer reads, or a repository that cannot be reached, costs a log line at a reload,
and the observer goes on with what it watched; at start, either is bad input (one line, exit 2).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voltci.config import load_config_toml
from voltci.dispatch import Priority, parse_priority
from voltci.errors import BadInput, GitError
from voltci.forge import FORGE_KEYS, ForgeLink, forge_link
from voltci.observer import RepoWatch
from voltci.store import Store

log = logging.getLogger("volt.observer")
RULE_KEYS = ("url", "name", "branches", "priority", "supersede", "interrupt", "pull_requests", "trusted_authors",
             *FORGE_KEYS)


@dataclass(frozen=True)
class RepoRule:
    """One `[[repos]]` table."""

    url: str
    name: str | None = None
    branches: tuple[str, ...] = ()
    priority: Priority = Priority.NORMAL
    supersede: tuple[str, ...] = ()
    interrupt: bool = False
    pull_requests: bool = False
    trusted_authors: tuple[str, ...] = ()
    forge: ForgeLink | None = None

    def watch(self, store: Store) -> RepoWatch:
        return RepoWatch(store, self.url, self.name, list(self.branches), list(self.supersede), self.priority,
                         self.interrupt, pull_requests=self.pull_requests,
                         trusted_authors=list(self.trusted_authors), forge=self.forge)


def _words(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BadInput(f"{where} must be a string or a list of strings, got {value!r}")
    return tuple(value)


def read_rules(path: Path) -> list[RepoRule]:
    """The `[[repos]]` tables of the config file at `path`, checked; bad input names the table and key."""
    data = load_config_toml(path)
    tables = data.get("repos", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise BadInput(f"config file {path}: 'repos' must be [[repos]] tables")
    rules = []
    for number, table in enumerate(tables, 1):
        where = f"config file {path}, [[repos]] table {number}"
        unknown = sorted(set(table) - set(RULE_KEYS))
        if unknown:
            raise BadInput(f"{where}: unknown key '{unknown[0]}' (it takes {', '.join(RULE_KEYS)})")
        url = table.get("url")
        if not isinstance(url, str) or not url:
            raise BadInput(f"{where}: 'url' is required: the repository's URL or path")
        name = table.get("name")
        if name is not None and not isinstance(name, str):
            raise BadInput(f"{where}: 'name' must be a string, got {name!r}")
        interrupt, pull_requests = (_flag(table, key, where) for key in ("interrupt", "pull_requests"))
        supersede = _words(table.get("supersede", []), f"{where}: 'supersede'")
        if interrupt and not supersede:
            raise BadInput(f"{where}: interrupt = true needs supersede (the branches whose newer commits "
                           f"cancel their older running builds)")
        rules.append(RepoRule(url, name, _words(table.get("branches", []), f"{where}: 'branches'"),
                              parse_priority(table.get("priority", "normal"), f"{where}: 'priority'"),
                              supersede, interrupt, pull_requests,
                              _words(table.get("trusted_authors", []), f"{where}: 'trusted_authors'"),
                              forge_link(table, url, where)))
    return rules


def _flag(table: dict[str, Any], key: str, where: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise BadInput(f"{where}: '{key}' must be true or false, got {value!r}")
    return value


class WatchList:
    """The watched repositories: fixed ones (`--repo`), or the config file's, followed as it changes."""

    def __init__(self, store: Store, watches: list[RepoWatch], path: Path | None = None):
        self.store, self.watches, self.path = store, watches, path
        self._stamp = self._stamp_now()

    @classmethod
    def from_file(cls, store: Store, path: Path) -> WatchList:
        """Every repository of the file, each checked (bad input at start is one line, exit 2)."""
        rules = read_rules(path)
        if not rules:
            raise BadInput(f"no repository to watch: give --repo, or [[repos]] tables in {path}")
        watches = [rule.watch(store) for rule in rules]
        _no_twins(watches, path)
        for watch in watches:
            watch.validate()
        return cls(store, watches, path)

    def current(self) -> list[RepoWatch]:
        """The repositories to watch now: the file is read again when it changed since the last look."""
        if self.path is not None:
            stamp = self._stamp_now()
            if stamp != self._stamp:
                self._stamp = stamp
                self._reload()
        return self.watches

    def _stamp_now(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            found = os.stat(self.path)
        except OSError:
            return None
        return found.st_mtime_ns, found.st_size

    def _reload(self) -> None:
        assert self.path is not None
        try:
            rules = read_rules(self.path)
            fresh = [rule.watch(self.store) for rule in rules]
            _no_twins(fresh, self.path)
        except BadInput as exc:
            log.warning("%s; still watching %s", exc, ", ".join(w.name for w in self.watches) or "nothing")
            return
        known = {w.name: w for w in self.watches}
        watches = []
        for watch in fresh:
            old = known.get(watch.name)
            if old is not None and old.rules == watch.rules:
                watches.append(old)  # unchanged: its mirror and branches as they are
                continue
            try:
                watch.validate()
            except (BadInput, GitError) as exc:
                log.warning("%s: %s; %s", watch.name, exc, "keeping its old rules" if old else "not watched")
                if old is not None:
                    watches.append(old)
                continue
            log.info("%s %s (%s) branches %s, priority %s", "now watching" if old is None else "new rules for",
                     watch.name, watch.url, ", ".join(watch.branches) or "none yet", watch.priority.value)
            watches.append(watch)
        for name in sorted(set(known) - {w.name for w in watches}):
            log.info("%s: no longer in %s; not watched any more", name, self.path)
        self.watches = watches


def _no_twins(watches: list[RepoWatch], path: Path) -> None:
    seen: dict[str, str] = {}
    for watch in watches:
        if watch.name in seen and seen[watch.name] != watch.url:
            raise BadInput(f"config file {path}: two [[repos]] tables are named '{watch.name}'; give one a 'name'")
        seen[watch.name] = watch.url
