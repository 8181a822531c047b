"""The repos part (store/repos.py), on fakeredis: a repository's name is its URL's for good, an
unchanged registration writes nothing (an observer restarting into a full Redis still starts), the
observer's pointers per branch, and `volt notify` only for a repository some observer watches."""

from __future__ import annotations

import fakeredis
import pytest
from support import wait_until

from voltci.errors import BadInput
from voltci.store.repos import Repos


@pytest.fixture
def repos() -> Repos:
    return Repos(fakeredis.FakeRedis(decode_responses=True))


def test_a_name_keeps_its_url_and_an_unchanged_registration_writes_nothing(repos: Repos, monkeypatch) -> None:
    repos.register("proj", "/src/proj", ["main"], "high")
    with pytest.raises(BadInput, match="'proj' is already used for /src/proj; choose another with --name"):
        repos.register("proj", "/src/other", ["main"])

    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("an unchanged registration wrote")
    monkeypatch.setattr(repos.r, "hset", refused)
    repos.register("proj", "/src/proj", ["main"], "high")
    assert repos.known() == {"proj": {"url": "/src/proj", "branches": ["main"], "priority": "high"}}
    assert repos.is_known("proj") and not repos.is_known("other") and not repos.is_known("not a/name")


def test_pointers_per_branch(repos: Repos) -> None:
    assert repos.pointers("proj", []) == {}
    repos.set_pointer("proj", "main", "a" * 40)
    repos.set_pointer("proj", "dev", "b" * 40)
    repos.drop_pointer("proj", "dev")
    assert repos.pointers("proj", ["main", "dev"]) == {"main": "a" * 40, "dev": None}


def test_notify_reaches_the_observers_of_a_watched_repository_only(repos: Repos) -> None:
    with pytest.raises(BadInput, match="unknown repository 'proj'"):
        repos.notify("proj")
    repos.register("proj", "/src/proj", ["main"])
    heard = repos.listen_notify()
    try:
        assert repos.notify("proj", "refs/heads/main", via="webhook") == 1
        message = wait_until(lambda: heard.get(timeout=0.5), "the message", timeout=10)
        assert message == ("notify", {"repo": "proj", "ref": "refs/heads/main", "via": "webhook"})
    finally:
        heard.close()
