"""What a forge's pull-request webhook asks, read from its payload, and done: a head recorded and built
(or left waiting for approval), a pull request closed and its builds cancelled, an approval.

Called by the forge webhook routes (web/forgehooks.py), `volt approve` and the web page's Approve
button; the observer finds the same pull requests by polling their refs (observer.py). Payloads are
the forge's, checked field by field: a number out of range, a sha that is not one, a branch git would
refuse, a login with odd characters are bad input (the route answers 422, nothing is done).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from voltci.errors import BadInput
from voltci.git import is_sha
from voltci.models import Build, QueuedFor
from voltci.pulls import PullState, check_author, check_number, is_trusted
from voltci.store import Store

log = logging.getLogger("volt.pulls")

OPENS = {"opened", "reopened", "synchronize", "synchronized", "open", "reopen", "update", "edited"}
REOPENS = {"reopened", "reopen"}
CLOSES = {"closed", "close", "merge"}
_BRANCH_BAD = set(" ~^:?*[\\\x7f")


@dataclass(frozen=True)
class PullEvent:
    """A pull-request webhook, as Volt reads it from any forge's payload."""

    action: str
    number: int
    head: str
    base_branch: str
    author: str
    fork: bool
    association: str = ""
    title: str = ""

    @property
    def closes(self) -> bool:
        return self.action in CLOSES

    @property
    def opens(self) -> bool:
        return self.action in OPENS


def _section(data: Any, *path: str) -> Any:
    for part in path:
        data = data.get(part) if isinstance(data, dict) else None
    return data


def _branch(value: Any) -> str:
    """A branch name as a payload gives it, checked as git's check-ref-format would (without running git)."""
    if not isinstance(value, str) or not 0 < len(value) <= 250 or value.startswith(("-", "/", ".")) or \
            value.endswith((".lock", "/", ".")) or ".." in value or "//" in value or "@{" in value or \
            any(ch in _BRANCH_BAD or ord(ch) < 32 for ch in value):
        raise BadInput(f"the payload's base branch is not a branch name: {str(value)[:100]!r}")
    return value


def _sha(value: Any) -> str:
    if not isinstance(value, str) or not is_sha(value):
        raise BadInput("the payload's head is not a commit sha")
    return value


def _number(value: Any) -> int:
    number = check_number(value)
    if number is None:
        raise BadInput(f"the payload's pull request number is not one: {str(value)[:30]!r}")
    return number


def github_event(payload: dict[str, Any]) -> PullEvent:
    """A GitHub (or Gitea/Forgejo: the same shape, `synchronized` and `repo_id`) `pull_request` payload."""
    pull = payload.get("pull_request")
    if not isinstance(pull, dict):
        raise BadInput("a pull_request event without its pull_request")
    action = payload.get("action")
    head_repo, base_repo = _section(pull, "head", "repo"), _section(pull, "base", "repo")
    head_id = _section(head_repo, "id") if isinstance(head_repo, dict) else _section(pull, "head", "repo_id")
    base_id = _section(base_repo, "id") if isinstance(base_repo, dict) else _section(pull, "base", "repo_id")
    fork = head_repo is None or head_id is None or head_id != base_id
    if isinstance(head_repo, dict) and isinstance(base_repo, dict):
        fork = fork or head_repo.get("full_name") != base_repo.get("full_name")
    association = pull.get("author_association") or payload.get("author_association") or ""
    title = pull.get("title")
    return PullEvent(str(action)[:40], _number(payload.get("number", pull.get("number"))),
                     _sha(_section(pull, "head", "sha")), _branch(_section(pull, "base", "ref")),
                     check_author(_section(pull, "user", "login")), bool(fork),
                     association if isinstance(association, str) else "",
                     title[:500] if isinstance(title, str) else "")


def gitlab_event(payload: dict[str, Any]) -> PullEvent:
    """A GitLab `Merge Request Hook` payload (`object_kind: merge_request`)."""
    attrs = payload.get("object_attributes")
    if payload.get("object_kind") != "merge_request" or not isinstance(attrs, dict):
        raise BadInput("a merge request event without its object_attributes")
    source, target = attrs.get("source_project_id"), attrs.get("target_project_id")
    title = attrs.get("title")
    return PullEvent(str(attrs.get("action"))[:40], _number(attrs.get("iid")),
                     _sha(_section(attrs, "last_commit", "id")), _branch(attrs.get("target_branch")),
                     check_author(_section(payload, "user", "username")),
                     source is None or source != target, "", title[:500] if isinstance(title, str) else "")


def act(store: Store, repo: str, event: PullEvent) -> tuple[str, Build | None, list[Build]]:
    """Do what a pull-request webhook asks: record and build (or leave waiting) a head, or close the pull
    request and cancel its builds. What happened, the build queued, the builds cancelled."""
    entry = store.repos.known().get(repo) or {}
    if not entry.get("pull_requests"):
        return "ignored: pull_requests is off for this repository", None, []
    if event.closes:
        cancelled = store.pulls.close(repo, event.number, f"pull request #{event.number} was closed")
        for stopped in cancelled:
            log.info("%s: pull request #%d closed: build %s cancelled", repo, event.number, stopped.short)
        return "closed", None, cancelled
    if not event.opens:
        return f"ignored: action {event.action!r}", None, []
    trusted_authors = tuple(str(a) for a in entry.get("trusted_authors") or ())
    trusted = is_trusted(event.author, event.fork, True, event.association, trusted_authors)
    found = PullState(event.number, event.head, event.base_branch, event.author, event.fork, True, trusted,
                      title=event.title)
    what, state, build = store.pulls.seen(repo, found, QueuedFor.WEBHOOK, reopen=event.action in REOPENS)
    if what == "waiting":
        log.info("%s: pull request #%d at %s from %s waits for approval", repo, event.number, event.head[:10],
                 event.author or "an unknown author")
        waiting_for_approval(store, repo, state)
    return what, build, []


def approve(store: Store, repo: str, number: int, who: str) -> tuple[PullState, Build | None]:
    """Approve the head pull request `number` waits with (`volt approve`, the web page): it is built."""
    state, build = store.pulls.approve(repo, number, who)
    if build is not None:
        log.info("%s: pull request #%d at %s approved by %s: queued", repo, number, state.head[:10], who)
    return state, build


def waiting_for_approval(store: Store, repo: str, state: PullState) -> None:
    """A pull request's head waits for approval: the forge is told so on that head, with how to approve it
    (statuses.py sends it; nothing waits on it here)."""
    store.statuses.announce_pull(repo, state.number)
