"""Watched repositories: where each lives (and its dispatch priority), the observer's pointer per branch,
and `volt notify`."""

from __future__ import annotations

import json

from voltci import keys
from voltci.errors import BadInput
from voltci.store.channels import Subscription
from voltci.store.tx import Client


class Repos:
    """The watched repositories' records. `Repos(client)`."""

    def __init__(self, client: Client):
        self.r = client

    def register(self, name: str, url: str, branches: list[str], priority: str = "normal", *,
                 forge: dict[str, str] | None = None, pull_requests: bool = False,
                 trusted_authors: list[str] | None = None) -> None:
        """Record where repository `name` lives, the branches watched, its dispatch priority and, for a
        repository on a forge, its link there (no token) and its pull-request rules; a name already used
        for another URL is bad input. Nothing is written when nothing changed (an observer restarting
        into a full Redis still starts)."""
        text = self.r.hget(keys.repos(), name)
        if text is not None:
            known = json.loads(text)
            if known.get("url") != url:
                raise BadInput(f"repository name '{name}' is already used for {known.get('url')}; "
                               f"choose another with --name")
        fields: dict = {"url": url, "branches": branches, "priority": priority}
        if forge is not None:
            fields["forge"] = forge
        if pull_requests:
            fields.update(pull_requests=True, trusted_authors=trusted_authors or [])
        entry = json.dumps(fields)
        if text != entry:
            self.r.hset(keys.repos(), name, entry)

    def known(self) -> dict[str, dict]:
        """Every watched repository's entry (url, branches, priority; forge, pull_requests and
        trusted_authors where set), by name."""
        return {name: json.loads(text) for name, text in self.r.hgetall(keys.repos()).items()}

    def is_known(self, repo: str) -> bool:
        return keys.is_valid_repo_name(repo) and bool(self.r.hexists(keys.repos(), repo))

    def pointers(self, repo: str, branches: list[str]) -> dict[str, str | None]:
        """The last commit the observer enqueued, per branch."""
        return dict(zip(branches, self.r.hmget(keys.pointer(repo), branches), strict=False)) if branches else {}

    def set_pointer(self, repo: str, branch: str, sha: str) -> None:
        self.r.hset(keys.pointer(repo), branch, sha)

    def drop_pointer(self, repo: str, branch: str) -> None:
        """Forget a branch that was deleted upstream: created again, it starts from its head."""
        self.r.hdel(keys.pointer(repo), branch)

    def notify(self, repo: str, ref: str | None = None, via: str = "notify") -> int:
        """Ask the observers to look at `repo` now (someone waits for what they find: `via` says who asked,
        "notify" or "webhook"); how many observers heard it."""
        if not keys.is_valid_repo_name(repo) or not self.r.hexists(keys.repos(), repo):
            raise BadInput(f"unknown repository '{repo}': no observer watches it (see `volt status`)")
        return int(self.r.publish(keys.notify(), json.dumps({"repo": repo, "ref": ref or "", "via": via})))

    def listen_notify(self) -> Subscription:
        return Subscription(self.r, {keys.notify(): "notify"})
