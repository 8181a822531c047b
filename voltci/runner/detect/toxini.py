"""tox's ini form (`tox.ini`, `setup.cfg [tox:tox]`, `legacy_tox_ini`): one environment, read as data.

Values are multi-line, may continue over lines with `\\`, carry factor conditions (`py3: dep`, kept when
the environment has the factor) and `{...}` substitutions, including references to other sections
(`{[testenv:x]commands}`). Section names may be generative (`[testenv:py3{9,10}-tests]`). What the
values mean is tox.read's: this module only says how the ini form writes them.
"""

from __future__ import annotations

import configparser
import re
import shlex

from voltci.runner.detect.files import DetectError
from voltci.runner.detect.tox import (
    MAX_COMMANDS,
    Substitution,
    ToxEnv,
    choose,
    expand,
    factors_match,
    read,
    split_top,
)

_FACTOR_LINE = re.compile(r"([\w{}.!,-]+):(?:\s+(.*))?")
_COMMENT = re.compile(r"(^|\s)(?<!\\)#.*$")
_TRUE = {"true", "1", "yes", "on"}


def environment(parser: configparser.ConfigParser, source: str, core: str, tmp: str,
                python: str | None) -> ToxEnv:
    env_list = split_top(_strip_comments(_get(parser, [core], "env_list", "envlist") or ""))
    name, why = choose(env_list, python, source)
    return read(_Reader(parser, source, core, name, tmp), why)


class _Reader:
    """One environment of the ini form, as tox.read asks for its values (tox.Form)."""

    change_dir_key = "changedir"

    def __init__(self, parser: configparser.ConfigParser, source: str, core: str, name: str, tmp: str) -> None:
        self.parser, self.source, self.core, self.name = parser, source, core, name
        self.factors = set(name.split("-"))
        base = "testenv"
        own = [s for s in parser.sections() if s.startswith(f"{base}:")
               and name in [n for part in split_top(s[len(base) + 1:]) for n in expand(part)]]
        self.sections = [*own, base]
        self.dropped: list[str] = []
        self.unread: list[str] = []  # set_env lines that load a file (`file|.env`)
        self._raw_env = self._raw_set_env()
        self._resolving: set[str] = set()
        self.subst = Substitution(source, name, tmp, self._env_value, self._ref)

    def key(self, key: str) -> str:
        return key

    def text(self, *keys: str) -> tuple[str, str] | None:
        raw = self.value(*keys)
        if raw is None:
            return None
        return raw.strip(), self.subst(raw.strip())

    def items(self, key: str, *, commas: bool) -> list[str]:
        return [item for line in self.lines(key) for item in (split_top(line) if commas else [line])]

    def flag(self, *keys: str, core: bool = False) -> bool:
        raw = _get(self.parser, [self.core] if core else self.sections, *keys)
        return raw is not None and self.subst(raw.strip()).lower() in _TRUE

    def command_words(self, key: str) -> list[list[str]]:
        out = []
        for line in self.lines(key):
            try:
                out.append(shlex.split(line))
            except ValueError as exc:
                raise DetectError(f"{self.source}: {key} of env '{self.name}' cannot be split into words "
                                  f"({exc}): {line}") from None
            if len(out) > MAX_COMMANDS:
                break  # tox.read refuses the environment for it
        return out

    def set_env(self) -> dict[str, str]:
        return {key: self._env_value(key) or "" for key in self._raw_env}

    def notes(self) -> list[str]:
        notes = []
        if self.dropped:
            notes.append(f"{self.source}: left out for other envs' factors: {'; '.join(self.dropped[:3])}"
                         + (f" (+{len(self.dropped) - 3} more)" if len(self.dropped) > 3 else ""))
        if self.unread:
            notes.append(f"{self.source}: set_env from files is not read: {', '.join(self.unread)}")
        return notes

    # ------------------------------------------------------------------ values

    def value(self, *keys: str) -> str | None:
        return _get(self.parser, self.sections, *keys)

    def lines(self, *keys: str) -> list[str]:
        raw = self.value(*keys)
        if raw is None:
            return []
        out = []
        for line in re.sub(r"\\[ \t]*\n[ \t]*", " ", raw).splitlines():
            body = self._filter(line)
            if body is None:
                continue
            for part in self.subst(body).splitlines():
                kept = self._filter(part)
                if kept:
                    out.append(kept)
        return out

    def _filter(self, line: str) -> str | None:
        """The line without its comment and factor condition; None when empty or for other factors."""
        line = _COMMENT.sub("", line).strip()
        if not line:
            return None
        match = _FACTOR_LINE.fullmatch(line)
        if match:
            if not factors_match(match.group(1), self.factors):
                self.dropped.append(line)
                return None
            line = (match.group(2) or "").strip()
        return line or None

    def _raw_set_env(self) -> dict[str, str]:
        raw = self.value("setenv", "set_env")
        found: dict[str, str] = {}
        for line in (raw or "").splitlines():
            body = self._filter(line)
            if body is not None and body.startswith("file|"):
                self.unread.append(body)
            if body is None or "=" not in body:
                continue
            key, value = body.split("=", 1)
            found[key.strip()] = value.strip()
        return found

    def _env_value(self, key: str) -> str | None:
        if key not in self._raw_env or key in self._resolving:
            return None
        self._resolving.add(key)
        try:
            return self.subst(self._raw_env[key])
        finally:
            self._resolving.discard(key)

    def _ref(self, section: str, key: str) -> str | None:
        if section == "tox" and self.core != "tox":
            section = self.core
        return _get(self.parser, [section], key)


def _get(parser: configparser.ConfigParser, sections: list[str], *keys: str) -> str | None:
    for section in sections:
        for key in keys:
            if parser.has_option(section, key):
                return parser.get(section, key)
    return None


def _strip_comments(text: str) -> str:
    return "\n".join(_COMMENT.sub("", line) for line in text.splitlines())
