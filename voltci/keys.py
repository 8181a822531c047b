"""Every Redis key Volt uses, under one prefix. Nothing else formats a key.

Layout (P = prefix, "volt" by default):

    P:build:<build_id>              hash   the build record (models.Build)
    P:build:<build_id>:results      hash   a finished build's per-test results, compact (store/codec.py):
                                           "all" every test, "listed" the failed, erroring and flaky ones
    P:build:<build_id>:attempts     hash   attempt number -> JSON of one attempt
    P:build:<build_id>:shards       hash   shard number -> JSON of its state (a sharded build)
    P:build:<build_id>:shard-plan   hash   shard number -> its test ids, compact
    P:build:<build_id>:shard:<k>    string the results of shard k, compact (until the shards are merged)
    P:build:<build_id>:log          string the output of the build's current attempt, capped; compressed
                                           once the build ended (the record's `log_compressed`)
    P:repo:<repo>:timings           string what each test and each file's collection cost the latest build
                                           that ran tests, compact (for balancing shards)
    P:repo:<repo>:leg-timings       hash   matrix leg name -> the same, of that leg's latest run
    P:build:<build_id>-a<k>-L<n>    hash   matrix leg n of attempt k of a build: a record like a build's
                                           (models.Build, with `parent`), and every key a build has, under its id
    P:repo:<repo>:heads             hash   branch -> the newest build of it (never pruned)
    P:log:<build_id>                pubsub channel: the output as it is appended (JSON: end offset, text)
    P:repos                         hash   repo name -> JSON of where it lives
    P:repo:<repo>:history           zset   build ids scored by enqueue time (newest = highest)
    P:history                       zset   the same, of every repository
    P:repo:<repo>:flaky             zset   test id -> times it was flaky
    P:repo:<repo>:flaky-last        hash   test id -> the latest build where it was flaky
    P:repo:<repo>:trail-ids         string the test ids its trail numbers, in the order first seen, compact
    P:repo:<repo>:trail             hash   build id -> that build's column: each numbered test's outcome and
                                           milliseconds, compact (store/trail.py; its newest builds only)
    P:repo:<repo>:trail-order       zset   the builds of the trail, scored as in the history
    P:outbox                        list   webhook messages to send (JSON: a build's id, and its event when
                                           not its end: a culprit found, a first failure)
    P:outbox:sending                list   those being sent
    P:statuses:due                  zset   ids of builds whose commit statuses a forge may not show yet,
                                           scored by when to look at them (epoch s): one member a build,
                                           however often it changes (store/statuses.py); and
                                           "pull:<repo>:<number>" for a pull request whose head waits
                                           for approval
    P:statuses:sending              zset   those being looked at by the acting scheduler, scored by when taken
    P:build:<build_id>:statuses     hash   context -> JSON of the last status a forge took for it (or gave up
                                           on), and retry state; removed with the build
    P:commits                       zset   "<sha>:<repo>" members, all score 0, for prefix lookup by lex range
    P:pointer:<repo>                hash   branch -> last commit the observer enqueued
    P:queued                        set    ids of builds waiting for a runner
    P:running                       set    ids of builds a runner is working on
    P:events                        pubsub channel: one message per finished build
    P:first-failures                pubsub channel: one message per build (not leg) whose first failing
                                           test just became known (JSON: build id, test id)
    P:notify                        pubsub channel: "look at this repository now" (JSON: repo, ref)
    P:runner:<name>                 string a runner's heartbeat (JSON), expiring after heartbeat_ttl
    P:runner-names                  set    names of runners that have sent a heartbeat
    P:runners                       hash   runner name -> JSON of its last heartbeat seen (the registry)
    P:lost                          list   the latest lost attempts, newest first (JSON), capped
    P:scheduler                     string the lock held by the scheduler that acts (expiring)
    P:push:<push_id>                hash   a push: new commits of one branch enqueued together (models.Push),
                                           until every build of it has ended
    P:pushes                        set    ids of the pushes still being built
    P:runtime                       zset   "<build_id> <attempt> <start> <end>" of each attempt that ended,
                                           scored by its end (epoch s), kept for `fair_window`: runner time
    P:metrics                       hash   counters for /metrics: builds ended by repository and status,
                                           histogram buckets of build durations and queue waits, lost attempts
    P:hooks:seen                    zset   the forge push hooks received: "body:<digest>" and "delivery:<id>",
                                           scored by when (epoch s); kept HOOKS_SEEN_S, at most HOOKS_SEEN_MAX
    P:repo:<repo>:pulls             hash   pull request number -> JSON of what Volt knows of it (pulls.PullState):
                                           its head, base branch, author, trust, approval, builds; at most
                                           PULLS_KEPT per repository, closed ones dropped first

Written by earlier versions and still read (and pruned), never written:

    P:build:<build_id>:tests        hash   test id -> JSON of one test result
    P:repo:<repo>:durations         hash   test id -> seconds it took last
"""

from __future__ import annotations

import re

PREFIX = "volt"

_REPO_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}")


def _check_part(value: str) -> str:
    if not value or ":" in value or any(ch.isspace() for ch in value):
        raise ValueError(f"not a valid key part: {value!r}")
    return value


def build(build_id: str) -> str:
    return f"{PREFIX}:build:{_check_part(build_id)}"


def build_results(build_id: str) -> str:
    return f"{build(build_id)}:results"


def build_tests(build_id: str) -> str:
    """Earlier versions' per-test hash (read when a build has no compact results)."""
    return f"{build(build_id)}:tests"


def build_attempts(build_id: str) -> str:
    return f"{build(build_id)}:attempts"


def build_shards(build_id: str) -> str:
    return f"{build(build_id)}:shards"


def build_shard_plan(build_id: str) -> str:
    return f"{build(build_id)}:shard-plan"


def build_shard_tests(build_id: str, shard: int) -> str:
    return f"{build(build_id)}:shard:{int(shard)}"


def repo_timings(repo: str) -> str:
    return f"{PREFIX}:repo:{_check_part(repo)}:timings"


def repo_durations(repo: str) -> str:
    """Earlier versions' durations hash (read until a build writes the compact timings)."""
    return f"{PREFIX}:repo:{_check_part(repo)}:durations"


def repo_heads(repo: str) -> str:
    return f"{PREFIX}:repo:{_check_part(repo)}:heads"


def repo_leg_timings(repo: str) -> str:
    """Each matrix leg's recorded timings, by leg name (a leg on another interpreter takes other times)."""
    return f"{PREFIX}:repo:{_check_part(repo)}:leg-timings"


_LEG = re.compile(r"(?P<build>.+)-a(?P<attempt>[0-9]+)-L(?P<leg>[0-9]+)")


def leg_id(build_id_: str, attempt: int, leg: int) -> str:
    """Matrix leg `leg` (from 0) of attempt `attempt` of a build: its records live under this id, as a
    build's under its own (a build id ends with a hex sha, so a leg's never reads as one). Each attempt
    of a build has legs of its own, so nothing of an earlier attempt's legs can write into a later's."""
    return f"{build_id_}-a{int(attempt)}-L{int(leg)}"


def parent_of(unit_id: str) -> str | None:
    """The build a matrix leg's id belongs to; None for a build's own id."""
    found = _LEG.fullmatch(unit_id)
    return found["build"] if found else None


def shard_job_id(build_id_: str, attempt: int, shard: int, shard_attempt: int) -> str:
    """The rq job of one attempt of one shard of a build."""
    return f"{build_id_}-a{attempt}-s{shard}-{shard_attempt}"


def build_log(build_id: str) -> str:
    return f"{build(build_id)}:log"


def log_channel(build_id: str) -> str:
    return f"{PREFIX}:log:{_check_part(build_id)}"


def repos() -> str:
    return f"{PREFIX}:repos"


def repo_history(repo: str) -> str:
    return f"{PREFIX}:repo:{_check_part(repo)}:history"


def history() -> str:
    return f"{PREFIX}:history"


def repo_flaky(repo: str) -> str:
    return f"{PREFIX}:repo:{_check_part(repo)}:flaky"


def repo_flaky_last(repo: str) -> str:
    return f"{PREFIX}:repo:{_check_part(repo)}:flaky-last"


def repo_trail(repo: str) -> str:
    return f"{PREFIX}:repo:{_check_part(repo)}:trail"


def repo_trail_ids(repo: str) -> str:
    return f"{PREFIX}:repo:{_check_part(repo)}:trail-ids"


def repo_trail_order(repo: str) -> str:
    return f"{PREFIX}:repo:{_check_part(repo)}:trail-order"


def outbox() -> str:
    return f"{PREFIX}:outbox"


def outbox_sending() -> str:
    return f"{PREFIX}:outbox:sending"


def statuses_due() -> str:
    return f"{PREFIX}:statuses:due"


def statuses_sending() -> str:
    return f"{PREFIX}:statuses:sending"


def pull_status_member(repo: str, number: int) -> str:
    """The member of `statuses_due` of a pull request waiting for approval (no build id has a colon)."""
    return f"pull:{_check_part(repo)}:{int(number)}"


def parse_pull_status_member(member: str) -> tuple[str, int] | None:
    """(repository, number) of a `pull_status_member`, else None (a build id)."""
    kind, _, rest = member.partition(":")
    repo, _, number = rest.partition(":")
    return (repo, int(number)) if kind == "pull" and repo and number.isdigit() else None


def build_statuses(build_id: str) -> str:
    """What a forge was last told of a build's commit, by status context (store/statuses.py)."""
    return f"{build(build_id)}:statuses"


def commits() -> str:
    return f"{PREFIX}:commits"


def commit_member(sha: str, repo: str, pull: int = 0) -> str:
    """Member of the commits index: the sha first so a lex range finds every prefix match; a pull
    request's build of a head is `<sha>:<repo>:pr<N>` (its id is not the commit's own)."""
    return f"{sha}:{_check_part(repo)}" + (f":pr{int(pull)}" if pull else "")


def split_commit_member(member: str) -> tuple[str, str]:
    """(sha, repo) of a member; a pull request's member keeps `:pr<N>` on the repo (see commit_build)."""
    sha, _, repo = member.partition(":")
    return sha, repo


def commit_build(sha: str, where: str) -> str:
    """The build id a commits-index member names: `where` is split_commit_member's repo part."""
    repo, _, pull = where.partition(":pr")
    return pull_build_id(repo, int(pull), sha) if pull.isdigit() else build_id(repo, sha)


def commit_repo(where: str) -> str:
    """The repository of split_commit_member's repo part."""
    return where.partition(":")[0]


def pointer(repo: str) -> str:
    return f"{PREFIX}:pointer:{_check_part(repo)}"


def queued() -> str:
    return f"{PREFIX}:queued"


def running() -> str:
    return f"{PREFIX}:running"


def notify() -> str:
    return f"{PREFIX}:notify"


def events() -> str:
    return f"{PREFIX}:events"


def first_failures() -> str:
    return f"{PREFIX}:first-failures"


def runner(name: str) -> str:
    return f"{PREFIX}:runner:{_check_part(name)}"


def runner_names() -> str:
    return f"{PREFIX}:runner-names"


def runners() -> str:
    return f"{PREFIX}:runners"


def lost() -> str:
    return f"{PREFIX}:lost"


def push(push_id: str) -> str:
    return f"{PREFIX}:push:{_check_part(push_id)}"


def pushes() -> str:
    return f"{PREFIX}:pushes"


def runtime() -> str:
    return f"{PREFIX}:runtime"


def metrics() -> str:
    return f"{PREFIX}:metrics"


def scheduler_lock() -> str:
    return f"{PREFIX}:scheduler"


# A push hook replayed within a week is refused; the newest 10,000 marks (two a hook) are kept, 1.4 MB
# in Redis, however many hooks arrive (only a correctly signed, new body is remembered).
HOOKS_SEEN_S = 7 * 24 * 3600
HOOKS_SEEN_MAX = 10_000


def hooks_seen() -> str:
    return f"{PREFIX}:hooks:seen"


# Pull requests kept per repository (what each holds is bounded: pulls.PullState), and how many of them
# may wait for approval at once: a flood of pull requests from forks costs at most this much.
PULLS_KEPT = 500
PULLS_WAITING_MAX = 50


def repo_pulls(repo: str) -> str:
    return f"{PREFIX}:repo:{_check_part(repo)}:pulls"


def is_valid_repo_name(name: str) -> bool:
    return bool(_REPO_NAME.fullmatch(name))


def build_id(repo: str, sha: str) -> str:
    """The build id is derived from repo and commit, so enqueueing a commit twice finds the first build.

    It is also a valid rq job id (letters, digits, `_` and `-`), so attempts can be named after it.
    """
    if not is_valid_repo_name(repo):
        raise ValueError(f"not a valid repository name: {repo!r}")
    return f"{repo}-{sha}"


def pull_build_id(repo: str, number: int, head: str) -> str:
    """A pull request's build: of its head commit as it would merge, apart from a branch's build of the
    same commit (that one is built as it is). A new head is a new build; the same head, the same one."""
    if number <= 0:
        raise ValueError(f"not a pull request number: {number!r}")
    return build_id(repo, f"pr{number}-{head}")


def job_id(build_id_: str, attempt: int) -> str:
    """The rq job of one attempt of a build."""
    return f"{build_id_}-a{attempt}"


_SHARD_JOB = re.compile(r"(?P<build>.+)-a(?P<attempt>[0-9]+)-s(?P<shard>[0-9]+)-(?P<shard_attempt>[0-9]+)")
_BUILD_JOB = re.compile(r"(?P<build>.+)-a(?P<attempt>[0-9]+)")


def parse_job_id(job_id: str) -> tuple[str, int, int] | None:
    """(build id, attempt, shard) of one of Volt's rq job ids (shard -1 for a build's own job), else None."""
    found = _SHARD_JOB.fullmatch(job_id)
    if found:
        return found["build"], int(found["attempt"]), int(found["shard"])
    found = _BUILD_JOB.fullmatch(job_id)
    if found:
        return found["build"], int(found["attempt"]), -1
    return None
