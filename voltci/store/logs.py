"""A build's output: appended while its attempt runs (and published, for `volt log -f` and the web
page), compressed when the build ends, read whole or from an offset.

Appends are guarded by the attempt: a runner whose attempt was re-dispatched or cancelled cannot
write into the output of the attempt that replaced it, nor onto a compressed log.
"""

from __future__ import annotations

import json

from voltci import keys
from voltci.store import codec
from voltci.store.channels import Subscription
from voltci.store.tx import Client, Txn, guarded, raw

READ_TRIES = 3


class Logs:
    """A build's output. `Logs(client)`."""

    def __init__(self, client: Client):
        self.r = client

    def append(self, build_id: str, attempt: int, text: str) -> int | None:
        """Append `text` to the output of attempt `attempt` and publish it; the output's new length in
        bytes, or None when that attempt no longer owns the build (nothing was written)."""
        size = len(text.encode())

        def body(pipe: Txn) -> int | None:
            status, current = pipe.hmget(keys.build(build_id), "status", "attempt")
            if status != "running" or current != str(attempt):
                return None
            end = int(pipe.strlen(keys.build_log(build_id))) + size
            pipe.multi()
            pipe.append(keys.build_log(build_id), text)
            pipe.publish(keys.log_channel(build_id), json.dumps({"attempt": attempt, "end": end, "text": text}))
            return end

        return guarded(self.r, [keys.build(build_id), keys.build_log(build_id)], body)

    def share(self, unit_id: str) -> int:
        """How many outputs share the output budget of `unit_id`'s build (`log_max_bytes`): a matrix leg
        shares it with its build's other legs, so that a matrix build keeps no more output than a build."""
        parent = self.r.hget(keys.build(unit_id), "parent")
        if not parent:
            return 1
        legs = self.r.hget(keys.build(parent), "legs") or ""
        return max(1, int(legs)) if legs.isdigit() else 1

    def read(self, build_id: str, start: int = 0) -> str:
        """The stored output from byte `start` on (the current attempt's, or the ended build's)."""
        for _ in range(READ_TRIES):
            with self.r.pipeline(transaction=False) as pipe:
                pipe.hget(keys.build(build_id), "log_compressed")
                raw(pipe, "GET", keys.build_log(build_id))
                pipe.hget(keys.build(build_id), "log_compressed")
                before, data, after = pipe.execute()
            if before == after:  # not compressed in between
                break
        if not data:
            return ""
        if before == "1":
            data = codec.decompress_log(data)
        return data[start:].decode(errors="replace")

    def read_range(self, build_id: str, start: int, end: int) -> str:
        """Bytes `start` to `end` (excluded) of a running attempt's output."""
        data = raw(self.r, "GETRANGE", keys.build_log(build_id), start, end - 1)
        return (data or b"").decode(errors="replace")

    def listen(self, build_id: str) -> Subscription:
        """The build's output as it is appended, the end of every build, and every build's first failure
        (subscribed before it returns)."""
        return Subscription(self.r, {keys.log_channel(build_id): "log", keys.events(): "event",
                                     keys.first_failures(): "first_failure"})

    def listen_events(self) -> Subscription:
        """One message per build that ends ("event"), and one per build whose first failing test just
        became known ("first_failure": its id and the test's, store/firstfailure.py)."""
        return Subscription(self.r, {keys.events(): "event", keys.first_failures(): "first_failure"})
