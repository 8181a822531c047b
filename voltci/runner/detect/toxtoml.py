"""tox's native TOML form (`pyproject.toml [tool.tox]`, `tox.toml`): one environment, read as data.

An environment is `env.<name>` over `env_run_base`; commands are lists of words, and a word may be a
`{replace = ...}` table (`posargs` with its default, `env`, `ref`). Strings still take `{...}`. What the
values mean is tox.read's: this module only says how the TOML form writes them.
"""

from __future__ import annotations

import shlex
from typing import Any

from voltci.runner.detect.files import DetectError
from voltci.runner.detect.tox import MAX_COMMANDS, Substitution, ToxEnv, choose, read


def environment(config: dict[str, Any], source: str, tmp: str, python: str | None) -> ToxEnv:
    env_list = config.get("env_list", config.get("envlist", []))
    if not isinstance(env_list, list) or not all(isinstance(e, str) for e in env_list):
        raise DetectError(f"{source}: env_list must be a list of environment names")
    name, why = choose(env_list, python, source)
    return read(_Reader(config, source, name, tmp), why)


class _Reader:
    """One environment of the TOML form, as tox.read asks for its values (tox.Form)."""

    change_dir_key = "change_dir"

    def __init__(self, config: dict[str, Any], source: str, name: str, tmp: str) -> None:
        self.config, self.source, self.name = config, source, name
        envs = config.get("env", {})
        own = envs.get(name) if isinstance(envs, dict) else None
        base = config.get("env_run_base", {})
        self.tables = [t for t in (own, base) if isinstance(t, dict)]
        self._resolving: set[str] = set()
        self.subst = Substitution(source, name, tmp, self._env_value)

    def key(self, key: str) -> str:
        return f"'{key}'"

    def text(self, *keys: str) -> tuple[str, str] | None:
        key, raw = self._found(keys)
        if raw is None:
            return None
        if isinstance(raw, dict):
            raw = self._replace(raw, key)
        if not isinstance(raw, str):
            raise DetectError(f"{self.source}: '{key}' of env '{self.name}' must be a string")
        return raw, self.subst(raw)

    def items(self, key: str, *, commas: bool) -> list[str]:
        """A list of strings (deps, extras, groups), `{replace = ...}` tables resolved."""
        raw = self.value(key)
        if raw is None:
            return []
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list):
            raise DetectError(f"{self.source}: '{key}' of env '{self.name}' must be a list")
        return [w for w in self._list(raw, key) if w]

    def flag(self, *keys: str, core: bool = False) -> bool:
        if core:
            return any(self.config.get(key) is True for key in keys)
        return self._found(keys)[1] is True

    def command_words(self, key: str) -> list[list[str]]:
        raw = self.value(key)
        if raw is None:
            return []
        if not isinstance(raw, list) or not all(isinstance(c, list) for c in raw):
            raise DetectError(f"{self.source}: '{key}' of env '{self.name}' must be a list of commands "
                              f"(lists of words)")
        if len(raw) > MAX_COMMANDS:
            raw = raw[:MAX_COMMANDS + 1]  # tox.read refuses the environment for it
        return [self._list(c, key) for c in raw]

    def set_env(self) -> dict[str, str]:
        return {key: self._env_value(key) or "" for key in self._raw_set_env()}

    def notes(self) -> list[str]:
        return []

    def value(self, key: str) -> Any:
        return self._found((key,))[1]

    def _found(self, keys: tuple[str, ...]) -> tuple[str, Any]:
        """The first of `keys` the environment's own table sets, else env_run_base; with its name."""
        for table in self.tables:
            for key in keys:
                if key in table:
                    return key, table[key]
        return keys[0], None

    def _list(self, items: list[Any], key: str) -> list[str]:
        out: list[str] = []
        for item in items:
            if isinstance(item, str):
                value = self.subst(item)
                if item.startswith("{posargs") and item.endswith("}"):  # a word of its own: its words, or none
                    out.extend(shlex.split(value))
                elif value or not item:
                    out.append(value)
            elif isinstance(item, dict):
                replaced = self._replace(item, key)
                if isinstance(replaced, list):
                    out.extend(replaced)
                elif replaced:
                    out.append(replaced)
            else:
                raise DetectError(f"{self.source}: '{key}' of env '{self.name}' has {item!r}, neither a word nor "
                                  f"a {{replace = ...}} table")
        return out

    def _replace(self, item: dict[str, Any], key: str) -> str | list[str]:
        kind = item.get("replace")
        default = item.get("default", [])
        if kind == "posargs":
            return self._list(default if isinstance(default, list) else [default], key)
        if kind == "env":
            value = self._env_value(str(item.get("name", "")))
            return value if value is not None else (self.subst(default) if isinstance(default, str) else "")
        if kind == "ref":
            target = self._ref(item)
            if isinstance(target, list):
                return self._list(target, key)
            return self.subst(target) if isinstance(target, str) else ""
        raise DetectError(f"{self.source}: '{key}' of env '{self.name}' uses {{replace = {kind!r}}}, "
                          "which Volt does not read")

    def _ref(self, item: dict[str, Any]) -> Any:
        if isinstance(item.get("of"), list):
            node: Any = self.config
            for part in item["of"]:
                node = node.get(part) if isinstance(node, dict) else None
            return node
        env, key = item.get("env"), item.get("key")
        if isinstance(env, str) and isinstance(key, str):
            table = (self.config.get("env") or {}).get(env) or {}
            return table.get(key, (self.config.get("env_run_base") or {}).get(key))
        return None

    def _raw_set_env(self) -> dict[str, Any]:
        raw = self._found(("set_env", "setenv"))[1] or {}
        if not isinstance(raw, dict):
            raise DetectError(f"{self.source}: 'set_env' of env '{self.name}' must be a table")
        return raw

    def _env_value(self, key: str) -> str | None:
        raw = self._raw_set_env().get(key)
        if raw is None or key in self._resolving:
            return None
        self._resolving.add(key)
        try:
            if isinstance(raw, dict):
                value = self._replace(raw, "set_env")
                return " ".join(value) if isinstance(value, list) else value
            return self.subst(str(raw))
        finally:
            self._resolving.discard(key)
