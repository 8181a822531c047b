"""Settings, in one place: command-line flags > `VOLT_*` environment > config file > defaults.

The config file is the one named by `--config` or `VOLT_CONFIG`, else `config/volt.toml` in the
current directory when it exists. Every setting has a default that works on one machine.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voltci.errors import BadInput
from voltci.sizes import BadLimit, parse_disk, parse_processes, parse_size

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_CONFIG_PATH = Path("config") / "volt.toml"


def host_dir(workspace_dir: str) -> Path:
    """Per-host part of the workspace dir, so a shared (network) cache dir never mixes hosts."""
    return Path(workspace_dir) / socket.gethostname()


def default_workspace_dir() -> str:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "volt")


@dataclass(frozen=True)
class Settings:
    """What every Volt process needs to know; see config/volt.toml for each setting's meaning."""

    redis_url: str | None = None
    queue: str = "volt"
    poll: float = 5.0
    build_timeout: float = 1800.0
    heartbeat: float = 2.0
    heartbeat_ttl: float = 6.0
    max_attempts: int = 3
    redis_outage_limit: float = 60.0
    workspace_dir: str = field(default_factory=default_workspace_dir)
    max_commits_per_poll: int = 500
    log_tail_lines: int = 60
    log_max_bytes: int = 10 * 1024 * 1024
    retries: int = 1
    prepass: bool = True  # run first the tests most likely to fail, then the whole suite (runner/prepass.py)
    prepass_share: float = 0.05  # the pre-pass's bound: this share of the last build's test time
    shard_threshold: int = 2000
    shards: int = 0
    webhook_url: str | None = None
    webhook_secret: str | None = None
    web_url: str | None = None  # the older name of public_url
    public_url: str | None = None  # where people open Volt's pages: links in statuses and webhook messages
    hook_secret: str | None = None
    result_ttl: int = 7 * 24 * 3600
    web_token: str | None = None
    sandbox: bool = True
    build_memory: str = "50%"
    build_processes: int = 4096
    build_disk: str = "20G"  # what a build's tree, environment and temporary files may hold (runner/disk.py)
    pass_env: str = ""
    build_network: str = "isolated"  # "isolated": a network of their own (network.py); "host": this host's
    build_network_allow: str = ""  # host:port pairs of this host's networks that builds may reach all the same
    protected_branches: str = ""  # names or globs whose builds share environments; "": the default branch
    pythons: str = ""  # interpreters for matrix legs besides those on PATH and pyenv's (paths)
    keep_builds: int = 1000  # ended builds kept per repository, newest first (0: no limit)
    keep_days: int = 365  # days an ended build is kept (0: no limit)
    dispatch: str = "fair"  # "fair": tiers, fair share, culprit first (dispatch.py); "fifo": the order queued
    fair_window: float = 3600.0  # seconds of runner time that fair share looks back on

    @property
    def page_root(self) -> str | None:
        """Where Volt's pages are opened, without a trailing slash: `public_url` (or its older name)."""
        root = self.public_url or self.web_url
        return root.rstrip("/") if root else None

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or DEFAULT_REDIS_URL


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
ZERO_ALLOWED = {"retries", "shard_threshold", "shards", "keep_builds", "keep_days"}
TRUE_WORDS = {"1", "true", "yes", "on"}
# Never passed to builds, even when named in `pass_env`: Volt's settings and credentials.
WITHHELD_PREFIXES = ("VOLT_", "REDIS", "RQ_")
# Names that say they hold a credential (a token, a password, a key): never passed to builds.
CREDENTIAL_WORDS = ("TOKEN", "PASSWORD", "PASSWD", "SECRET", "CREDENTIAL", "API_KEY", "PRIVATE_KEY", "AUTH")
FALSE_WORDS = {"0", "false", "no", "off"}
DISPATCH_MODES = ("fair", "fifo")
NETWORK_MODES = ("isolated", "host")
# Tables of the config file that are not settings: the observer reads them (watchlist.py).
NOT_SETTINGS = {"repos"}


def _share(value: float) -> float:
    if not 0 < value <= 0.5:
        raise ValueError(f"must be above 0 and at most 0.5 (a share of the last build's test time), got {value!r}")
    return value


def _one_of(value: str, words: tuple[str, ...]) -> str:
    if value not in words:
        raise ValueError(f"must be one of {', '.join(words)}, got {value!r}")
    return value


def _coerce(name: str, value: Any, source: str) -> Any:
    """Turn a raw value from env or toml into the field's type, or say which setting is wrong."""
    default = getattr(Settings(), name)
    kind = str if default is None else type(default)  # the optional settings are strings
    if name == "pythons" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = ", ".join(value)  # the config file may give them as a list
    try:
        if kind is bool:
            result: Any = _boolean(value)
        elif kind is int:
            if isinstance(value, bool):
                raise TypeError
            result = int(value)
        elif kind is float:
            if isinstance(value, bool):
                raise TypeError
            result = float(value)
        else:
            if not isinstance(value, str):
                raise TypeError
            result = value
    except (TypeError, ValueError):
        what = "true or false" if kind is bool else f"a {kind.__name__}"
        raise BadInput(f"{source}: setting '{name}' must be {what}, got {value!r}") from None
    if name in CHECKED:
        try:
            CHECKED[name](result)
        except (BadLimit, ValueError) as exc:
            raise BadInput(f"{source}: setting '{name}' {exc}") from None
    elif kind in (int, float) and (result < 0 if name in ZERO_ALLOWED else result <= 0):
        raise BadInput(f"{source}: setting '{name}' must be positive, got {value!r}")
    return result


def variable_names(text: str) -> list[str]:
    """The names in a `pass_env` setting ("CUDA_HOME, JAVA_HOME" or space-separated); raises ValueError
    for one that is not a variable name, or that names Volt's own settings."""
    names = text.replace(",", " ").split()
    for name in names:
        if not name.isidentifier():
            raise ValueError(f"must list environment variable names, got {name!r}")
        if name.upper().startswith(WITHHELD_PREFIXES):
            raise ValueError(f"cannot pass {name} to builds: Volt's settings and credentials stay out of them")
        if any(word in name.upper() for word in CREDENTIAL_WORDS):
            raise ValueError(f"cannot pass {name} to builds: its name says it holds a credential, and any commit "
                             "could read it")
        if name.upper().startswith(("LD_", "BASH_FUNC_")):
            raise ValueError(f"cannot pass {name} to builds: it changes how programs are loaded")
    return names


def branch_patterns(text: str) -> list[str]:
    """The names or globs of a `protected_branches` setting ("main release/*"), commas or spaces."""
    return text.replace(",", " ").split()


def host_ports(text: str) -> list[tuple[str, int]]:
    """The `host:port`s of a `build_network_allow` setting ("db.lan:5432, 10.0.0.5:443", or
    "[fd00::1]:443"); raises ValueError naming the one that is not."""
    found = []
    for item in text.replace(",", " ").split():
        host, _, port = item.rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"must list host:port pairs, got {item!r}")
        found.append((host, int(port)))
    return found


def path_list(text: str) -> list[str]:
    """The paths of a `pythons` setting: separated by commas or whitespace."""
    return text.replace(",", " ").split()


def _absolute_paths(text: str) -> list[str]:
    paths = path_list(text)
    for path in paths:
        if not os.path.isabs(os.path.expanduser(path)):
            raise ValueError(f"must list absolute paths of interpreters, got {path!r}")
    return paths


def http_url(text: str) -> str:
    """An http(s) URL with a host, as `public_url` takes it; raises ValueError otherwise."""
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(ch.isspace() for ch in text):
        raise ValueError(f"must be an http(s) URL, got {text!r}")
    return text


# Settings checked by the parser of their own kind (each raises ValueError, BadLimit among them).
CHECKED: dict[str, Callable[[Any], object]] = {
    "build_memory": lambda value: parse_size(value, allow_percent=True),
    "build_processes": parse_processes,
    "build_disk": parse_disk,
    "pass_env": variable_names,
    "pythons": _absolute_paths,
    "dispatch": lambda value: _one_of(value, DISPATCH_MODES),
    "build_network": lambda value: _one_of(value, NETWORK_MODES),
    "build_network_allow": host_ports,
    "protected_branches": lambda value: branch_patterns(value),
    "public_url": http_url,
    "prepass_share": lambda value: _share(value),
    "web_url": http_url,
}


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise TypeError


def load_config_toml(path: Path) -> dict[str, Any]:
    """The config file's tables (settings and [[repos]]), or one line saying why it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise BadInput(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise BadInput(f"cannot read config file {path}: {exc.strerror}") from None


def read_config_file(path: Path) -> dict[str, Any]:
    data = load_config_toml(path)
    unknown = sorted(set(data) - set(_FIELDS) - NOT_SETTINGS)
    if unknown:
        raise BadInput(f"config file {path}: unknown setting '{unknown[0]}'")
    return {name: _coerce(name, value, str(path)) for name, value in data.items() if name not in NOT_SETTINGS}


def config_file(config_path: str | None = None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The config file the settings are read from (as load_settings finds it), or None."""
    environ = os.environ if environ is None else environ
    path_text = config_path or environ.get("VOLT_CONFIG")
    if path_text:
        return Path(path_text)
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None


def read_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    values = {}
    for name in _FIELDS:
        env_name = "VOLT_" + name.upper()
        if environ.get(env_name, "") != "":
            values[name] = _coerce(name, environ[env_name], env_name)
    return values


def load_settings(
    config_path: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the settings; `overrides` are the command-line flags that were given (None = not given)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = config_file(config_path, environ)
    if path is not None:
        values.update(read_config_file(path))
    values.update(read_environment(environ))
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = _coerce(name, value, "--" + name.replace("_", "-"))
    return Settings(**values)


def as_environment(settings: Settings) -> dict[str, str]:
    """The settings as `VOLT_*` variables, so that processes we start (runners) see the same ones."""
    env = {}
    for name in _FIELDS:
        value = getattr(settings, name)
        if value is not None:
            env["VOLT_" + name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
    return env
