"""What every request of the web app shares: the store, the settings and the Redis URL (for messages).

Kept on the app (`app.extensions["volt"]`), so the route modules are plain blueprints with no state.
"""

from __future__ import annotations

from dataclasses import dataclass

import flask

from voltci.config import Settings
from voltci.store import Store


@dataclass(frozen=True)
class Volt:
    store: Store
    settings: Settings
    redis_url: str


def volt() -> Volt:
    """The app's Volt context (inside a request)."""
    found: Volt = flask.current_app.extensions["volt"]
    return found


def store() -> Store:
    return volt().store
