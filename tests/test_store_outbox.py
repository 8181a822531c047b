"""The outbox part (store/outbox.py), on fakeredis: messages put by the transactions that end builds are
kept bounded, taken oldest first into `sending`, and given back when a sender stopped mid-send."""

from __future__ import annotations

import json

import fakeredis

from voltci import keys
from voltci.store import outbox
from voltci.store.outbox import Outbox


def test_messages_are_taken_oldest_first_and_a_stopped_senders_come_back(monkeypatch) -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    monkeypatch.setattr(outbox, "OUTBOX_KEPT", 3)
    with client.pipeline() as pipe:
        for n in range(5):
            outbox.put(pipe, {"build": f"proj-{n}"})
        pipe.execute()
    box = Outbox(client)
    assert client.llen(keys.outbox()) == 3  # bounded: with no webhook, nobody empties it
    text, build_id = box.take(0.1)
    assert build_id == "proj-2" and json.loads(text) == {"build": "proj-2"}
    assert box.take(0.1)[1] == "proj-3"
    assert box.recover() == 2 and client.llen(keys.outbox_sending()) == 0  # a sender stopped: both come back
    taken = box.take(0.1)
    box.done(taken[0])
    assert client.llen(keys.outbox_sending()) == 0 and client.llen(keys.outbox()) == 2
    for _ in range(2):
        box.take(0.1)
    assert box.take(0.1) is None
