"""The usage part (store/usage.py), on a real Redis (MEMORY USAGE): what Redis holds against its limit,
and what a repository's newest finished builds cost, none when nothing has finished."""

from __future__ import annotations

from support import SHA_A, SHA_B, outcome

from voltci import keys
from voltci.models import Build, Status
from voltci.store import RepoUsage, Store


def test_a_repositorys_builds_and_their_bytes(conn) -> None:
    store = Store(conn)
    memory = store.usage.memory()
    assert memory.used > 0 and not memory.full
    queued, ended = (Build(id=keys.build_id("proj", s), repo="proj", url="/r", commit=s, branch="main")
                     for s in (SHA_A, SHA_B))
    store.builds.submit(queued)
    assert store.usage.repo_usage("proj") == RepoUsage("proj", 1, None)  # nothing finished: nothing to measure
    store.builds.submit(ended)
    store.builds.start_attempt(ended.id, 1, "r1")
    store.builds.finish(ended.id, 1, "r1", outcome(Status.PASSED))
    usage = store.usage.repo_usage("proj")
    assert (usage.repo, usage.builds) == ("proj", 2) and usage.bytes_per_build is not None
    assert usage.bytes_per_build >= len(conn.hget(keys.build(ended.id), "commit"))
