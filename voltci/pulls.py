"""Pull requests as Volt keeps them, and the pure policies over them: which refs name one, who is trusted.

A pull request is anyone's code: whoever opens one from a fork wrote its head. What Volt keeps of each
(`PullState`, one JSON field per pull request in its repository's hash, store/pulls.py) says what its
builds may do: an untrusted one — a fork's whose author is not trusted, or one Volt knows nothing of
but its ref — waits until someone approves its head, and every new head waits again. Callers: the
observer (refs found by polling), the forge webhooks (web/forgehooks.py), `volt approve`, the web page.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from voltci.git import is_sha

MAX_NUMBER = 10**9  # no forge numbers its pull requests beyond this; a larger one is hostile
TRUSTED_ASSOCIATIONS = ("OWNER", "MEMBER", "COLLABORATOR")  # GitHub's author_association values trusted
EVERYONE = "*"  # in `trusted_authors`: every pull request is trusted (no forks can open one)
MAX_AUTHOR = 100
_NUMBER = re.compile(r"[1-9][0-9]{0,9}")
_AUTHOR = re.compile(r"[A-Za-z0-9_.@-]{1,100}")


class PullWait:
    """What a pull request's state says (`PullState.state`)."""

    OPEN = "open"  # its heads are built
    WAITING = "waiting"  # its head waits for approval
    CLOSED = "closed"  # closed or merged: nothing more is built, its builds were cancelled


@dataclass
class PullState:
    """One pull request as Volt knows it: its newest head and base branch, who opened it and from where,
    whether it waits for approval, and its builds (newest first, at most BUILDS_KEPT)."""

    number: int
    head: str = ""
    base_branch: str = ""  # "" until a webhook names it: the repository's default branch is used
    author: str = ""  # "" when only its ref was seen
    fork: bool = False
    known: bool = False  # a webhook told who opened it and from where (polling alone sees only the ref)
    trusted: bool = False
    state: str = PullWait.OPEN
    approved: str = ""  # the head someone approved, and who (`sha by NAME`)
    title: str = ""
    builds: list[str] = field(default_factory=list)
    updated: str = ""

    BUILDS_KEPT = 20

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> PullState:
        data = json.loads(text)
        return cls(int(data["number"]), str(data.get("head", "")), str(data.get("base_branch", "")),
                   str(data.get("author", "")), bool(data.get("fork")), bool(data.get("known")),
                   bool(data.get("trusted")), str(data.get("state", PullWait.OPEN)), str(data.get("approved", "")),
                   str(data.get("title", "")), [str(b) for b in data.get("builds", [])][:cls.BUILDS_KEPT],
                   str(data.get("updated", "")))

    @property
    def approved_head(self) -> str:
        return self.approved.split(" ", 1)[0]

    def may_build(self, head: str) -> bool:
        """Whether `head` may be built now: the pull request is open and trusted, or that head approved."""
        return self.state != PullWait.CLOSED and (self.trusted or self.approved_head == head)

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "head": self.head, "base_branch": self.base_branch or None,
                "author": self.author or None, "fork": self.fork, "trusted": self.trusted, "state": self.state,
                "approved": self.approved or None, "title": self.title, "builds": self.builds}


def number_of_ref(ref: str, refspec: str) -> int | None:
    """The pull request number in `ref` when it is one of `refspec`'s refs (`refs/pull/*/head`), else
    None: a ref whose number part is anything but a plain number in range is no pull request."""
    prefix, _, suffix = refspec.partition("*")
    if not ref.startswith(prefix) or not ref.endswith(suffix) or len(ref) > len(prefix) + len(suffix) + 10:
        return None
    return check_number(ref[len(prefix):len(ref) - len(suffix)])


def check_number(value: object) -> int | None:
    """A pull request number from a ref's part or a payload's field; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 < value <= MAX_NUMBER else None
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        number = int(value)
        return number if number <= MAX_NUMBER else None
    return None


def check_author(value: object) -> str:
    """A forge login as Volt keeps it ("" when it is none)."""
    return value if isinstance(value, str) and _AUTHOR.fullmatch(value) else ""


def is_trusted(author: str, fork: bool, known: bool, association: str, trusted_authors: tuple[str, ...]) -> bool:
    """Whether a pull request's heads are built without approval: everyone is trusted (`*`), its author is
    named in `trusted_authors` or is the project's own (OWNER, MEMBER, COLLABORATOR), or a webhook told it
    comes from a branch of the repository itself (whoever pushed that branch can push any branch)."""
    if EVERYONE in trusted_authors:
        return True
    if author and author in trusted_authors:
        return True
    if association in TRUSTED_ASSOCIATIONS:
        return True
    return known and not fork


def pull_heads(lines: list[tuple[str, str]], refspec: str, most: int) -> dict[int, str]:
    """Pull request number -> head, from (sha, ref) pairs `git ls-remote` printed; at most `most` of them,
    the newest numbers first (a flood of refs costs a bounded pass)."""
    found: dict[int, str] = {}
    for sha, ref in lines:
        number = number_of_ref(ref, refspec)
        if number is not None and is_sha(sha):
            found[number] = sha
    return {number: found[number] for number in sorted(found, reverse=True)[:most]}
