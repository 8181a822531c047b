"""The webhook outbox: ids of ended builds whose message is to be sent (pushed by the transaction that
ends each build), and the list of those being sent, so a scheduler that dies mid-send loses none."""

from __future__ import annotations

import json

from voltci import keys
from voltci.store.base import StoreBase


class Outbox(StoreBase):
    def outbox_recover(self, limit: int = 100_000) -> int:
        """Messages a scheduler was sending when it stopped go back to the outbox; how many."""
        moved = 0
        while moved < limit and self.r.lmove(keys.outbox_sending(), keys.outbox(), "RIGHT", "RIGHT"):
            moved += 1
        return moved

    def outbox_take(self, wait_s: float) -> tuple[str, str] | None:
        """The oldest message, moved to `sending`, if one comes within `wait_s`: (its raw text, build id)."""
        text = self.r.blmove(keys.outbox(), keys.outbox_sending(), wait_s, "RIGHT", "LEFT")
        if text is None:
            return None
        return text, str(json.loads(text)["build"])

    def outbox_done(self, text: str) -> None:
        self.r.lrem(keys.outbox_sending(), 1, text)
