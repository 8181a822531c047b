"""The observer against real git repositories and a real Redis: every commit, oldest first, once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
import redis

from voltci import jobqueue, keys
from voltci.config import Settings
from voltci.errors import BadInput
from voltci.observer import RepoWatch, repo_name_for
from voltci.store import Store


def queued_commits(rq_conn: redis.Redis, settings: Settings) -> list[str]:
    """Commits of the builds in the rq queue, in queue order."""
    jobs = jobqueue.volt_queue(rq_conn, settings.queue).get_jobs()
    return [job.args[0].rsplit("-", 1)[1] for job in jobs]


def watch(rq_conn, settings, repo, **kwargs) -> RepoWatch:
    w = RepoWatch(Store(rq_conn, settings), str(repo.path), **kwargs)
    w.validate()
    return w


def test_first_pass_enqueues_only_the_head(rq_conn, settings, make_repo) -> None:
    repo = make_repo()
    repo.commit({"a.txt": "1"}, "one")
    head = repo.commit({"a.txt": "2"}, "two")
    built = watch(rq_conn, settings, repo).poll()
    assert [b.commit for b in built] == [head]
    assert queued_commits(rq_conn, settings) == [head]
    assert built[0].subject == "two" and built[0].author.startswith("Test Author")


def test_several_commits_between_polls_are_all_enqueued_head_first(rq_conn, settings, make_repo) -> None:
    """Every new commit is queued: the head first, the rest after older backlog, halving the push."""
    repo = make_repo()
    repo.commit({"a.txt": "0"}, "zero")
    w = watch(rq_conn, settings, repo)
    first = [b.commit for b in w.poll()]
    new = [repo.commit({"a.txt": str(i)}, f"c{i}") for i in range(1, 5)]
    assert [b.commit for b in w.poll()] == new
    assert w.poll() == []
    assert queued_commits(rq_conn, settings) == [new[3], *first, new[1], new[0], new[2]]


def test_a_subject_that_looks_like_another_commit_is_one_subject(rq_conn, settings, make_repo) -> None:
    """A subject holding a carriage return, a Unicode line separator and a sha is kept whole, and never
    read as a commit of its own (only the commits git lists are queued)."""
    repo = make_repo()
    first = repo.commit({"a.txt": "0"}, "zero")
    w = watch(rq_conn, settings, repo)
    w.poll()
    subject = f"one\r\u2028{first}\x1c\x85 and more"
    new = [repo.commit({"a.txt": "1"}, subject), repo.commit({"a.txt": "2"}, "two")]
    built = w.poll()
    assert [b.commit for b in built] == new
    assert built[0].subject == subject


def test_under_fifo_dispatch_commits_are_queued_oldest_first(rq_conn, settings, make_repo) -> None:
    settings = replace(settings, dispatch="fifo")
    repo = make_repo()
    repo.commit({"a.txt": "0"}, "zero")
    w = watch(rq_conn, settings, repo)
    first = [b.commit for b in w.poll()]
    new = [repo.commit({"a.txt": str(i)}, f"c{i}") for i in range(1, 5)]
    assert [b.commit for b in w.poll()] == new
    assert queued_commits(rq_conn, settings) == first + new


def test_two_branches_each_followed(rq_conn, settings, make_repo) -> None:
    repo = make_repo()
    base = repo.commit({"a.txt": "0"}, "base")
    repo.checkout("feature", create=True)
    f1 = repo.commit({"f.txt": "1"}, "feature one")
    repo.checkout("main")
    w = watch(rq_conn, settings, repo, branches=["main", "feature"])
    assert sorted(b.commit for b in w.poll()) == sorted([base, f1])
    m1 = repo.commit({"a.txt": "1"}, "main one")
    repo.checkout("feature")
    f2 = repo.commit({"f.txt": "2"}, "feature two")
    f3 = repo.commit({"f.txt": "3"}, "feature three")
    built = w.poll()
    assert [(b.branch, b.commit) for b in built] == [("main", m1), ("feature", f2), ("feature", f3)]


def test_restart_and_second_observer_never_build_twice(rq_conn, conn, settings, make_repo) -> None:
    repo = make_repo()
    repo.commit({"a.txt": "0"}, "zero")
    watch(rq_conn, settings, repo).poll()
    new = [repo.commit({"a.txt": str(i)}, f"c{i}") for i in range(1, 4)]
    # Two observers at once, then a restarted one: the commits are built once between them.
    a, b = watch(rq_conn, settings, repo), watch(rq_conn, settings, repo)
    with ThreadPoolExecutor(2) as pool:
        created = [build.commit for found in pool.map(lambda w: w.poll(), [a, b]) for build in found]
    assert sorted(created) == sorted(new)
    assert watch(rq_conn, settings, repo).poll() == []
    assert len(queued_commits(rq_conn, settings)) == 4
    assert conn.hget(keys.pointer(a.name), "main") == new[-1]


def test_pointer_lost_after_enqueue_builds_nothing_twice(rq_conn, conn, settings, make_repo) -> None:
    """An observer that died after enqueueing but before its pointer moved re-finds the commits, and
    the build ids (repo + commit) stop them from being built again."""
    repo = make_repo()
    repo.commit({"a.txt": "0"}, "zero")
    w = watch(rq_conn, settings, repo)
    w.poll()
    pointer = conn.hget(keys.pointer(w.name), "main")
    new = [repo.commit({"a.txt": str(i)}, f"c{i}") for i in range(1, 3)]
    w.poll()
    conn.hset(keys.pointer(w.name), "main", pointer)  # as if the pointer write had been lost
    assert w.poll() == []
    queued = queued_commits(rq_conn, settings)
    assert len(queued) == 3 and set(new) <= set(queued)  # each once
    assert conn.hget(keys.pointer(w.name), "main") == new[-1]


def test_builds_are_recorded_and_resolvable(rq_conn, conn, settings, make_repo) -> None:
    repo = make_repo()
    head = repo.commit({"a.txt": "0"}, "zero")
    w = watch(rq_conn, settings, repo)
    w.poll()
    build = Store(conn).records.get_build(Store(conn).records.resolve_commit(head[:7]))
    assert build.status.value == "queued" and build.url == str(repo.path) and build.branch == "main"
    assert Store(conn).repos.known()[w.name]["url"] == str(repo.path)


def test_bad_repositories_and_branches_are_clear_errors(rq_conn, settings, make_repo, tmp_path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(BadInput, match="not a git repository"):
        watch(rq_conn, settings, type("R", (), {"path": tmp_path / "plain"})())
    with pytest.raises(BadInput, match="does not exist"):
        watch(rq_conn, settings, type("R", (), {"path": tmp_path / "absent"})())
    repo = make_repo()
    repo.commit({"a.txt": "0"}, "zero")
    with pytest.raises(BadInput, match="unknown branch 'nope'"):
        watch(rq_conn, settings, repo, branches=["nope"])


def test_one_name_cannot_mean_two_repositories(rq_conn, settings, make_repo) -> None:
    one, two = make_repo("same"), make_repo("same")
    one.commit({"a": "1"}, "a")
    two.commit({"a": "1"}, "a")
    watch(rq_conn, settings, one, name="same")
    with pytest.raises(BadInput, match="already used"):
        watch(rq_conn, settings, two, name="same")


def test_repo_names_from_paths_and_urls() -> None:
    assert repo_name_for("/src/my.project.git") == "my-project"
    assert repo_name_for("git@github.com:org/tool.git") == "tool"
    assert repo_name_for("https://example.org/a/b/") == "b"


def test_a_poll_with_nothing_new_does_not_fetch(rq_conn, settings, make_repo, monkeypatch) -> None:
    repo = make_repo()
    repo.commit({"a.txt": "0"}, "zero")
    watch = RepoWatch(Store(rq_conn, settings), str(repo.path))
    watch.validate()
    assert len(watch.poll()) == 1
    fetches = []
    real = watch.mirror.update
    monkeypatch.setattr(watch.mirror, "update", lambda: fetches.append(1) or real())
    assert watch.poll() == [] and fetches == []  # ls-remote said nothing moved
    sha = repo.commit({"a.txt": "1"}, "one")
    assert [b.commit for b in watch.poll()] == [sha] and fetches == [1]


def test_a_newer_commit_skips_the_queued_older_builds_of_its_branch(rq_conn, conn, settings, make_repo) -> None:
    from voltci.models import Status

    repo = make_repo()
    repo.commit({"a.txt": "0"}, "zero")
    repo.git("branch", "feature")
    watch = RepoWatch(Store(rq_conn, settings), str(repo.path), branches=["main", "feature"], supersede=["all"])
    watch.validate()
    watch.poll()
    repo.checkout("feature")
    shas = [repo.commit({"f.txt": str(n)}, f"feature {n}") for n in range(3)]
    repo.checkout("main")
    main_shas = [repo.commit({"m.txt": str(n)}, f"main {n}") for n in range(2)]
    watch.poll()
    status = {b.commit: b.status for b in Store(conn).history.builds("proj", 50)}
    assert [status[s] for s in shas] == [Status.SKIPPED, Status.SKIPPED, Status.QUEUED]
    assert [status[s] for s in main_shas] == [Status.QUEUED, Status.QUEUED]  # the default branch: not unless named
    skipped = Store(conn).records.get_build(keys.build_id("proj", shas[0]))
    assert skipped.reason == f"superseded by {shas[2][:10]}" and skipped.results_stored == 1
    assert keys.job_id(skipped.id, 1) not in jobqueue.waiting_job_ids(rq_conn, settings)
    named = RepoWatch(Store(rq_conn, settings), str(repo.path), branches=["main"], supersede=["main"])
    named.validate()
    newest = repo.commit({"m.txt": "x"}, "main x")
    named.poll()
    status = {b.commit: b.status for b in Store(conn).history.builds("proj", 50)}
    assert [status[s] for s in main_shas] == [Status.SKIPPED, Status.SKIPPED] and status[newest] is Status.QUEUED
