"""The loop of a duty only the acting scheduler does (sending webhook messages, posting commit
statuses): run while this scheduler leads, take over what a scheduler before it left half done the
moment it starts leading, ride out Redis outages saying each once (outage.Outage).

A scheduler that loses the lead stops at its next step; one that gains it takes over before its first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import redis

from voltci.outage import Outage

NOT_LEADING_WAIT_S = 1.0  # how often a scheduler that does not lead asks again
OUTAGE_WAIT_S = 2.0  # after Redis failed a step


def while_leading(stop: threading.Event, is_leading: Callable[[], bool], take_over: Callable[[], object],
                  step: Callable[[], float], outage: Outage, wrote: Callable[[], bool] = lambda: True) -> None:
    """Until `stop` is set: while `is_leading()`, `take_over()` once each time the lead is gained, then
    `step()` again and again, waiting the seconds each returns. A step after which `wrote()` is true
    tells `outage` Redis takes writes again (one that only read says nothing of that)."""
    was_leading = False
    while not stop.is_set():
        try:
            if not is_leading():
                was_leading = False
                stop.wait(NOT_LEADING_WAIT_S)
                continue
            if not was_leading:
                take_over()
                was_leading = True
            wait = step()
            if wrote():
                outage.ok()
            stop.wait(wait)
        except redis.RedisError as exc:
            outage.failed(exc)
            stop.wait(OUTAGE_WAIT_S)
