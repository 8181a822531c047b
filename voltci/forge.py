"""Where a repository lives on a forge (GitHub, Gitea/Forgejo, GitLab): the `forge*` keys of a
`[[repos]]` table, checked once when the config file is read.

    [[repos]]
    url = "https://github.com/octo/proj.git"
    forge = "github"                    # github | gitea | gitlab
    forge_api = "https://api.github.com" # GitHub Enterprise: https://HOST/api/v3; Gitea and GitLab: the
                                         # instance's root (default: the URL's scheme and host)
    forge_project = "octo/proj"          # default: the URL's path; GitLab also takes a numeric id
    forge_token_env = "VOLT_FORGE_TOKEN" # the environment variable holding the token (the default)

The token itself is never part of a link: it is read from the environment of the process that talks
to the forge, at the moment it does, so it never reaches Redis, a build, a log or a page.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import asdict, dataclass
from typing import Any

from voltci.config import CREDENTIAL_WORDS, WITHHELD_PREFIXES
from voltci.errors import BadInput

FORGE_KINDS = ("github", "gitea", "gitlab")
FORGE_KEYS = ("forge", "forge_api", "forge_project", "forge_token_env")
DEFAULT_TOKEN_ENV = "VOLT_FORGE_TOKEN"
GITHUB_API = "https://api.github.com"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_PROJECT = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+|[0-9]+")


@dataclass(frozen=True)
class ForgeLink:
    """A repository's place on a forge: which kind, its API root, the project there, and the name of the
    environment variable that holds the token."""

    kind: str
    api: str
    project: str
    token_env: str = DEFAULT_TOKEN_ENV

    def token(self) -> str | None:
        """The token, read from this process's environment now (never stored)."""
        return os.environ.get(self.token_env) or None

    def pull_ref(self, number: int) -> str:
        """Where the forge keeps a pull request's head commit."""
        if self.kind == "gitlab":
            return f"refs/merge-requests/{number}/head"
        return f"refs/pull/{number}/head"

    def pull_refspec(self) -> str:
        """The refs of every pull request's head, as `git ls-remote` and `git fetch` take them."""
        return "refs/merge-requests/*/head" if self.kind == "gitlab" else "refs/pull/*/head"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ForgeLink:
        return cls(str(data["kind"]), str(data["api"]), str(data["project"]),
                   str(data.get("token_env") or DEFAULT_TOKEN_ENV))


def withheld_from_builds(name: str) -> bool:
    """Whether the sandbox withholds variable `name` from builds whatever `pass_env` says (config.py's
    WITHHELD_PREFIXES and CREDENTIAL_WORDS): a forge token's variable must be one."""
    upper = name.upper()
    return upper.startswith(WITHHELD_PREFIXES) or any(word in upper for word in CREDENTIAL_WORDS)


def is_project(text: str) -> bool:
    """Whether `text` is a project's path on a forge (`owner/name`, GitLab's `group/sub/name`) or a numeric
    id: it goes into API paths, so no `.` or `..` part and nothing but names."""
    return bool(_PROJECT.fullmatch(text)) and not any(part in (".", "..") for part in text.split("/"))


def _http_root(value: str) -> str | None:
    """`value` as an http(s) URL without a trailing slash, or None when it is not one."""
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        return None
    if any(ch.isspace() or ord(ch) < 32 for ch in value):
        return None
    return value.rstrip("/")


def _url_parts(url: str) -> tuple[str | None, str | None]:
    """The web root (`https://host`) and the project path (`owner/name`) of a repository URL, where it
    has them (an scp-like `git@host:owner/name.git` has the path; a local path has neither)."""
    if "://" in url:
        parts = urllib.parse.urlsplit(url)
        root = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}" if parts.scheme in ("http", "https") else None
        path = parts.path
    elif re.match(r"[^/]+@[^/:]+:", url):
        root, path = None, url.split(":", 1)[1]
    else:
        return None, None
    path = path.strip("/").removesuffix(".git")
    return root, path if is_project(path) else None


def forge_link(table: dict[str, Any], url: str, where: str) -> ForgeLink | None:
    """The forge link a `[[repos]]` table asks for (None without `forge`); bad input names the key."""
    kind = table.get("forge")
    if kind is None:
        extra = [key for key in FORGE_KEYS[1:] if key in table]
        if extra:
            raise BadInput(f"{where}: '{extra[0]}' needs 'forge' (one of {', '.join(FORGE_KINDS)})")
        return None
    if kind not in FORGE_KINDS:
        raise BadInput(f"{where}: 'forge' must be one of {', '.join(FORGE_KINDS)}, got {kind!r}")
    root, path = _url_parts(url)
    api_value = table.get("forge_api", GITHUB_API if kind == "github" else root)
    if api_value is None:
        raise BadInput(f"{where}: 'forge_api' is required: the {kind} instance's URL (the repository URL "
                       f"names no web host)")
    api = _http_root(api_value) if isinstance(api_value, str) else None
    if api is None:
        raise BadInput(f"{where}: 'forge_api' must be an http(s) URL, got {api_value!r}")
    project = table.get("forge_project", path)
    if project is None:
        raise BadInput(f"{where}: 'forge_project' is required: the project's path on the forge (owner/name)")
    if not isinstance(project, str | int) or isinstance(project, bool) or not is_project(str(project)):
        raise BadInput(f"{where}: 'forge_project' must be the project's path (owner/name) or GitLab's numeric "
                       f"id, got {project!r}")
    if kind != "gitlab" and "/" not in str(project):
        raise BadInput(f"{where}: 'forge_project' must be owner/name on {kind}, got {project!r}")
    token_env = table.get("forge_token_env", DEFAULT_TOKEN_ENV)
    if not isinstance(token_env, str) or not _ENV_NAME.fullmatch(token_env):
        raise BadInput(f"{where}: 'forge_token_env' must be an environment variable's name, got {token_env!r}")
    if not withheld_from_builds(token_env):
        raise BadInput(f"{where}: 'forge_token_env' must name a variable builds never get (one starting with VOLT_, "
                       f"or with TOKEN, SECRET or PASSWORD in its name), got {token_env!r}")
    return ForgeLink(kind, api, str(project), token_env)
