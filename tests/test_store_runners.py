"""The runners part (store/runners.py), on fakeredis: a runner is alive while its heartbeat key lives,
the registry keeps one that went (and then forgets it), its table shows the alive first and no work for
the gone, and the latest lost attempts read newest first."""

from __future__ import annotations

import fakeredis
import pytest
from support import SHA_A

from voltci import keys
from voltci.models import Attempt, AttemptState, Build, LostAttempt, RunnerBeat
from voltci.store.endings import record_lost
from voltci.store.runners import Runners


@pytest.fixture
def runners() -> Runners:
    return Runners(fakeredis.FakeRedis(decode_responses=True))


def test_a_runner_is_alive_while_its_key_lives_and_is_then_kept_as_gone(runners: Runners) -> None:
    for name in ("a", "b"):
        runners.send_beat(RunnerBeat(name=name, queues=["volt"], build=f"proj-{name}", attempt=1), ttl_ms=60_000)
    assert sorted(runners.live()) == ["a", "b"]
    runners.update_registry(runners.live())
    runners.r.delete(keys.runner("b"))  # its key expired: the runner stopped sending heartbeats
    runners.drop_beat("a")  # a runner leaving cleanly
    runners.send_beat(RunnerBeat(name="c", queues=["volt"]), ttl_ms=60_000)
    runners.update_registry(runners.live())
    rows = runners.table()
    assert [(r.name, r.alive, r.state) for r in rows] == [("c", True, "alive"), ("a", False, "gone"),
                                                          ("b", False, "gone")]
    assert rows[1].build == "" and rows[2].build == ""  # the gone work on nothing


def test_lost_attempts_newest_first(runners: Runners) -> None:
    build = Build(id=keys.build_id("proj", SHA_A), repo="proj", url="/r", commit=SHA_A, branch="main")
    with runners.r.pipeline() as pipe:
        for n in (1, 2):
            record_lost(pipe, build, Attempt(n, AttemptState.LOST, f"r{n}", reason="gone"), f"step {n}")
        pipe.execute()
    lost = runners.recent_lost()
    assert [(entry.attempt, entry.then) for entry in lost] == [(2, "step 2"), (1, "step 1")]
    assert isinstance(lost[0], LostAttempt) and runners.recent_lost(1) == lost[:1]
