"""Pull requests in the store and their policies: which refs name one, who is trusted, a head recorded and
queued in one transaction (never twice), waiting for approval, approval, closing; and the bounds on
what anyone who opens pull requests can make Volt keep."""

from __future__ import annotations

import pytest
from support import run_volt

from voltci import keys
from voltci.config import Settings
from voltci.errors import BadInput
from voltci.models import QueuedFor, Status
from voltci.pulls import PullState, PullWait, check_number, is_trusted, number_of_ref, pull_heads
from voltci.store import Store

HEAD_A = "a" * 40
HEAD_B = "b" * 40


@pytest.fixture
def store(fake) -> Store:
    store = Store(fake, Settings())
    store.repos.register("proj", "/srv/proj.git", ["main"], pull_requests=True, trusted_authors=["alice"])
    return store


def trusted(number: int, head: str = HEAD_A, **more) -> PullState:
    return PullState(number, head, "main", more.pop("author", "alice"), False, True, True, **more)


def from_fork(number: int, head: str = HEAD_A, author: str = "mallory") -> PullState:
    return PullState(number, head, "main", author, True, True, False)


def test_only_plain_numbers_in_range_name_a_pull_request() -> None:
    spec = "refs/pull/*/head"
    assert number_of_ref("refs/pull/12/head", spec) == 12
    assert number_of_ref("refs/merge-requests/7/head", "refs/merge-requests/*/head") == 7
    hostile = ["refs/pull/0/head", "refs/pull/-1/head", "refs/pull/012/head", "refs/pull/1e9/head",
               "refs/pull/99999999999/head", "refs/pull/1/merge", "refs/pull/1/../../heads/main/head",
               "refs/pull/1 /head", "refs/pull/١٢/head", "refs/heads/pull/1/head", "refs/pull/1/head/x"]
    assert [number_of_ref(ref, spec) for ref in hostile] == [None] * len(hostile)
    assert [check_number(v) for v in (True, 0, -3, 10**10, "7", 7, 7.0)] == [None, None, None, None, 7, 7, None]


def test_a_flood_of_refs_costs_a_bounded_pass_the_newest_first() -> None:
    lines = [(f"{n:040x}", f"refs/pull/{n}/head") for n in range(1, 5001)] + [("zz", "refs/pull/9/head")]
    found = pull_heads(lines, "refs/pull/*/head", 20)
    assert list(found) == list(range(5000, 4980, -1))


def test_who_is_trusted() -> None:
    assert is_trusted("alice", True, True, "", ("alice",))
    assert is_trusted("bob", True, True, "MEMBER", ())
    assert is_trusted("bob", False, True, "", ())  # a branch of the repository itself
    assert not is_trusted("bob", True, True, "CONTRIBUTOR", ("alice",))
    assert not is_trusted("", False, False, "", ("alice",))  # only its ref was seen
    assert is_trusted("", False, False, "", ("*",))


def test_a_trusted_head_is_queued_once_never_as_its_branchs_newest(store: Store) -> None:
    what, state, build = store.pulls.seen("proj", trusted(3), QueuedFor.WEBHOOK, subject="Add a thing")
    assert what == "queued" and build is not None
    assert build.id == keys.pull_build_id("proj", 3, HEAD_A) and build.branch == "main"
    assert build.pull_request is not None and build.pull_request.number == 3
    assert store.records.get_build(build.id).status is Status.QUEUED
    assert store.r.hget(keys.repo_heads("proj"), "main") is None  # main's badge is main's own
    assert store.pulls.seen("proj", trusted(3))[0] == "known"
    assert store.pulls.get("proj", 3).builds == [build.id]
    assert store.records.resolve_commit(HEAD_A[:8]) == build.id  # `volt report SHA` finds it by its head
    assert store.pulls.build_of("proj", 3).id == build.id
    assert store.queue.depth() == 1


def test_a_forks_head_waits_for_approval_and_each_new_head_waits_again(store: Store) -> None:
    what, state, build = store.pulls.seen("proj", from_fork(5), QueuedFor.WEBHOOK)
    assert (what, state.state, build) == ("waiting", PullWait.WAITING, None)
    assert store.queue.depth() == 0
    with pytest.raises(BadInput, match="waits for approval"):
        store.pulls.build_of("proj", 5)
    state, build = store.pulls.approve("proj", 5, "carol")
    assert build is not None and state.approved == f"{HEAD_A} by carol" and state.state == PullWait.OPEN
    assert store.pulls.approve("proj", 5, "carol")[1] is None  # approved already
    what, state, build = store.pulls.seen("proj", from_fork(5, HEAD_B), QueuedFor.WEBHOOK)
    assert (what, build) == ("waiting", None)
    with pytest.raises(BadInput, match="unknown pull request #6"):
        store.pulls.approve("proj", 6, "carol")
    with pytest.raises(BadInput, match="unknown repository"):
        store.pulls.approve("nope", 5, "carol")


def test_polling_alone_does_not_trust_but_a_webhook_later_does(store: Store) -> None:
    seen = PullState(8, HEAD_A, "main")  # its ref only: no author, no fork
    assert store.pulls.seen("proj", seen)[0] == "waiting"
    what, state, build = store.pulls.seen("proj", trusted(8), QueuedFor.WEBHOOK)
    assert what == "queued" and build is not None and state.author == "alice"
    assert store.pulls.seen("proj", PullState(8, HEAD_A, "main"))[0] == "known"  # polling keeps what it knew


def test_closing_cancels_its_builds_and_its_refs_are_no_longer_built(store: Store) -> None:
    _, _, build = store.pulls.seen("proj", trusted(4), QueuedFor.WEBHOOK)
    cancelled = store.pulls.close("proj", 4, "pull request #4 was closed")
    assert [b.id for b in cancelled] == [build.id]
    assert store.records.get_build(build.id).status is Status.CANCELLED
    assert store.pulls.seen("proj", trusted(4, HEAD_B))[0] == "closed"
    with pytest.raises(BadInput, match="closed"):
        store.pulls.approve("proj", 4, "carol")
    what, _, again = store.pulls.seen("proj", trusted(4, HEAD_B), QueuedFor.WEBHOOK, reopen=True)
    assert what == "queued" and again is not None
    assert store.pulls.close("proj", 99, "never seen") == []


def test_waiting_pull_requests_are_capped_per_repository(store: Store, monkeypatch) -> None:
    monkeypatch.setattr(keys, "PULLS_WAITING_MAX", 3)
    results = [store.pulls.seen("proj", from_fork(n))[0] for n in range(1, 6)]
    assert results == ["waiting"] * 3 + ["full"] * 2
    assert store.r.hlen(keys.repo_pulls("proj")) == 3
    assert store.pulls.seen("proj", trusted(9))[0] == "queued"  # trusted ones still build


def test_pull_requests_kept_are_capped_closed_ones_dropped_first(store: Store, monkeypatch) -> None:
    monkeypatch.setattr(keys, "PULLS_KEPT", 4)
    for n in range(1, 5):
        store.pulls.seen("proj", trusted(n, f"{n:040x}"))
    assert store.pulls.seen("proj", trusted(5, f"{5:040x}"))[0] == "full"
    store.pulls.close("proj", 2, "closed")
    assert store.pulls.seen("proj", trusted(5, f"{5:040x}"))[0] == "queued"
    assert sorted(s.number for s in store.pulls.all("proj")) == [1, 3, 4, 5]


@pytest.mark.e2e
def test_bad_pull_request_arguments_are_one_line_before_any_connection() -> None:
    cases = {("report", "--pr", "3"): "--pr needs --repo", ("report",): "give a COMMIT, or --pr N",
             ("report", "abcd", "--pr", "3", "--repo", "x"): "not both",
             ("report", "--pr", "0", "--repo", "x"): "not a pull request number",
             ("approve", "proj", "1e3"): "not a pull request number"}
    for args, fragment in cases.items():
        proc = run_volt(*args, "--redis-url", "redis://127.0.0.1:1/0")
        assert proc.returncode == 2 and fragment in proc.stderr and proc.stderr.count("\n") == 1, (args, proc.stderr)
