"""The forge push hooks received, so that one replayed is refused (web/hooks.py decides what marks a
hook: its body's digest, its delivery id). Kept for keys.HOOKS_SEEN_S and at most keys.HOOKS_SEEN_MAX
marks: the set cannot grow with what anyone sends, only with new hooks signed with the secret."""

from __future__ import annotations

from voltci import keys
from voltci.store.tx import Client, Txn, guarded


class Hooks:
    """The marks of hooks received. `Hooks(client)`."""

    def __init__(self, client: Client):
        self.r = client

    def remember(self, marks: list[str], now: float, keep_s: float = keys.HOOKS_SEEN_S,
                 most: int = keys.HOOKS_SEEN_MAX) -> str | None:
        """Remember a hook by its `marks`, in one transaction; the mark seen before when it is a replay
        (then nothing is written). Marks older than `keep_s` are dropped, and the oldest beyond `most`."""
        key = keys.hooks_seen()

        def body(pipe: Txn) -> str | None:
            for mark in marks:
                when = pipe.zscore(key, mark)
                if when is not None and float(when) > now - keep_s:
                    return mark
            pipe.multi()
            pipe.zremrangebyscore(key, "-inf", now - keep_s)
            pipe.zadd(key, dict.fromkeys(marks, now))
            pipe.zremrangebyrank(key, 0, -most - 1)
            pipe.expire(key, int(keep_s) + 1)
            return None

        return guarded(self.r, [key], body)
