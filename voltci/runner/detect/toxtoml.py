"""tox's native TOML form (`pyproject.toml [tool.tox]`, `tox.toml`): one environment, read as data.

An environment is `env.<name>` over `env_run_base`; commands are lists of words, and a word may be a
`{replace = ...}` table (`posargs` with its default, `env`, `ref`). Strings still take `{...}`.
"""

from __future__ import annotations

import shlex
from typing import Any

from voltci.runner.detect.files import DetectError
from voltci.runner.detect.tox import MAX_COMMANDS, Substitution, ToxEnv, choose, working_dir


def environment(config: dict[str, Any], source: str, tmp: str, python: str | None) -> ToxEnv:
    env_list = config.get("env_list", config.get("envlist", []))
    if not isinstance(env_list, list) or not all(isinstance(e, str) for e in env_list):
        raise DetectError(f"{source}: env_list must be a list of environment names")
    name, why = choose(env_list, python, source)
    return _Reader(config, source, name, tmp).read(why)


class _Reader:
    def __init__(self, config: dict[str, Any], source: str, name: str, tmp: str) -> None:
        self.config, self.source, self.name = config, source, name
        envs = config.get("env", {})
        own = envs.get(name) if isinstance(envs, dict) else None
        base = config.get("env_run_base", {})
        self.tables = [t for t in (own, base) if isinstance(t, dict)]
        self._resolving: set[str] = set()
        self.subst = Substitution(source, name, tmp, self._env_value)

    def read(self, why: str) -> ToxEnv:
        set_env = {key: self._env_value(key) or "" for key in self._raw_set_env()}
        install = "wheel"
        package = self.value("package")
        if self._config_flag("no_package") or self.value("skip_install") is True or package == "skip":
            install = "skip"
        elif self.value("use_develop") is True or package in ("editable", "editable-legacy"):
            install = "editable"
        notes = []
        where = "."
        change_dir = self.value("change_dir") or self.value("changedir")
        if change_dir is not None:
            if isinstance(change_dir, dict):
                change_dir = self._replace(change_dir, "change_dir")
            if not isinstance(change_dir, str):
                raise DetectError(f"{self.source}: 'change_dir' of env '{self.name}' must be a path")
            where = working_dir(self.subst(change_dir), self.source, self.name)
        if where != ".":
            self.subst.here = "{tree}"  # the commands run elsewhere: {tox_root} is the tree's path
            notes.append(f"{self.source}: env '{self.name}' runs its commands in {change_dir} (change_dir)")
        written = self.commands("commands")
        deps, extras, groups = self.words("deps"), self.words("extras"), self.words("dependency_groups")
        commands_pre = [argv for argv, _ in self.commands("commands_pre")]
        self.subst.refuse_unknown()
        return ToxEnv(source=self.source, name=self.name, why=why, deps=deps, extras=extras, groups=groups,
                      commands=[argv for argv, _ in written],
                      ignored=frozenset(n for n, (_, dashed) in enumerate(written) if dashed),
                      ignore_errors=self.value("ignore_errors") is True, change_dir=where,
                      commands_pre=commands_pre,
                      set_env=set_env, install=install, uv_lock=self.value("runner") == "uv-venv-lock-runner",
                      notes=notes)

    def value(self, key: str) -> Any:
        for table in self.tables:
            if key in table:
                return table[key]
        return None

    def words(self, key: str) -> list[str]:
        """A list of strings (deps, extras, groups), `{replace = ...}` tables resolved."""
        raw = self.value(key)
        if raw is None:
            return []
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list):
            raise DetectError(f"{self.source}: '{key}' of env '{self.name}' must be a list")
        return [w for w in self._list(raw, key) if w]

    def commands(self, key: str) -> list[tuple[list[str], bool]]:
        """Each command as argv, and whether tox ignores its exit status (a first word `-`)."""
        raw = self.value(key)
        if raw is None:
            return []
        if not isinstance(raw, list) or not all(isinstance(c, list) for c in raw):
            raise DetectError(f"{self.source}: '{key}' of env '{self.name}' must be a list of commands "
                              f"(lists of words)")
        if len(raw) > MAX_COMMANDS:
            raise DetectError(f"{self.source}: '{key}' of env '{self.name}' has more than {MAX_COMMANDS} commands; "
                              "Volt runs at most that many")
        out = []
        for argv in (self._list(c, key) for c in raw):
            dashed = argv[:1] == ["-"]
            argv = argv[1:] if dashed else argv
            if argv[:1] == ["!"]:
                raise DetectError(f"{self.source}: '{key}' of env '{self.name}' inverts a command's exit status "
                                  f"(`! {shlex.join(argv[1:])}`), which Volt does not do")
            if argv:
                out.append((argv, dashed))
        return out

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

    def _config_flag(self, key: str) -> bool:
        return self.config.get(key) is True

    def _raw_set_env(self) -> dict[str, Any]:
        raw = self.value("set_env") or self.value("setenv") or {}
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
