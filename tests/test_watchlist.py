"""The observer's repositories and branches: `[[repos]]` tables in volt.toml (read again when the file
changes), branch globs followed as branches come and go, force-pushes, and notifications that make
someone's push go first — against real git repositories and a real Redis."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import redis
from support import run_volt

from voltci import keys
from voltci.dispatch import Priority
from voltci.errors import BadInput
from voltci.models import QueuedFor
from voltci.observer import RepoWatch, Wanted
from voltci.store import Store
from voltci.watchlist import WatchList, read_rules


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    stat = path.stat()  # a new mtime even within the filesystem's timestamp granularity
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    return path


@pytest.mark.parametrize("text, message", [
    ('[[repos]]\nname = "x"\n', "'url' is required"),
    ('[[repos]]\nurl = "/r"\nbranch = "main"\n', "unknown key 'branch'"),
    ('[[repos]]\nurl = "/r"\npriority = "urgent"\n', "unknown priority 'urgent'; use high, normal or low"),
    ('[[repos]]\nurl = "/r"\ninterrupt = true\n', "interrupt = true needs supersede"),
    ('[[repos]]\nurl = "/r"\nbranches = [1]\n', "'branches' must be a string or a list of strings"),
    ('repos = "/r"\n', "'repos' must be [[repos]] tables"),
])
def test_bad_repos_tables_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(BadInput, match=message.replace("[", r"\[").replace("]", r"\]")) as found:
        read_rules(write(tmp_path / "volt.toml", text))
    assert "\n" not in str(found.value) and "table 1" in str(found.value) or "'repos'" in str(found.value)


def test_volt_observe_without_repo_watches_every_table(make_repo, settings, tmp_path) -> None:
    one, two = make_repo("one"), make_repo("two")
    heads = [one.commit({"a": "1"}, "one"), two.commit({"a": "1"}, "two")]
    config = write(tmp_path / "volt.toml", f'[[repos]]\nurl = "{one.path}"\npriority = "high"\n\n'
                                           f'[[repos]]\nurl = "{two.path}"\nname = "second"\n')
    env = {"VOLT_REDIS_URL": settings.effective_redis_url, "VOLT_WORKSPACE_DIR": settings.workspace_dir}
    proc = run_volt("observe", "--once", "--config", str(config), env=env)
    assert proc.returncode == 0, proc.stderr
    assert sorted(line.split()[2] for line in proc.stdout.splitlines()) == sorted(h[:10] for h in heads)
    repos = Store(redis.Redis.from_url(settings.effective_redis_url, decode_responses=True)).repos.known()
    assert repos["one"]["priority"] == "high" and repos["second"]["priority"] == "normal"
    empty = write(tmp_path / "empty.toml", "poll = 1\n")
    none = run_volt("observe", "--once", "--config", str(empty), env=env)
    assert none.returncode == 2 and none.stderr.count("\n") == 1 and "no repository to watch" in none.stderr
    bad = write(tmp_path / "bad.toml", f'[[repos]]\nurl = "{one.path}"\ninterrupt = true\n')
    refused = run_volt("observe", "--once", "--config", str(bad), env=env)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "needs supersede" in refused.stderr


def test_the_file_is_read_again_when_it_changes(rq_conn, conn, settings, make_repo, tmp_path, caplog) -> None:
    one, two = make_repo("one"), make_repo("two")
    one.commit({"a": "1"}, "one")
    two.commit({"a": "1"}, "two")
    config = write(tmp_path / "volt.toml", f'[[repos]]\nurl = "{one.path}"\n')
    watches = WatchList.from_file(Store(rq_conn, settings), config)
    assert [w.name for w in watches.current()] == ["one"]
    first = watches.current()[0]
    write(config, f'[[repos]]\nurl = "{one.path}"\n\n[[repos]]\nurl = "{two.path}"\nname = "two"\npriority = "low"\n')
    assert [w.name for w in watches.current()] == ["one", "two"]
    assert watches.current()[0] is first  # unchanged rules: the same watch, its mirror kept
    assert Store(conn).repos.known()["two"]["priority"] == "low"
    with caplog.at_level(logging.WARNING, logger="volt.observer"):
        write(config, "[[repos]]\nurl = 3\n")
        assert [w.name for w in watches.current()] == ["one", "two"]  # a broken file changes nothing
    assert "'url' is required" in caplog.text and "still watching one, two" in caplog.text
    write(config, f'[[repos]]\nurl = "{two.path}"\nname = "two"\npriority = "high"\n')
    (only,) = watches.current()
    assert only.name == "two" and only.priority is Priority.HIGH
    assert Store(conn).repos.known()["two"]["priority"] == "high"


def test_branch_globs_follow_branches_as_they_come_and_go(rq_conn, conn, settings, make_repo) -> None:
    repo = make_repo()
    repo.commit({"a": "0"}, "base")
    for name in ("release/1", "release/2", "feature"):
        repo.git("branch", name)
    repo.checkout("release/2")
    repo.commit({"r2": "1"}, "release 2")  # a commit of its own (a commit is built once, whichever branch)
    repo.checkout("main")
    watch = RepoWatch(Store(rq_conn, settings), str(repo.path), branches=["release/*"])
    watch.validate()
    assert watch.branches == ["release/1", "release/2"]
    assert sorted(b.branch for b in watch.poll()) == ["release/1", "release/2"]
    repo.checkout("release/3", create=True)
    new = [repo.commit({"a": str(n)}, f"r3 {n}") for n in range(3)]
    repo.checkout("main")
    repo.git("branch", "-D", "release/1")
    built = watch.poll()
    assert [(b.branch, b.commit) for b in built] == [("release/3", new[-1])]  # a new branch: its head only
    assert watch.branches == ["release/2", "release/3"]
    assert conn.hget(keys.pointer(watch.name), "release/1") is None  # deleted upstream: forgotten
    repo.checkout("release/1", create=True)
    again = repo.commit({"b": "1"}, "release/1 again")
    assert [(b.branch, b.commit) for b in watch.poll()] == [("release/1", again)]  # back: from its head
    every = RepoWatch(Store(rq_conn, settings), str(repo.path), branches=["*"])
    every.validate()
    assert every.branches == ["feature", "main", "release/1", "release/2", "release/3"]


def test_a_force_push_bisects_only_the_new_commits_and_says_so(rq_conn, conn, settings, make_repo, caplog) -> None:
    repo = make_repo()
    base = repo.commit({"a": "0"}, "base")
    watch = RepoWatch(Store(rq_conn, settings), str(repo.path))
    watch.validate()
    watch.poll()
    repo.commit({"a": "1"}, "old 1")
    old = repo.commit({"a": "2"}, "old 2")
    watch.poll()
    repo.git("reset", "--hard", "--quiet", base)
    new = [repo.commit({"b": str(n)}, f"new {n}") for n in range(3)]
    with caplog.at_level(logging.WARNING, logger="volt.observer"):
        built = watch.poll()
    assert [b.commit for b in built] == new
    push = Store(conn).pushes.get(built[-1].id)
    assert push.base == base and push.rewritten and push.commits == new
    assert f"history rewritten (force-push): {old[:10]} is no longer in it; culprit finding covers only the 3 " \
           f"new commit(s) since {base[:10]}" in caplog.text


def test_a_notification_puts_the_pushed_head_before_backlog(rq_conn, conn, settings, make_repo) -> None:
    repo = make_repo()
    repo.commit({"a": "0"}, "base")
    watch = RepoWatch(Store(rq_conn, settings), str(repo.path))
    watch.validate()
    watch.poll()
    repo.commit({"a": "1"}, "one")
    head = repo.commit({"a": "2"}, "two")
    built = watch.poll(Wanted("refs/heads/main", QueuedFor.WEBHOOK))
    assert [b.queued_for for b in built] == ["", "webhook"]
    assert Store(conn).records.get_build(keys.build_id(watch.name, head)).queued_for == "webhook"
    later = repo.commit({"a": "3"}, "three")
    watch.poll()  # the observer found it before the notification came
    assert watch.poll(Wanted("main", QueuedFor.NOTIFY)) == []
    assert Store(conn).records.get_build(keys.build_id(watch.name, later)).queued_for == "notify"
    assert not Wanted("refs/heads/other", QueuedFor.NOTIFY).covers("main")
    assert json.loads(conn.hget(keys.repos(), watch.name))["priority"] == "normal"


def test_a_branch_moved_back_builds_nothing_and_the_observer_goes_on(rq_conn, conn, settings, make_repo) -> None:
    repo = make_repo()
    first = repo.commit({"a": "0"}, "zero")
    watch = RepoWatch(Store(rq_conn, settings), str(repo.path))
    watch.validate()
    watch.poll()
    repo.commit({"a": "1"}, "one")
    watch.poll()
    repo.git("reset", "--hard", "--quiet", first)
    assert watch.poll() == []
    assert conn.hget(keys.pointer(watch.name), "main") == first
    again = repo.commit({"a": "2"}, "two")
    assert [b.commit for b in watch.poll()] == [again]
