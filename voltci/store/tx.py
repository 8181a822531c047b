"""The one way the store changes Volt's records: a guarded transaction, with one retry bound.

`guarded(client, watched, body)` WATCHes the `watched` keys and calls `body(pipe)`. The body reads
what it needs (a watching pipeline answers at once), decides, and when it decides to write calls
`pipe.multi()` and queues its writes, which Redis then applies all together — or none of them, when a
watched key changed in between; the body then runs again on what is there now. Every state change of
a build is such a transaction on its record, so two writers (a runner ending a build, the scheduler
re-dispatching it, a person cancelling it) can never both act on the same state.

A full Redis refuses the whole transaction (EXECABORT): nothing is half-written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import redis
from redis.client import NEVER_DECODE

T = TypeVar("T")
TRIES = 10
# The store's decoding client, and a pipeline of it. redis-py types every reply `bytes | str`; the
# store's client decodes, so replies are str, and each record's reader says what it holds.
Client = Any
Txn = Any


class Contended(redis.WatchError):
    """Other writers changed the watched keys on every one of TRIES tries; nothing was written.

    A WatchError, so the loops that retry on Redis errors try again later."""


def guarded(client: redis.Redis, watched: Sequence[str], body: Callable[[Txn], T]) -> T:
    """Run `body` as one guarded transaction on `watched` (see the module's docstring); what it returned."""
    with client.pipeline() as pipe:
        for _ in range(TRIES):
            try:
                pipe.watch(*watched)
                result = body(pipe)
                if pipe.explicit_transaction:
                    pipe.execute()
                return result
            except redis.WatchError:
                continue  # someone else wrote first: read again, decide again
    raise Contended(f"{watched[0]} changed {TRIES} times while it was being written; try again")


def raw(client: redis.Redis | Txn, *command: Any) -> Any:
    """A command whose reply stays bytes on the store's decoding client (for compressed blobs)."""
    return client.execute_command(*command, **{NEVER_DECODE: []})


@contextmanager
def batch(client: Client, pipeline: Txn | None) -> Iterator[Txn]:
    """The caller's pipeline, or one of our own that is executed (as one transaction) at the end."""
    if pipeline is not None:
        yield pipeline
        return
    with client.pipeline() as pipe:
        yield pipe
        pipe.execute()
