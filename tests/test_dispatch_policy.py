"""The dispatch policy as pure functions: culprit finding's order inside a push (bisect.py), and the
order across tiers, priorities and repositories (dispatch.py)."""

from __future__ import annotations

import math

import pytest

from voltci.bisect import Known, halving, hunt
from voltci.dispatch import FairShare, Placed, Priority, Tier, Waiting, parse_priority, plan
from voltci.errors import BadInput

G, B, P, R, V = Known.GOOD, Known.BAD, Known.PENDING, Known.BUSY, Known.VOID


def builds_until_culprit(n: int, broken: int, base: Known = G) -> tuple[int, int | None]:
    """Build a push of n commits whose `broken`-th breaks a test, one build at a time as the dispatcher
    would (head first, then the search's next midpoint, then backlog): builds until the culprit is known."""
    states = [P] * n
    built = 0
    found = hunt(base, states)
    states[n - 1] = G if n < broken else B  # the head goes first
    built += 1
    for _ in range(n):
        found = hunt(base, states)
        if found.culprit is not None:
            return built, found.culprit
        pick = found.next if found.next is not None else (found.order[0] if found.order else None)
        if pick is None:
            return built, None
        states[pick - 1] = G if pick < broken else B
        built += 1
    return built, hunt(base, states).culprit


def test_halving_visits_every_commit_once_midpoints_first() -> None:
    assert list(halving(0, 8)) == [4, 2, 6, 1, 3, 5, 7]
    assert sorted(halving(0, 16)) == list(range(1, 16))
    assert list(halving(3, 4)) == []


def test_the_issues_push_names_its_culprit_within_log2_n_plus_2_builds() -> None:
    built, culprit = builds_until_culprit(15, 12)
    assert culprit == 12 and built <= math.ceil(math.log2(15)) + 2
    assert built == 5  # head, 7, 11, 13, 12


@pytest.mark.parametrize("n", [2, 3, 5, 8, 15, 16, 33, 100])
def test_every_culprit_position_is_found_within_the_bound(n: int) -> None:
    for broken in range(1, n + 1):
        built, culprit = builds_until_culprit(n, broken)
        assert culprit == broken, (n, broken)
        assert built <= math.ceil(math.log2(n)) + 2, (n, broken, built)


def test_the_search_waits_for_a_running_midpoint_and_speculates_below_it() -> None:
    # head bad, midpoint 4 running: the next pick halves the lower part (if 4 fails, that is where to look)
    found = hunt(G, [P, P, P, R, P, P, P, B])
    assert found.searching and found.next == 2 and found.range == (0, 8)
    assert found.order[:3] == [2, 6, 1]


def test_a_culprit_needs_a_known_good_parent() -> None:
    assert hunt(G, [B]).culprit == 1
    assert hunt(V, [B]).culprit is None  # the base was never built: its parent is not known good
    assert hunt(R, [B]).culprit is None and not hunt(R, [B]).settled  # … or is still running
    assert hunt(G, [G, V, B]).culprit is None  # a skipped commit between: it cannot be known
    assert hunt(G, [G, B, B]).culprit == 2


def test_a_branch_broken_before_the_push_is_not_searched() -> None:
    found = hunt(B, [P, P, P, B])
    assert not found.searching and found.culprit is None
    assert sorted(found.order) == [1, 2, 3]  # still built, as backlog
    fixed_then_broken = hunt(B, [P, G, P, P, B])
    assert fixed_then_broken.range == (2, 5) and fixed_then_broken.next == 3


def test_a_passing_head_leaves_the_rest_as_backlog_in_halving_order() -> None:
    found = hunt(G, [P, P, P, P, P, P, G])
    assert not found.searching and found.order == [4, 2, 6, 1, 3, 5]


def test_settled_when_nothing_waits_or_runs() -> None:
    assert hunt(G, [G, B, V]).settled
    assert not hunt(P, [G, G]).settled


def job(job_id: str, repo: str, tier: Tier, since: float = 0.0, order: int = 0) -> Waiting:
    return Waiting(job_id, repo, tier, f"{tier.name.lower()}", (since, order, job_id))


def ids(placed: list[Placed]) -> list[str]:
    return [p.job_id for p in placed]


def test_tiers_go_strictly_first_and_the_front_keeps_its_order() -> None:
    waiting = [job("a-backlog", "a", Tier.BACKLOG), job("b-head", "b", Tier.HEAD),
               job("lost-2", "c", Tier.FIRST), job("lost-1", "a", Tier.FIRST), job("wanted", "a", Tier.WANTED)]
    assert ids(plan(waiting, {}, {}, 3600)) == ["lost-2", "lost-1", "wanted", "b-head", "a-backlog"]


def test_a_newcomer_goes_before_a_busy_repositorys_backlog() -> None:
    """The issue's case: A has a backlog of 12 one-second builds, then B gets one commit."""
    waiting = [job(f"a{n}", "a", Tier.BACKLOG, since=10, order=n) for n in range(12)]
    waiting.append(job("b1", "b", Tier.HEAD, since=20))
    shares = {"a": FairShare(used_s=1.0, typical_s=1.0)}
    assert ids(plan(waiting, shares, {}, 3600))[0] == "b1"
    waiting[-1] = job("b1", "b", Tier.BACKLOG, since=20)  # even as backlog, B has had no runner time
    order = ids(plan(waiting, shares, {}, 3600))
    assert order.index("b1") <= 1


def test_fair_share_is_runner_time_not_turns() -> None:
    """A repository of long builds gets fewer turns than one of short builds, for the same time."""
    waiting = [job(f"long{n}", "long", Tier.BACKLOG, order=n) for n in range(5)]
    waiting += [job(f"short{n}", "short", Tier.BACKLOG, order=n) for n in range(20)]
    shares = {"long": FairShare(0.0, 100.0), "short": FairShare(0.0, 10.0)}
    order = ids(plan(waiting, shares, {}, 3600))
    first_12 = order[:12]
    assert sum(j.startswith("long") for j in first_12) == 2 and sum(j.startswith("short") for j in first_12) == 10


def test_equal_shares_take_turns_oldest_waiting_first() -> None:
    waiting = [job(f"a{n}", "a", Tier.BACKLOG, since=1, order=n) for n in range(3)]
    waiting += [job(f"b{n}", "b", Tier.BACKLOG, since=2, order=n) for n in range(3)]
    assert ids(plan(waiting, {}, {}, 3600)) == ["a0", "b0", "a1", "b1", "a2", "b2"]


def test_priorities_order_repositories_inside_a_tier() -> None:
    waiting = [job("low-head", "low", Tier.HEAD), job("normal-head", "n", Tier.HEAD),
               job("high-backlog", "high", Tier.BACKLOG), job("high-head", "high", Tier.HEAD)]
    priorities = {"low": Priority.LOW, "high": Priority.HIGH}
    placed = plan(waiting, {}, priorities, 3600)
    assert ids(placed) == ["high-head", "normal-head", "low-head", "high-backlog"]
    assert "high priority" in placed[0].why


def test_why_names_the_fair_share_when_repositories_compete() -> None:
    waiting = [job("a1", "a", Tier.HEAD), job("b1", "b", Tier.HEAD)]
    placed = plan(waiting, {"a": FairShare(120.0, 60.0)}, {}, 3600)
    assert ids(placed) == ["b1", "a1"]
    assert "fair share: a has had 120 s of runner time in the last 60 min" in placed[1].why
    assert "fair share: b has had 0.0 s" in placed[0].why


@pytest.mark.parametrize("word", ["urgent", "", "HIGH", 3, None])
def test_an_unknown_priority_is_one_line_of_bad_input(word: object) -> None:
    with pytest.raises(BadInput, match="unknown priority .*use high, normal or low"):
        parse_priority(word)
    assert parse_priority("low") is Priority.LOW
