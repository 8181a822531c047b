"""Volt's publish/subscribe channels, read as (kind, message) pairs with the JSON decoded."""

from __future__ import annotations

import json
from typing import Any

import redis


class Subscription:
    """A subscription to some of Volt's channels; `channels` maps each channel to the kind it reports."""

    def __init__(self, client: redis.Redis, channels: dict[str, str]):
        self.kinds = channels
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            self.pubsub.subscribe(*channels)
        except redis.RedisError:
            self.pubsub.close()
            raise

    def get(self, timeout: float) -> tuple[str, dict[str, Any]] | None:
        """The next message within `timeout` seconds, or None; a message that is not JSON is skipped."""
        message = self.pubsub.get_message(timeout=timeout)
        if not message or message.get("type") != "message":
            return None
        try:
            data = json.loads(message["data"])
        except ValueError:
            return None
        return (self.kinds.get(message["channel"], ""), data) if isinstance(data, dict) else None

    def close(self) -> None:
        self.pubsub.close()
