"""Commit statuses, the pure parts: what a build's record warrants (commitstatus.py), each forge's
request (forgeapi.py), what an answer means, the first failure read from a growing results file
(runner/failures.py), and the store's bounded, coalescing marks (fakeredis, for the logic only)."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from email.message import Message

import fakeredis
import pytest

from voltci import keys
from voltci.commitstatus import (
    DESCRIPTION_MAX,
    LEG_CONTEXTS_MAX,
    CommitStatus,
    State,
    clean,
    context_of,
    describe,
    statuses_of,
)
from voltci.config import Settings
from voltci.forge import ForgeLink
from voltci.forgeapi import NoRequest, judge, request, wait_asked
from voltci.links import build_page_url
from voltci.models import Build, Counts, PullRequest, Status
from voltci.runner.failures import LINE_MAX, FailureScan
from voltci.store import Store
from voltci.store.statuses import mark

SHA = "ab" * 20
LINK = ForgeLink("github", "https://api.github.com", "octo/proj")


def build(**fields: object) -> Build:
    return replace(Build(id=keys.build_id("proj", SHA), repo="proj", url="/r", commit=SHA, branch="main"),
                   **fields)  # type: ignore[arg-type]


def one(b: Build, **kw: object) -> CommitStatus:
    (status,) = statuses_of(b, [], "https://ci/build/proj/x", **kw)  # type: ignore[arg-type]
    return status


# ------------------------------------------------------------ what a build warrants


def test_a_build_says_its_place_its_progress_its_first_failure_and_its_end() -> None:
    assert one(build(), place=3).description == "queued: 3rd in line"
    assert one(build(), place=3).state is State.PENDING
    running = one(build(status=Status.RUNNING, progress=120), expected=929)
    assert (running.state, running.description, running.progress) == (State.RUNNING, "running: 120/929", True)
    failing = one(build(status=Status.RUNNING, progress=121, failing=1, first_failure="tests/test_x.py::test_y"))
    assert failing.description == "1 failed so far: tests/test_x.py::test_y"
    assert failing.news_over(running.told())  # a first failure goes at once
    assert not one(build(status=Status.RUNNING, progress=122, failing=2,
                         first_failure="tests/test_x.py::test_y")).news_over(failing.told())
    ended = one(build(status=Status.FAILED, duration_s=72, first_failure="tests/test_x.py::test_y",
                      counts=Counts(total=929, passed=927, failed=2)))
    assert (ended.state, ended.is_final) == (State.FAILURE, True)
    assert ended.description == "failed: 2 failed, 927 passed in 1m 12s; first: tests/test_x.py::test_y"
    assert one(build(status=Status.PASSED, counts=Counts(total=3, passed=3))).state is State.SUCCESS
    assert one(build(status=Status.TIMEOUT, reason="took over 30 min")).description == "timeout: took over 30 min"


def test_contexts_are_volt_a_pull_requests_own_and_one_per_leg_within_bounds() -> None:
    assert context_of(build()) == "volt"
    assert context_of(build(pull_request=PullRequest(7, SHA, "cd" * 20, "main"))) == "volt/pr"
    assert context_of(build(), "py3.12-DJANGO=5.1") == "volt/py3.12-DJANGO=5.1"
    assert context_of(build(), "py3.12\r\nX-Evil: 1/../../x") == "volt/py3.12_X-Evil_1_.._.._x"
    matrix = build(status=Status.RUNNING, legs=2)
    legs = [build(id=keys.leg_id(matrix.id, 1, n), parent=matrix.id, leg=f"py3.1{n}", status=Status.RUNNING)
            for n in range(2)]
    legs[1] = replace(legs[1], failing=1, first_failure="t::x")
    found = statuses_of(matrix, legs, None)
    assert [s.context for s in found] == ["volt", "volt/py3.10", "volt/py3.11"]
    assert found[0].description == "1 failed so far (py3.11): t::x"
    many = [replace(legs[0], id=keys.leg_id(matrix.id, 1, n), leg=f"l{n}") for n in range(LEG_CONTEXTS_MAX + 1)]
    assert [s.context for s in statuses_of(replace(matrix, legs=len(many)), many, None)] == ["volt"]


@pytest.mark.parametrize("name", [
    "tests/test_x.py::test_" + "y" * 5000,
    "t::\x1b[31mred\x1b[0m\r\nLocation: https://evil.example/\x00",
    "t::\u202eevil\u202c::\u200b" + "é" * 300,
    "t::" + "\U0001F600" * 200,
])
def test_a_hostile_test_name_becomes_a_safe_description_of_at_most_140_characters(name: str) -> None:
    status = one(build(status=Status.RUNNING, failing=1, first_failure=name))
    text = status.description
    assert len(text) <= DESCRIPTION_MAX and text.startswith("1 failed so far: t")
    assert not any(ch in text for ch in "\x1b\r\n\x00\u202e\u202c\u200b")
    assert clean(text) == text


def test_describe_keeps_the_head_and_tail_of_a_long_name() -> None:
    text = describe("1 failed so far: ", "tests/" + "a" * 300 + "::test_the_end")
    assert len(text) == DESCRIPTION_MAX and text.endswith("::test_the_end") and "…" in text


def test_the_build_page_link_follows_public_url() -> None:
    assert build_page_url(Settings(), build()) is None
    assert build_page_url(Settings(public_url="https://ci.example.org/"), build()) == \
        f"https://ci.example.org/build/proj/{SHA}"


# ------------------------------------------------------------ each forge's request


def test_each_forge_gets_its_own_path_header_and_state_names(monkeypatch: pytest.MonkeyPatch) -> None:
    status = CommitStatus("volt", State.RUNNING, "running: 1/2", "https://ci/b")
    made = request(LINK, SHA, status, "tok")
    assert made.url == f"https://api.github.com/repos/octo/proj/statuses/{SHA}"
    assert made.headers["Authorization"] == "Bearer tok"
    assert json.loads(made.body) == {"state": "pending", "description": "running: 1/2", "target_url": "https://ci/b",
                                     "context": "volt"}
    gitea = request(ForgeLink("gitea", "https://git.example.org", "team/app"), SHA, status, "tok")
    assert gitea.url == f"https://git.example.org/api/v1/repos/team/app/statuses/{SHA}"
    assert gitea.headers["Authorization"] == "token tok"
    gitlab = request(ForgeLink("gitlab", "https://gitlab.example.org", "group/sub/app"), SHA,
                     replace(status, state=State.FAILURE), "tok")
    assert gitlab.url == f"https://gitlab.example.org/api/v4/projects/group%2Fsub%2Fapp/statuses/{SHA}"
    assert gitlab.headers["PRIVATE-TOKEN"] == "tok" and "Authorization" not in gitlab.headers
    assert json.loads(gitlab.body)["state"] == "failed" and json.loads(gitlab.body)["name"] == "volt"


@pytest.mark.parametrize(("sha", "project", "token"), [
    ("../../admin", "octo/proj", "tok"),
    (SHA + "\r\nX: y", "octo/proj", "tok"),
    (SHA, "octo/../other", "tok"),
    (SHA, "octo/proj", "s3cr3t\r\nX-Injected: 1"),
    (SHA, "octo/proj", None),
])
def test_nothing_a_build_writes_reaches_the_url_or_the_headers(sha: str, project: str, token: str | None) -> None:
    status = CommitStatus("volt", State.PENDING, "queued", None)
    with pytest.raises(NoRequest) as caught:
        request(replace(LINK, project=project), sha, status, token)
    assert "s3cr3t" not in str(caught.value)


def _headers(**values: str) -> Message:
    message = Message()
    for name, value in values.items():
        message[name.replace("_", "-")] = value
    return message


def test_answers_mean_sent_retry_or_refused() -> None:
    assert judge(201, _headers(), b'{"id": 1}').outcome == "sent"
    garbage = judge(200, _headers(), b"<html>\xff")
    assert garbage.outcome == "retry" and "garbage" in garbage.detail
    assert judge(502, _headers(), b"bad gateway").outcome == "retry"
    limited = judge(429, _headers(Retry_After="7"), b"{}")
    assert (limited.outcome, limited.wait_s) == ("retry", 7.0)
    github = judge(403, _headers(X_RateLimit_Remaining="0", X_RateLimit_Reset="1030"), b'{"message": "API rate '
                   b'limit exceeded"}', now=1000.0)
    assert (github.outcome, github.wait_s) == ("retry", 30.0)
    assert judge(401, _headers(), b'{"message": "Bad credentials"}').outcome == "refused"
    assert judge(404, _headers(), b'{"message": "Not Found"}').outcome == "refused"
    assert judge(403, _headers(), b'{"message": "Resource not accessible by integration"}').outcome == "refused"
    assert judge(400, _headers(), b'{"message": "Cannot transition status via :run from :running"}').outcome == "sent"
    assert wait_asked(_headers(Retry_After="99999")) == 3600.0
    assert wait_asked(_headers(Retry_After="Wed, 21 Oct 2015 07:28:00 GMT")) == 1.0  # in the past: soon


# ------------------------------------------------------------ the first failure, as the results file grows


def test_the_first_failure_is_found_across_chunks_and_long_lines_are_skipped() -> None:
    scan = FailureScan()
    lines = [json.dumps({"id": "t::a", "outcome": "passed"}), json.dumps({"id": "t::b", "outcome": "failed"}),
             json.dumps({"id": "t::c", "outcome": "error"})]
    data = ("\n".join(lines) + "\n").encode()
    for start in range(0, len(data), 7):
        scan.feed(data[start:start + 7])
    assert (scan.failing, scan.first) == (2, "t::b")
    scan = FailureScan()
    scan.feed(b'{"id": "' + b"x" * LINE_MAX + b'", "outcome": "failed"}\n')
    scan.feed(b'{"id": 5, "outcome": "failed"}\n{"outcome": "failed"}\nnot json "failed"\n')
    assert (scan.failing, scan.first) == (0, "")
    scan.feed(b'{"id": "' + b"y" * 5000 + b'", "outcome": "failed"}\n')
    assert scan.failing == 1 and len(scan.first) == 1024


# ------------------------------------------------------------ the store's marks (logic only)


def test_a_build_waits_once_news_brings_it_forward_and_progress_keeps_its_place() -> None:
    store = Store(fakeredis.FakeRedis(decode_responses=True))
    with store.r.pipeline() as pipe:
        mark(pipe, "proj-a", urgent=False, now=100.0)
        mark(pipe, "proj-a", urgent=False, now=50.0)  # waits already: keeps its place
        mark(pipe, keys.leg_id("proj-b", 1, 0), now=120.0)  # a leg's news is its build's
        pipe.execute()
    assert store.r.zrange(keys.statuses_due(), 0, -1, withscores=True) == [("proj-a", 100.0), ("proj-b", 120.0)]
    assert store.statuses.take(110.0) == ["proj-a"]
    assert store.statuses.waiting() == 2
    store.statuses.later("proj-a", 200.0)
    with store.r.pipeline() as pipe:
        mark(pipe, "proj-a", now=130.0)  # news: sooner than planned
        pipe.execute()
    assert store.statuses.next_due() == 120.0 and store.r.zscore(keys.statuses_due(), "proj-a") == 130.0
    assert store.statuses.take(1000.0) == ["proj-b", "proj-a"]
    assert store.statuses.recover(now=5.0) == 2 and store.statuses.take(5.0) == ["proj-a", "proj-b"]
    store.statuses.done("proj-a")
    store.statuses.done("proj-b")
    assert store.statuses.waiting() == 0


def test_the_token_s_variable_is_one_the_sandbox_never_hands_a_build() -> None:
    from voltci.errors import BadInput
    from voltci.forge import forge_link
    from voltci.runner.sandbox import is_credential

    url = "https://github.com/octo/proj.git"
    with pytest.raises(BadInput, match="forge_token_env' must name a variable builds never get"):
        forge_link({"forge": "github", "forge_token_env": "GH_PAT"}, url, "[[repos]] proj")
    for name in ("VOLT_FORGE_TOKEN", "GITLAB_CI_TOKEN", "FORGE_SECRET"):
        link = forge_link({"forge": "github", "forge_token_env": name}, url, "[[repos]] proj")
        assert link is not None and link.token_env == name
        assert name.startswith("VOLT_") or is_credential(name)


def test_a_long_build_posts_far_fewer_statuses_than_github_keeps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Progress every simulated second on a fake clock (the sender's limits scaled down tenfold): progress is
    rate-limited, slower after a burst, capped; the first failure and the end go at once, past the cap."""
    from voltci import statuses
    from voltci.forgeapi import Answer
    from voltci.models import RunOutcome

    monkeypatch.setattr(statuses, "PROGRESS_BURST", 6)
    monkeypatch.setattr(statuses, "PROGRESS_MAX", 20)
    monkeypatch.setattr(statuses, "LATE_PROGRESS_EVERY_S", 20.0)
    now = [time.time() + 1.0]  # after the marks the store makes by the real clock
    posted: list[tuple[float, CommitStatus]] = []

    def post(link: ForgeLink, sha: str, status: CommitStatus) -> Answer:
        posted.append((now[0], status))
        return Answer("sent", 201, "answered 201")

    store = Store(fakeredis.FakeRedis(decode_responses=True))
    store.repos.register("proj", "/r", ["main"], forge=LINK.to_dict())
    sender = statuses.StatusSender(Settings(), store, lambda: True, post=post, clock=lambda: now[0])
    b = build()
    store.builds.add(b, 1.0)
    store.builds.start_attempt(b.id, 1, "r1")
    for second in range(600):
        now[0] += 1.0
        failed = second == 590
        store.builds.set_progress(b.id, second + 1, int(failed), "t::first" if failed else "")
        with store.r.pipeline() as pipe:  # the mark, on the fake clock
            mark(pipe, b.id, urgent=failed, now=now[0])
            pipe.execute()
        sender.step()
        if failed:
            assert posted[-1][1].description == "1 failed so far: t::first"  # at once, past the cap
    running = [at for at, s in posted if s.state is State.RUNNING and not s.key]
    gaps = [later - earlier for earlier, later in zip(running, running[1:], strict=False)]
    assert len(running) == 20  # capped
    assert min(gaps[:5]) >= statuses.PROGRESS_EVERY_S and min(gaps[6:]) >= 20.0
    assert store.builds.finish(b.id, 1, "r1", RunOutcome(Status.FAILED, [], Counts(total=1, failed=1)))
    sender.step()
    assert posted[-1][1].state is State.FAILURE and len(posted) == 20 + 1 + 1  # progress, the failure, the end
