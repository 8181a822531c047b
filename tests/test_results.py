"""The results store (fakeredis): records, commit lookup by prefix, write-once results with fencing."""

import pytest
import redis

from voltci import keys, results
from voltci.errors import BadInput
from voltci.models import Build, Counts, Outcome, RunOutcome, Status, TestResult

SHA_A = "abcd" + "1" * 36
SHA_B = "abce" + "2" * 36
SHA_C = "abcd" + "3" * 36


def add(conn: redis.Redis, repo: str, sha: str, score: float = 1.0) -> Build:
    build = Build(id=keys.build_id(repo, sha), repo=repo, url="/r", commit=sha, branch="main", subject="s")
    with conn.pipeline() as pipe:
        results.add_build(build, pipe, score)
        pipe.execute()
    return build


def outcome(status: Status = Status.PASSED) -> RunOutcome:
    tests = [TestResult(f"t.T.test_{i}", Outcome.PASSED, 0.1, order=i) for i in range(3)]
    return RunOutcome(status, tests, Counts(total=3, passed=3))


def test_resolve_unique_prefix_and_full_sha(fake: redis.Redis) -> None:
    add(fake, "proj", SHA_A)
    add(fake, "proj", SHA_B)
    assert results.resolve_commit(fake, "abcd") == keys.build_id("proj", SHA_A)
    assert results.resolve_commit(fake, SHA_B.upper()) == keys.build_id("proj", SHA_B)


@pytest.mark.parametrize("text, message", [("abc", "not a commit"), ("xyz1234", "not a commit"),
                                           ("--all", "not a commit"), ("ffff", "unknown commit")])
def test_resolve_rejects_bad_and_unknown(fake: redis.Redis, text: str, message: str) -> None:
    add(fake, "proj", SHA_A)
    with pytest.raises(BadInput, match=message):
        results.resolve_commit(fake, text)


def test_ambiguous_prefix_names_candidates_and_repo_narrows(fake: redis.Redis) -> None:
    add(fake, "proj", SHA_A)
    add(fake, "proj", SHA_C)
    add(fake, "other", SHA_A)
    with pytest.raises(BadInput, match="ambiguous commit 'abcd'"):
        results.resolve_commit(fake, "abcd")
    with pytest.raises(BadInput, match="--repo"):
        results.resolve_commit(fake, SHA_A)
    assert results.resolve_commit(fake, SHA_A, repo="other") == keys.build_id("other", SHA_A)


def test_result_is_written_once_by_the_current_attempt(fake: redis.Redis) -> None:
    build = add(fake, "proj", SHA_A)
    assert results.start_attempt(fake, build.id, 1, "host.1") is not None
    assert results.start_attempt(fake, build.id, 2, "host.2") is None  # not the build's attempt
    assert results.finish_build(fake, build.id, 1, "host.1", outcome(Status.PASSED))
    assert not results.finish_build(fake, build.id, 1, "host.1", outcome(Status.FAILED))
    stored = results.get_build(fake, build.id)
    assert stored.status is Status.PASSED and stored.counts.total == 3
    assert [t.id for t in results.get_tests(fake, build.id)] == ["t.T.test_0", "t.T.test_1", "t.T.test_2"]
    assert results.start_attempt(fake, build.id, 1, "host.1") is None  # finished builds are not rerun


def test_superseded_attempt_is_fenced(fake: redis.Redis) -> None:
    build = add(fake, "proj", SHA_A)
    results.start_attempt(fake, build.id, 1, "host.1")
    fake.hset(keys.build(build.id), mapping={"attempt": "2", "status": "queued"})  # re-dispatched
    assert not results.is_current(fake, build.id, 1)
    assert not results.finish_build(fake, build.id, 1, "host.1", outcome())
    assert results.get_build(fake, build.id).status is Status.QUEUED
    assert fake.hlen(keys.build_tests(build.id)) == 0


def test_history_newest_first_and_per_repo(fake: redis.Redis) -> None:
    add(fake, "proj", SHA_A, score=1)
    add(fake, "proj", SHA_B, score=2)
    add(fake, "other", SHA_C, score=3)
    fake.hset(keys.repos(), mapping={"proj": '{"url": "/p"}', "other": '{"url": "/o"}'})
    assert [b.commit for b in results.history(fake)] == [SHA_C, SHA_B, SHA_A]
    assert [b.commit for b in results.history(fake, "proj", limit=1)] == [SHA_B]
    with pytest.raises(BadInput):
        results.history(fake, "bad name!")


def test_keys_are_under_one_prefix_and_refuse_bad_parts() -> None:
    assert keys.build("proj-" + SHA_A).startswith("volt:")
    with pytest.raises(ValueError):
        keys.repo_history("a:b")
    with pytest.raises(ValueError):
        keys.build_id("bad name", SHA_A)
    assert keys.split_commit_member(keys.commit_member(SHA_A, "proj")) == (SHA_A, "proj")
