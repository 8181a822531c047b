"""The records and history parts (store/records.py, store/history.py), on fakeredis: the partial reads
return what a whole read would, field for field, whatever state the build is in; a repository's pages,
newest builds, charts and branches, and the fall-backs for records an earlier Volt wrote. Commit
lookup and the per-attempt fencing are tested in test_results.py."""

from __future__ import annotations

from dataclasses import replace

import fakeredis
import pytest
from support import outcome

from voltci import keys
from voltci.config import Settings
from voltci.errors import BadInput
from voltci.models import Build, Status, Timings
from voltci.store import Store
from voltci.store.records import LIGHT_FIELDS


def sha(n: int) -> str:
    return f"{n:04x}".ljust(40, "d")


def build(n: int, repo: str = "proj", branch: str = "main") -> Build:
    return Build(id=keys.build_id(repo, sha(n)), repo=repo, url="/r", commit=sha(n), branch=branch,
                 subject=f"change {n}", author="Ann <ann@volt.invalid>")


@pytest.fixture
def store() -> Store:
    return Store(fakeredis.FakeRedis(decode_responses=True), Settings())


def light(whole: Build) -> Build:
    """What a light read keeps of a whole record: LIGHT_FIELDS, the rest at their defaults."""
    return Build.from_hash({k: v for k, v in whole.to_hash().items() if k in LIGHT_FIELDS})


def test_a_light_read_is_the_whole_records_light_fields_in_every_state(store: Store) -> None:
    queued, running, ended, cancelled = (build(n) for n in range(4))
    for b in (queued, running, ended, cancelled):
        store.builds.submit(b)
    for b in (running, ended):
        store.builds.start_attempt(b.id, 1, "r1")
    store.builds.finish(ended.id, 1, "r1", outcome(Status.FAILED))
    store.builds.cancel(cancelled.id, "not wanted")
    ids = [b.id for b in (queued, running, ended, cancelled)] + ["proj-gone"]
    assert store.records.light(ids) == [light(b) for b in store.records.builds(ids)]
    assert [b.id for b in store.records.builds(ids)] == ids[:4]  # what is gone is left out, the order kept
    assert store.records.light(ids)[2].counts == store.records.get_build(ended.id).counts


def test_a_read_of_some_fields_leaves_the_rest_at_their_defaults(store: Store) -> None:
    b = build(1)
    store.builds.submit(b)
    found = store.records.fields([b.id, "proj-gone"], ("repo", "commit", "branch"))
    assert found == [Build(id=b.id, repo="proj", url="", commit=sha(1), branch="main")]


def test_pages_newest_first_with_the_total(store: Store) -> None:
    for n in range(7):
        store.builds.add(build(n), score=n)
    first, total = store.history.page("proj", 1, 3)
    last, _ = store.history.page("proj", 3, 3)
    assert total == 7 and [b.commit for b in first] == [sha(6), sha(5), sha(4)] and [b.commit for b in last] == [sha(0)]
    assert store.history.page("proj", 4, 3) == ([], 7)
    assert [b.commit for b in store.history.builds("proj", 2)] == [sha(6), sha(5)]
    with pytest.raises(BadInput, match="not a repository name"):
        store.history.builds("no such/repo")


def test_the_newest_build_of_each_repository_and_of_a_branch(store: Store) -> None:
    store.builds.add(build(1), score=1)
    store.builds.add(build(2, branch="dev"), score=2)
    store.builds.add(build(3, repo="other"), score=3)
    latest = store.history.latest_builds(["proj", "other", "empty"])
    assert (latest["proj"].commit, latest["other"].commit, latest["empty"]) == (sha(2), sha(3), None)
    assert store.history.latest_build("proj", "main").commit == sha(1)
    assert store.history.latest_build("proj").commit == sha(2) and store.history.latest_build("proj", "nope") is None
    store.r.delete(keys.repo_heads("proj"))  # a history written before each branch's newest was recorded
    assert store.history.latest_build("proj", "main").commit == sha(1)


def test_a_chart_reads_a_branchs_recent_builds_without_their_output(store: Store) -> None:
    for n in range(6):
        store.builds.record_finished(replace(build(n, branch="main" if n % 2 else "dev"), log_tail=""),
                                     outcome(Status.PASSED), f"output {n}\n", score=float(n))
    recent = store.history.recent_builds("proj", "main", limit=2)
    assert [b.commit for b in recent] == [sha(5), sha(3)] and all(b.log_tail == "" and not b.jobs for b in recent)
    assert len(store.history.recent_builds("proj")) == 6 and store.history.branches("proj") == ["dev", "main"]


def test_timings_fall_back_to_the_durations_an_earlier_volt_kept(store: Store) -> None:
    assert store.history.timings("proj") == Timings({})
    store.r.hset(keys.repo_durations("proj"), "t.T.test_a", "1.5")
    assert store.history.timings("proj") == Timings({"t.T.test_a": 1.5})
