"""The webhook outbox: messages to send (ended builds, culprits found, first failures), pushed by the very
transaction that ends each build, names a culprit or records a first failure (`put`, in the caller's
pipeline), and the list of those being sent, so a scheduler that dies mid-send loses none."""

from __future__ import annotations

import json
from typing import Any

from voltci import keys
from voltci.store.tx import Client, Txn

OUTBOX_KEPT = 10_000  # with no webhook configured, nobody empties it: keep it bounded


def put(pipe: Txn, message: dict[str, Any]) -> None:
    """Queue a message for the webhook (see webhooks.py), in the caller's transaction."""
    pipe.lpush(keys.outbox(), json.dumps(message))
    pipe.ltrim(keys.outbox(), 0, OUTBOX_KEPT - 1)


class Outbox:
    """The messages' sender's side. `Outbox(client)`."""

    def __init__(self, client: Client):
        self.r = client

    def recover(self, limit: int = 100_000) -> int:
        """Messages a scheduler was sending when it stopped go back to the outbox; how many."""
        moved = 0
        while moved < limit and self.r.lmove(keys.outbox_sending(), keys.outbox(), "RIGHT", "RIGHT"):
            moved += 1
        return moved

    def take(self, wait_s: float) -> tuple[str, str] | None:
        """The oldest message, moved to `sending`, if one comes within `wait_s`: (its raw text, build id)."""
        text = self.r.blmove(keys.outbox(), keys.outbox_sending(), wait_s, "RIGHT", "LEFT")
        if text is None:
            return None
        return text, str(json.loads(text)["build"])

    def done(self, text: str) -> None:
        self.r.lrem(keys.outbox_sending(), 1, text)
