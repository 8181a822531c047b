"""What every part of the store shares: the one decoded client, the settings, and batched writes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from voltci.config import Settings
from voltci.connection import decoded
from voltci.store.tx import Txn


def _decodes(client: redis.Redis) -> bool:
    return bool(client.connection_pool.connection_kwargs.get("decode_responses"))


class StoreBase:
    """The store's state: a string-decoding Redis client and the settings its writes follow.

    Given rq's bytes client (a runner's job connection), it opens a decoding one on the same server:
    Volt's records are read as text everywhere, and compressed blobs are fetched as bytes on purpose
    (`tx.raw`)."""

    def __init__(self, client: redis.Redis, settings: Settings | None = None):
        # redis-py types every reply as `bytes | str`; this client decodes, so its replies are str (and
        # the store's records say what each one holds).
        self.r: Any = client if _decodes(client) else decoded(client)
        self.settings = settings or Settings()

    @contextmanager
    def _batch(self, pipeline: Txn | None) -> Iterator[Txn]:
        """The caller's pipeline, or one of our own that is executed (as one transaction) at the end."""
        if pipeline is not None:
            yield pipeline
            return
        with self.r.pipeline() as pipe:
            yield pipe
            pipe.execute()
