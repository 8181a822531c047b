"""The test environment the maintainers defined in tox, read as data from wherever tox reads it.

tox looks in `tox.ini`, `setup.cfg [tox:tox]`, `pyproject.toml [tool.tox]` (a `legacy_tox_ini` string or
the native TOML form) and `tox.toml`, in that order. Of its environments Volt takes the default test
one: the first CPython entry of `env_list` (the one for `python` when it is listed), or plain `py`.
Its values go through tox's own substitutions, turned into what they mean in a Volt build.

The two forms tox writes an environment in (toxini.py, toxtoml.py) differ in how a value is written —
a string of lines with factor conditions, or typed TOML with `{replace = ...}` tables — not in what it
means: each gives its values through `Form`, and `read` alone turns them into a ToxEnv (which keys, their
old and new names, how the project is installed, what a `-` before a command does).
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from voltci.runner.detect.files import DetectError, exists, parse_ini, read_ini, read_toml, table

MAX_COMMANDS = 64  # commands of one environment Volt runs; more is no test environment it reads
PYTHON_FACTOR = re.compile(r"py|py3|py3\d{1,2}|py3\.\d{1,2}|3\.\d{1,2}")
TEST_FACTORS = ("test", "tests", "testing", "unit")
_RANGE = re.compile(r"(\d+)-(\d+)")


@dataclass(frozen=True)
class ToxEnv:
    """The parts of one tox environment that say how its tests are set up and run."""

    source: str                        # the file, as the build log names it
    name: str
    why: str                           # how this environment was chosen
    deps: list[str] = field(default_factory=list)
    extras: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)
    ignored: frozenset[int] = frozenset()  # indexes of commands whose exit status tox ignores (`- cmd`)
    ignore_errors: bool = False        # every command runs whatever the ones before it did
    change_dir: str = "."              # where the commands run: a directory of the tree, or `{tmp}/...`
    commands_pre: list[list[str]] = field(default_factory=list)
    set_env: dict[str, str] = field(default_factory=dict)
    install: str = "wheel"             # "wheel" (pip install .), "editable" (-e .) or "skip"
    uv_lock: bool = False              # runner = uv-venv-lock-runner
    notes: list[str] = field(default_factory=list)


class Form(Protocol):
    """One environment's values as one of tox's forms writes them, substitutions done; `read` asks for
    each key by all of its names (tox 4's and the older one), the environment's own table first."""

    source: str
    name: str
    subst: Substitution
    change_dir_key: str  # how this form's notes name changedir

    def key(self, key: str) -> str:
        """`key` as this form's messages name it."""
        ...

    def text(self, *keys: str) -> tuple[str, str] | None:
        """The value as written and as substituted; None when the environment does not set it."""
        ...

    def items(self, key: str, *, commas: bool) -> list[str]:
        """A list of values (deps, extras); `commas`: an ini line may hold several, comma separated."""
        ...

    def flag(self, *keys: str, core: bool = False) -> bool:
        """Whether the key is true: of the environment, or of the whole config (`core`)."""
        ...

    def command_words(self, key: str) -> list[list[str]]:
        """Each command of `key` as the words tox runs, substitutions done (a first word `-` kept)."""
        ...

    def set_env(self) -> dict[str, str]:
        ...

    def notes(self) -> list[str]:
        """What this form left out and the log should say (other factors' lines, set_env files)."""
        ...


def read(form: Form, why: str) -> ToxEnv:
    """The environment `form` holds, as a Volt build runs it."""
    source, name = form.source, form.name
    set_env = form.set_env()
    deps = [d for d in form.items("deps", commas=False) if d]
    extras = [e for e in form.items("extras", commas=True) if e]
    groups = [g for g in form.items("dependency_groups", commas=True) if g]
    notes = []
    where = "."
    change_dir = form.text("change_dir", "changedir")
    if change_dir is not None and change_dir[0]:
        where = working_dir(change_dir[1], source, name)
    if where != ".":
        form.subst.here = "{tree}"  # the commands run elsewhere: {toxinidir} is the tree's path
        notes.append(f"{source}: env '{name}' runs its commands in {change_dir[0] if change_dir else where} "
                     f"({form.change_dir_key})")
    written = _commands(form, "commands")
    commands_pre = [argv for argv, _ in _commands(form, "commands_pre")]
    package = form.text("package")
    runner = form.text("runner")
    if form.flag("no_package", "skipsdist", core=True) or form.flag("skip_install") or \
            (package is not None and package[1].strip() == "skip"):
        install = "skip"
    elif form.flag("use_develop", "usedevelop") or \
            (package is not None and package[1].strip() in ("editable", "editable-legacy")):
        install = "editable"
    else:
        install = "wheel"
    notes += form.notes()
    form.subst.refuse_unknown()
    return ToxEnv(source=source, name=name, why=why, deps=deps, extras=extras, groups=groups,
                  commands=[argv for argv, _ in written],
                  ignored=frozenset(n for n, (_, dashed) in enumerate(written) if dashed),
                  ignore_errors=form.flag("ignore_errors"), change_dir=where, commands_pre=commands_pre,
                  set_env=set_env, install=install,
                  uv_lock=runner is not None and runner[1].strip() == "uv-venv-lock-runner", notes=notes)


def _commands(form: Form, key: str) -> list[tuple[list[str], bool]]:
    """Each command as argv, and whether tox ignores its exit status (a first word `-`)."""
    found = form.command_words(key)
    if len(found) > MAX_COMMANDS:
        raise DetectError(f"{form.source}: {form.key(key)} of env '{form.name}' has more than {MAX_COMMANDS} "
                          "commands; Volt runs at most that many")
    out = []
    for argv in found:
        dashed = argv[:1] == ["-"]
        argv = argv[1:] if dashed else argv
        if argv[:1] == ["!"]:
            raise DetectError(f"{form.source}: {form.key(key)} of env '{form.name}' inverts a command's exit "
                              f"status (`! {shlex.join(argv[1:])}`), which Volt does not do")
        if argv:
            out.append((argv, dashed))
    return out


def load(tree: Path, tmp: str, python: str | None) -> ToxEnv | None:
    """The default test environment of the project's tox config, or None when it has none."""
    from voltci.runner.detect import toxini, toxtoml  # they build on this module's records


    ini = read_ini(tree, "tox.ini") if exists(tree, "tox.ini") else None
    if ini is not None and (ini.has_section("tox") or any(s.startswith("testenv") for s in ini.sections())):
        return toxini.environment(ini, "tox.ini", "tox", tmp, python)
    cfg = read_ini(tree, "setup.cfg") if exists(tree, "setup.cfg") else None
    if cfg is not None and cfg.has_section("tox:tox"):
        return toxini.environment(cfg, "setup.cfg", "tox:tox", tmp, python)
    pyproject = read_toml(tree, "pyproject.toml") or {}
    tool_tox = table(pyproject, "tool.tox")
    if tool_tox is not None:
        legacy = tool_tox.get("legacy_tox_ini")
        if isinstance(legacy, str):
            name = "pyproject.toml [tool.tox] legacy_tox_ini"
            return toxini.environment(parse_ini(legacy, name), name, "tox", tmp, python)
        return toxtoml.environment(tool_tox, "pyproject.toml [tool.tox]", tmp, python)
    native = read_toml(tree, "tox.toml")
    if native is not None:
        return toxtoml.environment(native, "tox.toml", tmp, python)
    return None


def expand(text: str) -> list[str]:
    """tox's generative names: `py3{9-11}-{a,b}` -> py39-a, py39-b, py310-a, ..."""
    match = re.search(r"\{([^{}]*)\}", text)
    if not match:
        return [text]
    options: list[str] = []
    for part in (p.strip() for p in match.group(1).split(",")):
        numbers = _RANGE.fullmatch(part)
        if numbers:
            low, high = int(numbers.group(1)), int(numbers.group(2))
            step = 1 if high >= low else -1
            options.extend(str(n) for n in range(low, high + step, step))
        else:
            options.append(part)
    return [name for option in options for name in expand(text[:match.start()] + option + text[match.end():])]


def split_top(text: str, separators: str = ",\n") -> list[str]:
    """Split at separators outside braces: `py{39,310}-a, lint` -> [`py{39,310}-a`, `lint`]."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += (char == "{") - (char == "}")
        if char in separators and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def factors_match(condition: str, factors: set[str]) -> bool:
    """tox factor conditions: `a,b` either, `a-b` both, `!a` not a; braces expand first."""
    for alternative in (a for expanded in expand(condition) for a in expanded.split(",")):
        needed = [f for f in alternative.strip().split("-") if f]
        if needed and all((f[1:] not in factors) if f.startswith("!") else (f in factors) for f in needed):
            return True
    return False


def choose(env_list: list[str], python: str | None, source: str) -> tuple[str, str]:
    """The default test environment of `env_list` and why it is the one."""
    names = [name for entry in env_list for name in expand(entry)]
    pythons = [n for n in names if any(PYTHON_FACTOR.fullmatch(f) for f in n.split("-"))]
    if python and pythons:
        wanted = {f"py{python.replace('.', '')}", f"py{python}", python}
        for name in pythons:
            if wanted & set(name.split("-")):
                return name, f"{source}: env '{name}', the one for Python {python} in env_list"
    if pythons:
        missing = f" (none is for Python {python})" if python else ""
        return pythons[0], f"{source}: env '{pythons[0]}', the first CPython env of env_list{missing}"
    tests = [n for n in names if set(n.split("-")) & set(TEST_FACTORS)]
    if tests:
        return tests[0], f"{source}: env '{tests[0]}', the first test env of env_list"
    return "py", f"{source}: env 'py' (env_list names no Python env)" if names else f"{source}: env 'py'"


class Substitution:
    """tox's `{...}` substitutions, each turned into its meaning in a Volt build.

    {posargs} goes (its default stays), {toxinidir} is the tree (`.`, where commands run; `{tree}`, its
    path, once a changedir moves them elsewhere), {env:X:default} is the env's set_env value or the
    default — never a variable of the runner's. {envtmpdir} is a directory of its own inside the build's
    temporary one, as in tox: `pytest --basetemp={envtmpdir}` empties it, which must not be all of {tmp}
    (in the sandbox that is /tmp itself, which pytest cannot remove and then fails to make). The
    environment's directories are `{venv}` and its site-packages `{site}`, filled in once the runner has
    the environment. What Volt cannot mean is gathered in `unknown`: the caller ends detection naming it.
    """

    HERE = {"toxinidir", "tox_root", "toxinipath_dir", "package_root"}
    SITE = {"envsitepackagesdir", "env_site_packages_dir", "envsitepackagesdir_plat", "env_site_packages_dir_plat"}
    VENV = {"envdir", "env_dir"}
    BIN = {"envbindir", "env_bin_dir"}
    ENV_TMP = {"envtmpdir", "env_tmp_dir"}
    TMP = {"toxworkdir", "work_dir", "envlogdir", "env_log_dir", "temp_dir"}
    ENV_TMP_NAME = "envtmp"
    PYTHON = {"envpython", "env_python", "basepython", "base_python"}

    def __init__(self, source: str, env: str, tmp: str, set_env: Callable[[str], str | None],
                 ref: Callable[[str, str], str | None] | None = None) -> None:
        self.source, self.env, self.tmp, self.set_env, self.ref = source, env, tmp, set_env, ref
        self.unknown: set[str] = set()
        self.here = "."  # the tree as the commands name it: "{tree}" once they run elsewhere (changedir)
        self._depth = 0

    def __call__(self, text: str) -> str:
        self._depth += 1
        try:
            if self._depth > 20:
                raise DetectError(f"{self.source}: substitutions in env '{self.env}' refer to each other endlessly")
            return self._scan(text)
        finally:
            self._depth -= 1

    def _scan(self, text: str) -> str:
        out, i = [], 0
        while i < len(text):
            char = text[i]
            if char == "\\" and i + 1 < len(text) and text[i + 1] in "{}":
                out.append(text[i + 1])
                i += 2
                continue
            if char != "{":
                out.append(char)
                i += 1
                continue
            depth, j = 0, i
            while j < len(text):
                depth += (text[j] == "{") - (text[j] == "}")
                if depth == 0:
                    break
                j += 1
            if depth:  # unbalanced: leave as written
                out.append(text[i:])
                break
            inner = text[i + 1:j]
            value = self._one(inner)
            # `{toxinidir}/tests` is `tests`: commands run in the tree
            if inner in self.HERE and text[j + 1:j + 2] == "/" and self.here == ".":
                value, j = "", j + 1
            out.append(value)
            i = j + 1
        return "".join(out)

    def _one(self, inner: str) -> str:
        key, colon, rest = inner.partition(":")
        if key == "posargs":
            return self(rest) if colon else ""
        if inner in self.HERE:
            return self.here
        if inner in self.SITE:
            return "{site}"
        if inner in self.VENV:
            return "{venv}"
        if inner in self.BIN:
            return "{venv}/bin"
        if inner in self.ENV_TMP:
            return f"{self.tmp}/{self.ENV_TMP_NAME}"
        if inner in self.TMP:
            return self.tmp
        if inner in ("envname", "env_name"):
            return self.env
        if inner in self.PYTHON:
            return "python"
        if inner == ":":
            return ":"
        if inner == "/":
            return "/"
        if key == "env" and rest:
            name, has_default, default = rest.partition(":")
            value = self.set_env(name)
            return value if value is not None else (self(default) if has_default else "")
        if key == "tty":
            return self(rest.partition(":")[2])
        ref = re.fullmatch(r"\[([^\]]+)\](\S+)", inner)
        if ref and self.ref is not None:
            value = self.ref(ref.group(1), ref.group(2))
            if value is not None:
                return self(value)
        self.unknown.add(inner)
        return "{" + inner + "}"

    def refuse_unknown(self) -> None:
        """End detection naming what Volt cannot expand: a command line with it left in cannot work."""
        if self.unknown:
            named = ", ".join("{" + u + "}" for u in sorted(self.unknown))
            raise DetectError(f"{self.source}: env '{self.env}' uses {named}, which Volt cannot expand")


def working_dir(value: str, source: str, env: str) -> str:
    """tox's changedir as a Volt build has it: a directory of the tree (`.`, `docs`) or of the build's
    temporary one (`{tmp}/envtmp`), written relative and normalised; anything else — a path out of the
    tree (`..`, `/etc`), the environment's directories — is a DetectError: a build's commands run only
    in its own directories."""
    value = value.strip()
    for base in ("{tmp}", "{tree}"):
        if value == base or value.startswith(base + "/"):
            rest = _inside(value[len(base):].lstrip("/"), value, source, env)
            return rest if base == "{tree}" else f"{base}/{rest}" if rest != "." else base
    if value.startswith(("/", "{", "~")) or "{" in value:
        raise DetectError(f"{source}: changedir of env '{env}' is {value}: Volt runs commands only in the "
                          "project's tree or the build's temporary directory")
    return _inside(value, value, source, env)


def _inside(relative: str, written: str, source: str, env: str) -> str:
    normal = posixpath.normpath(relative or ".")
    if normal == ".." or normal.startswith("../") or "\0" in normal:
        raise DetectError(f"{source}: changedir of env '{env}' is {written}, outside the build's directories: "
                          "Volt runs commands only in the project's tree or the build's temporary directory")
    return normal

