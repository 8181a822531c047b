"""The logs part (store/logs.py), on fakeredis: only the attempt that owns a build appends to its output,
an ended build's output is read whole once compressed, and a matrix leg shares its build's budget."""

from __future__ import annotations

import fakeredis
import pytest
from support import SHA_A, outcome

from voltci import keys
from voltci.models import Build, Leg, Status
from voltci.store import Store


@pytest.fixture
def store() -> Store:
    return Store(fakeredis.FakeRedis(decode_responses=True))


def test_only_the_running_attempt_appends_and_the_ended_output_reads_whole(store: Store) -> None:
    build = Build(id=keys.build_id("proj", SHA_A), repo="proj", url="/r", commit=SHA_A, branch="main")
    assert store.logs.append(build.id, 1, "early\n") is None  # queued: no attempt runs it yet
    store.builds.submit(build)
    store.builds.start_attempt(build.id, 1, "r1")
    assert store.logs.append(build.id, 1, "one ünïcode line\n") == len("one ünïcode line\n".encode())
    assert store.logs.append(build.id, 2, "a stale attempt\n") is None
    assert store.logs.read_range(build.id, 4, 10) == "ünïc"
    store.builds.finish(build.id, 1, "r1", outcome(Status.PASSED))
    assert store.records.get_build(build.id).log_compressed
    assert store.logs.read(build.id) == "one ünïcode line\n" and store.logs.read(build.id, 4) == "ünïcode line\n"
    assert store.logs.append(build.id, 1, "after the end\n") is None


def test_a_legs_output_shares_its_builds_budget(store: Store) -> None:
    build = Build(id=keys.build_id("proj", SHA_A), repo="proj", url="/r", commit=SHA_A, branch="main")
    store.builds.submit(build)
    store.builds.start_attempt(build.id, 1, "r1")
    legs = store.legs.start(build.id, 1, [Leg.of(f"3.1{n}", {}) for n in range(3)], "r1")
    assert store.logs.share(build.id) == 1 and [store.logs.share(leg.id) for leg in legs] == [3, 3, 3]
