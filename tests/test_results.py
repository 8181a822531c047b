"""The results store (fakeredis): records, commit lookup by prefix, write-once results with fencing."""

import pytest
import redis
from support import SHA_A, SHA_B, SHA_C, add, outcome

from voltci import keys
from voltci.errors import BadInput
from voltci.models import Status
from voltci.store import Store


def test_resolve_unique_prefix_and_full_sha(fake: redis.Redis) -> None:
    add(fake, "proj", SHA_A)
    add(fake, "proj", SHA_B)
    assert Store(fake).records.resolve_commit("abcd") == keys.build_id("proj", SHA_A)
    assert Store(fake).records.resolve_commit(SHA_B.upper()) == keys.build_id("proj", SHA_B)


@pytest.mark.parametrize("text, message", [("abc", "not a commit"), ("xyz1234", "not a commit"),
                                           ("--all", "not a commit"), ("ffff", "unknown commit")])
def test_resolve_rejects_bad_and_unknown(fake: redis.Redis, text: str, message: str) -> None:
    add(fake, "proj", SHA_A)
    with pytest.raises(BadInput, match=message):
        Store(fake).records.resolve_commit(text)


def test_ambiguous_prefix_names_candidates_and_repo_narrows(fake: redis.Redis) -> None:
    add(fake, "proj", SHA_A)
    add(fake, "proj", SHA_C)
    add(fake, "other", SHA_A)
    with pytest.raises(BadInput, match="ambiguous commit 'abcd'"):
        Store(fake).records.resolve_commit("abcd")
    with pytest.raises(BadInput, match="--repo"):
        Store(fake).records.resolve_commit(SHA_A)
    assert Store(fake).records.resolve_commit(SHA_A, repo="other") == keys.build_id("other", SHA_A)


def test_result_is_written_once_by_the_current_attempt(fake: redis.Redis) -> None:
    build = add(fake, "proj", SHA_A)
    assert Store(fake).builds.start_attempt(build.id, 1, "host.1") is not None
    assert Store(fake).builds.start_attempt(build.id, 2, "host.2") is None  # not the build's attempt
    assert Store(fake).builds.finish(build.id, 1, "host.1", outcome(Status.PASSED))
    assert not Store(fake).builds.finish(build.id, 1, "host.1", outcome(Status.FAILED))
    stored = Store(fake).records.get_build(build.id)
    assert stored.status is Status.PASSED and stored.counts.total == 3
    assert [t.id for t in Store(fake).records.get_tests(build.id)] == ["t.T.test_0", "t.T.test_1", "t.T.test_2"]
    assert Store(fake).builds.start_attempt(build.id, 1, "host.1") is None  # finished builds are not rerun


def test_superseded_attempt_is_fenced(fake: redis.Redis) -> None:
    build = add(fake, "proj", SHA_A)
    Store(fake).builds.start_attempt(build.id, 1, "host.1")
    fake.hset(keys.build(build.id), mapping={"attempt": "2", "status": "queued"})  # re-dispatched
    assert not Store(fake).records.is_current(build.id, 1)
    assert not Store(fake).builds.finish(build.id, 1, "host.1", outcome())
    assert Store(fake).records.get_build(build.id).status is Status.QUEUED
    assert fake.hlen(keys.build_tests(build.id)) == 0


def test_history_newest_first_and_per_repo(fake: redis.Redis) -> None:
    add(fake, "proj", SHA_A, score=1)
    add(fake, "proj", SHA_B, score=2)
    add(fake, "other", SHA_C, score=3)
    fake.hset(keys.repos(), mapping={"proj": '{"url": "/p"}', "other": '{"url": "/o"}'})
    assert [b.commit for b in Store(fake).history.builds()] == [SHA_C, SHA_B, SHA_A]
    assert [b.commit for b in Store(fake).history.builds("proj", limit=1)] == [SHA_B]
    with pytest.raises(BadInput):
        Store(fake).history.builds("bad name!")


def test_keys_are_under_one_prefix_and_refuse_bad_parts() -> None:
    assert keys.build("proj-" + SHA_A).startswith("volt:")
    with pytest.raises(ValueError):
        keys.repo_history("a:b")
    with pytest.raises(ValueError):
        keys.build_id("bad name", SHA_A)
    assert keys.split_commit_member(keys.commit_member(SHA_A, "proj")) == (SHA_A, "proj")
