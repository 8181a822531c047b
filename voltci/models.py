"""The records Volt keeps: builds, their attempts and per-test results, and their states."""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from voltci.clock import now_iso, seconds_between


class Status(str, Enum):
    """A build's state: queued → running → one of the final states (or queued → skipped)."""

    QUEUED = "queued"
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # superseded by a newer commit of its branch before a runner took it

    @property
    def is_final(self) -> bool:
        return self not in (Status.QUEUED, Status.RUNNING)


class Outcome(str, Enum):
    """One test's outcome, as unittest would count it."""

    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    SKIPPED = "skipped"
    FLAKY = "flaky"  # failed, then passed when run again on its own: counts as passed


class AttemptState(str, Enum):
    QUEUED = "queued"  # a shard's attempt waiting in the queue
    RUNNING = "running"
    FINISHED = "finished"
    LOST = "lost"  # its runner died; the build went back to the queue


_REPEAT_SUFFIX = re.compile(r" \[(\d+|teardown)\]$")


def plain_test_id(test_id: str) -> str:
    """The test a result entry is of: its id without the ` [2]` a test run twice in one build gets when
    kept (store/budget.py), or the ` [teardown]` of pytest's error in a test's teardown."""
    return _REPEAT_SUFFIX.sub("", test_id)


@dataclass(slots=True)
class TestResult:
    """One entry of a build's per-test results; `order` keeps the order in which tests ran. Slotted: a
    build keeps up to a quarter of a million of them in memory while it reads and stores its results."""

    __test__ = False  # not a test class, whatever its name says to pytest

    id: str
    outcome: Outcome
    duration_s: float = 0.0
    message: str = ""
    order: int = 0
    subtest_of: str = ""  # the parent test's id, for a failing subtest's own entry
    via_subtests: bool = False  # a parent that did not pass only because of its subtests
    leg: str = ""  # the matrix leg that ran it (a matrix build's merged results); "" in a build without legs

    def to_json(self) -> str:
        data: dict[str, Any] = {"outcome": self.outcome.value, "duration_s": self.duration_s,
                                "message": self.message, "order": self.order}
        if self.subtest_of:
            data["subtest_of"] = self.subtest_of
        if self.via_subtests:
            data["via_subtests"] = True
        return json.dumps(data)

    @classmethod
    def from_json(cls, test_id: str, text: str) -> TestResult:
        data = json.loads(text)
        return cls(id=test_id, outcome=Outcome(data["outcome"]), duration_s=float(data["duration_s"]),
                   message=data.get("message", ""), order=int(data.get("order", 0)),
                   subtest_of=data.get("subtest_of", ""), via_subtests=bool(data.get("via_subtests")))

    def report_dict(self) -> dict[str, Any]:
        """The report contract's entry: a flaky test is `passed` there, with `"flaky": true`."""
        outcome = Outcome.PASSED if self.outcome is Outcome.FLAKY else self.outcome
        data: dict[str, Any] = {"id": self.id, "outcome": outcome.value, "duration_s": self.duration_s,
                                "message": self.message}
        if self.outcome is Outcome.FLAKY:
            data["flaky"] = True
        if self.subtest_of:
            data["subtest_of"] = self.subtest_of
        if self.leg:
            data["leg"] = self.leg
        return data


@dataclass
class Counts:
    total: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    flaky: int = 0  # of the passed ones, those that passed only when run again

    @classmethod
    def of(cls, tests: list[TestResult]) -> Counts:
        """Count as unittest's and pytest's summaries do: `total` is tests run (subtests are not tests of
        their own), each failing subtest adds to failures or errors and each skipped one to skipped."""
        counts = cls()
        for test in tests:
            counts.add(test)
        return counts

    def add(self, test: TestResult) -> None:
        """Count one more entry (see `of`)."""
        if not test.subtest_of:
            self.total += 1
            if test.outcome in (Outcome.PASSED, Outcome.FLAKY):
                self.passed += 1
                self.flaky += test.outcome is Outcome.FLAKY
            elif test.outcome is Outcome.SKIPPED:
                self.skipped += 1
        elif test.outcome is Outcome.SKIPPED:
            self.skipped += 1  # a subtest's skipTest: unittest's `skipped=N` counts it
        if test.via_subtests:
            return  # counted through its failing subtests' own entries
        if test.outcome is Outcome.FAILED:
            self.failed += 1
        elif test.outcome is Outcome.ERROR:
            self.errors += 1

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def __add__(self, other: Counts) -> Counts:
        return Counts(**{name: getattr(self, name) + getattr(other, name) for name in self.__dataclass_fields__})

    @classmethod
    def from_dict(cls, data: Any) -> Counts:
        """Counts as stored: every field a non-negative whole number, anything else 0."""
        data = data if isinstance(data, dict) else {}
        return cls(**{name: _whole(data.get(name)) for name in cls.__dataclass_fields__})


def _whole(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


@dataclass
class Cut:
    """What a build's results lost to the bounds on what Volt reads and keeps of them (store/budget.py,
    runner/bounds.py), counted so that the report can say it. `counts` counts the tests not kept at all,
    so that the build's counts stay those of every test that ran."""

    tests_not_kept: int = 0  # counted, but neither id nor outcome kept
    messages_dropped: int = 0  # tests kept with id, outcome and duration only
    messages_shortened: int = 0  # messages kept as their head and tail, with a marker between
    message_bytes_cut: int = 0  # bytes of messages not kept, dropped or shortened
    ids_shortened: int = 0  # ids kept as their head and a hash of the whole
    values_dropped: int = 0  # harmless values that made no sense (a test's cost, a file's collection time)
    counts: Counts = field(default_factory=Counts)

    FIELDS = ("tests_not_kept", "messages_dropped", "messages_shortened", "message_bytes_cut", "ids_shortened",
              "values_dropped")

    def __bool__(self) -> bool:
        return any(getattr(self, name) for name in self.FIELDS)

    def __add__(self, other: Cut) -> Cut:
        return Cut(**{name: getattr(self, name) + getattr(other, name) for name in self.FIELDS},
                   counts=self.counts + other.counts)

    def to_dict(self) -> dict[str, int]:
        """The report contract's `cut`: each count (all 0 when nothing was cut)."""
        return {name: getattr(self, name) for name in self.FIELDS}

    def to_json(self) -> str:
        return json.dumps({**self.to_dict(), "counts": self.counts.to_dict()}) if self else ""

    @classmethod
    def from_json(cls, text: str | bytes | None) -> Cut:
        """As stored ("" or None: nothing was cut); a field that is not a count reads as 0."""
        try:
            data = json.loads(text) if text else {}
        except ValueError:
            data = {}
        data = data if isinstance(data, dict) else {}
        return cls(**{name: _whole(data.get(name)) for name in cls.FIELDS}, counts=Counts.from_dict(data.get("counts")))

    def line(self) -> str:
        """What was cut, in words, for the text report (empty when nothing was)."""
        said = [f"{value} {words}" for value, words in (
            (self.tests_not_kept, "test(s) counted but not kept"),
            (self.messages_dropped, "message(s) not kept"),
            (self.messages_shortened, "message(s) shortened to their head and tail"),
            (self.ids_shortened, "id(s) shortened"),
            (self.values_dropped, "value(s) that made no sense dropped")) if value]
        if not said:
            return ""
        cut_bytes = f" ({self.message_bytes_cut} bytes of messages)" if self.message_bytes_cut else ""
        return "cut:      " + ", ".join(said) + cut_bytes + ": more than Volt keeps of a build"


@dataclass
class Attempt:
    number: int
    state: AttemptState
    runner: str = ""
    started_at: str = ""
    ended_at: str = ""
    status: str = ""  # the build status a finished attempt reported
    reason: str = ""  # why a lost attempt was lost

    def to_json(self) -> str:
        data = asdict(self)
        data["state"] = self.state.value
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> Attempt:
        data = json.loads(text)
        data["state"] = AttemptState(data["state"])
        return cls(**data)


class QueuedFor(str, Enum):
    """Why a build waits in the queue ahead of backlog (dispatch.py orders by it)."""

    NOTIFY = "notify"  # `volt notify` named its repository and branch: someone waits for it
    WEBHOOK = "webhook"  # a forge's push webhook did
    REBUILD = "rebuild"  # someone asked for it again
    APPROVED = "approved"  # someone approved the pull request's head it builds
    LOST = "lost"  # its runner was lost: it was already under way


@dataclass(frozen=True)
class FirstFailing:
    """The first failing commit of a push and its parent, the last commit that passed (bisect.py)."""

    commit: str
    subject: str
    author: str
    parent: str

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> FirstFailing:
        data = json.loads(text)
        return cls(**{k: str(data.get(k, "")) for k in cls.__dataclass_fields__})

    def line(self) -> str:
        """How reports and pages say it: "first failing commit: <sha> <subject> by <author>"."""
        return f"first failing commit: {self.commit[:10]} {self.subject} by {self.author}".rstrip()


@dataclass(frozen=True)
class PullRequest:
    """What a pull request's build is of: its number, the head commit it proposes, and the commit of its
    base branch it was merged into (`base`, known once a runner made the merge; "" before). The build's
    `commit` is `head`; its `branch` is `base_branch`, the branch it would merge into."""

    number: int
    head: str
    base: str = ""
    base_branch: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> PullRequest:
        data = json.loads(text)
        return cls(int(data["number"]), str(data.get("head", "")), str(data.get("base", "")),
                   str(data.get("base_branch", "")))

    def to_dict(self) -> dict[str, Any]:
        """As `volt report --json` gives it: `{"number": N, "head": SHA, "base": SHA}`."""
        return {"number": self.number, "head": self.head, "base": self.base or None}


PROTECTED_SCOPE = "protected"  # the trust scope of the protected branches' builds (runner/scopes.py)


def _id_list(text: str | None) -> list[str]:
    """A JSON list of test ids from a record (anything else: none)."""
    try:
        found = json.loads(text) if text else []
    except ValueError:
        return []
    return [item for item in found if isinstance(item, str)] if isinstance(found, list) else []


@dataclass
class Build:
    """A build of one commit of one repository; stored as a Redis hash of strings."""

    id: str
    repo: str
    url: str
    commit: str
    branch: str
    subject: str = ""
    author: str = ""
    status: Status = Status.QUEUED
    attempt: int = 1
    queued_at: str = ""
    started_at: str = ""
    finished_at: str = ""
    runner: str = ""
    duration_s: float = 0.0
    counts: Counts = field(default_factory=Counts)
    reason: str = ""
    log_tail: str = ""
    results_stored: int = 0  # how many times a final result was written: exactly once, or Volt is wrong
    progress: int = 0  # test results written so far by the running attempt
    failing: int = 0  # of those, failed or erroring (what its commit status says while it runs)
    first_failure: str = ""  # the id of the attempt's first failed or erroring test, cut (kept when it ends)
    first_failure_at: str = ""  # when that test was known to have failed (written with it, once)
    tests_started_at: str = ""  # when the attempt's tests began (its pre-pass, else its suite), after its setup
    shards: int = 0  # how many shards its tests were split into (0: not split)
    shard_rest: bool = False  # shard 0 runs every test the other shards do not (a split planned from history)
    jobs: list[str] = field(default_factory=list)  # every rq job it had, so pruning leaves none behind
    log_compressed: bool = False  # its output was compressed when it ended
    push: str = ""  # the push it came with (several new commits of one branch; see bisect.py), if any
    queued_for: str = ""  # why it waits, when not only as backlog: a QueuedFor value
    waiting_since: str = ""  # when it last went into the queue (the queue wait the metrics count)
    first_failing: FirstFailing | None = None  # the first failing commit of its push, once known
    legs: int = 0  # how many matrix legs it was split into (0: none; see Leg)
    cut: Cut = field(default_factory=Cut)  # what its results lost to the bounds on what Volt keeps
    order_dependent: list[str] = field(default_factory=list)  # failed in the pre-pass, passed in the suite
    scope: str = ""  # the trust scope its last attempt ran in ("protected", or a branch's; "": not known)
    pull_request: PullRequest | None = None  # a pull request's build: built as its head would merge
    # A matrix leg's own record (keys.leg_id): its build, its name, interpreter and variables.
    parent: str = ""
    leg: str = ""
    python: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def to_hash(self) -> dict[str, str]:
        data = asdict(self)
        data["status"] = self.status.value
        data["env"] = json.dumps(self.env) if self.env else ""
        data["first_failing"] = self.first_failing.to_json() if self.first_failing else ""
        data["pull_request"] = self.pull_request.to_json() if self.pull_request else ""
        if not self.pull_request:
            del data["pull_request"]  # a field only on pull requests' builds
        data["counts"] = json.dumps(self.counts.to_dict())
        data["jobs"] = " ".join(self.jobs)
        data["log_compressed"] = "1" if self.log_compressed else "0"
        data["shard_rest"] = "1" if self.shard_rest else "0"
        data["cut"] = self.cut.to_json()
        if not self.cut:
            del data["cut"]  # a field only where something was cut: most records keep the fields they had
        data["order_dependent"] = json.dumps(self.order_dependent)
        if not self.order_dependent:
            del data["order_dependent"]  # a field only where the pre-pass saw one
        for name in ("failing", "first_failure", "first_failure_at", "tests_started_at"):
            if not getattr(self, name):
                del data[name]  # an attempt's, once a test failed
        return {key: str(value) for key, value in data.items()}

    @classmethod
    def from_hash(cls, data: Mapping[str, str]) -> Build:
        return cls(
            id=data["id"], repo=data["repo"], url=data.get("url", ""), commit=data["commit"],
            branch=data.get("branch", ""), subject=data.get("subject", ""), author=data.get("author", ""),
            status=Status(data.get("status", "queued")), attempt=int(data.get("attempt", 1)),
            queued_at=data.get("queued_at", ""), started_at=data.get("started_at", ""),
            finished_at=data.get("finished_at", ""), runner=data.get("runner", ""),
            duration_s=float(data.get("duration_s") or 0.0),
            counts=Counts(**json.loads(data.get("counts") or "{}")),
            reason=data.get("reason", ""), log_tail=data.get("log_tail", ""),
            results_stored=int(data.get("results_stored") or 0), progress=int(data.get("progress") or 0),
            failing=int(data.get("failing") or 0), first_failure=data.get("first_failure", ""),
            first_failure_at=data.get("first_failure_at", ""), tests_started_at=data.get("tests_started_at", ""),
            shards=int(data.get("shards") or 0), shard_rest=data.get("shard_rest") == "1",
            jobs=(data.get("jobs") or "").split(),
            log_compressed=data.get("log_compressed") == "1",
            push=data.get("push", ""), queued_for=data.get("queued_for", ""),
            waiting_since=data.get("waiting_since", ""),
            first_failing=FirstFailing.from_json(data["first_failing"]) if data.get("first_failing") else None,
            legs=int(data.get("legs") or 0), parent=data.get("parent", ""), leg=data.get("leg", ""),
            python=data.get("python", ""), env=json.loads(data["env"]) if data.get("env") else {},
            cut=Cut.from_json(data.get("cut")), scope=data.get("scope", ""),
            order_dependent=_id_list(data.get("order_dependent")),
            pull_request=PullRequest.from_json(data["pull_request"]) if data.get("pull_request") else None,
        )

    @property
    def short(self) -> str:
        return self.commit[:10]

    @property
    def first_failure_s(self) -> float | None:
        """Seconds from the start of the attempt that found it until its first failing test was known, to
        a hundredth of a second (never below 0: two runners' clocks may differ a little); None when no test
        failed. A re-dispatched build's attempt starts afresh: its `started_at` and first failure are its own."""
        return self._first_failure_after(self.started_at or self.first_failure_at)

    @property
    def first_failure_in_tests_s(self) -> float | None:
        """Seconds from the start of the attempt's tests until its first failing test was known: what the
        order its tests run in decides, without the checkout and setup before them (the same in any order).
        None when no test failed, or when the start of its tests was not recorded."""
        return self._first_failure_after(self.tests_started_at)

    def _first_failure_after(self, since: str) -> float | None:
        if not self.first_failure or not self.first_failure_at or not since:
            return None
        return max(0.0, round(seconds_between(since, self.first_failure_at), 2))

    @property
    def pull_number(self) -> int:
        """The number of the pull request it builds (0: a build of a branch or a commit)."""
        return self.pull_request.number if self.pull_request else 0

    @property
    def is_leg(self) -> bool:
        """A matrix leg's record, rather than a build's."""
        return bool(self.parent)


@dataclass(frozen=True)
class Leg:
    """One combination of a build's `[matrix]`: an interpreter and the variables its processes get.
    Its name says both (`py3.12-DJANGO=5.1`); a matrix build runs each leg as an rq job of its own."""

    name: str
    python: str
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, python: str, env: Mapping[str, str]) -> Leg:
        return cls("-".join([f"py{python}", *(f"{k}={v}" for k, v in env.items())]), python, dict(env))


@dataclass
class Timings:
    """What a run's tests cost it, for balancing the next split: each test's share of the run's wall
    clock (test id -> seconds), for pytest what collecting each file took (file -> seconds), and what
    starting the test process took (the sandbox, the interpreter, the runner, until its session began):
    what any other process of the suite pays again, a pre-pass's too."""

    tests: dict[str, float] = field(default_factory=dict)
    files: dict[str, float] = field(default_factory=dict)
    start_s: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.tests)

    @classmethod
    def combined(cls, parts: list[Timings]) -> Timings:
        """Several shards' timings as one run's. A file that several shards collected counts the sum:
        each collected only the functions it ran tests of."""
        tests: dict[str, float] = {}
        files: dict[str, float] = {}
        for part in parts:
            tests.update(part.tests)
            for file, seconds in part.files.items():
                files[file] = files.get(file, 0.0) + seconds
        return cls(tests, files, max((part.start_s for part in parts), default=0.0))  # each process pays it


@dataclass
class RunOutcome:
    """What running a commit's tests produced, before it is stored."""

    status: Status
    tests: list[TestResult]
    counts: Counts
    reason: str = ""
    log_tail: str = ""
    timings: Timings = field(default_factory=Timings)
    cut: Cut = field(default_factory=Cut)
    order_dependent: list[str] = field(default_factory=list)  # failed in the pre-pass, passed in the suite

    def recounted(self) -> Counts:
        """The counts of its tests again (after their outcomes changed), with those of the tests not kept."""
        return Counts.of(self.tests) + self.cut.counts


@dataclass
class Shard:
    """One share of a sharded build's tests, run as an rq job of its own; `attempt` counts its runs."""

    number: int
    attempt: int = 1
    state: AttemptState = AttemptState.QUEUED
    runner: str = ""
    started_at: str = ""
    ended_at: str = ""
    status: str = ""
    reason: str = ""
    tests: int = 0

    def to_json(self) -> str:
        data = asdict(self)
        data["state"] = self.state.value
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> Shard:
        data = json.loads(text)
        data["state"] = AttemptState(data.get("state", AttemptState.QUEUED.value))
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Share:
    """A shard's share of a split build's tests: the listed ones, or (`exclude`) every test but those."""

    ids: list[str]
    exclude: bool = False


@dataclass(frozen=True)
class Work:
    """What a runner works on: an attempt of a build, or, when `shard` is a number, of one shard of it."""

    build: str
    attempt: int
    shard: int | None = None
    shard_attempt: int = 0


@dataclass
class RunnerBeat:
    """What a runner's heartbeat key says about it."""

    name: str
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    queues: list[str] = field(default_factory=list)
    started_at: str = field(default_factory=now_iso)
    build: str = ""
    attempt: int = 0
    shard: int | None = None  # which shard of the build, when it works on one
    shard_attempt: int = 0
    build_started_at: str = ""
    heartbeat_at: str = ""
    pythons: list[str] = field(default_factory=list)  # the interpreters it has ("3.12"): matrix legs it can run

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RunnerBeat:
        data = json.loads(text)
        if data.get("shard") == -1:
            data["shard"] = None  # as runners before 0.2 said "no shard"
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @property
    def work(self) -> Work | None:
        return Work(self.build, self.attempt, self.shard, self.shard_attempt) if self.build else None


@dataclass(frozen=True)
class PointerUpdate:
    """Where the observer's pointer of a branch moves, in the transaction that enqueues the commit."""

    repo: str
    branch: str
    sha: str


@dataclass(frozen=True)
class Push:
    """New commits of one branch enqueued together, oldest first, on top of `base` (the commit the branch
    was at before, "" when unknown). Its head is built first, then the midpoint of what is unknown
    (bisect.py); `culprit` is its first failing commit once known. Its id is the head's build id."""

    id: str
    repo: str
    branch: str
    base: str
    commits: list[str]
    culprit: str = ""
    rewritten: bool = False  # the branch was force-pushed: `base` is where the new history leaves the old
    queued_at: str = ""

    def to_hash(self) -> dict[str, str]:
        return {"id": self.id, "repo": self.repo, "branch": self.branch, "base": self.base,
                "commits": " ".join(self.commits), "culprit": self.culprit,
                "rewritten": "1" if self.rewritten else "0", "queued_at": self.queued_at}

    @classmethod
    def from_hash(cls, data: Mapping[str, str]) -> Push:
        return cls(id=data["id"], repo=data["repo"], branch=data.get("branch", ""), base=data.get("base", ""),
                   commits=(data.get("commits") or "").split(), culprit=data.get("culprit", ""),
                   rewritten=data.get("rewritten") == "1", queued_at=data.get("queued_at", ""))


@dataclass(frozen=True)
class RunnerRow:
    """A runner as `volt status` and the runners page show it: from its live heartbeat key, or, once
    that expired, from the registry's last word on it (then it works on nothing)."""

    name: str
    alive: bool  # its heartbeat key lives
    state: str = ""  # the registry's word on it, as the scheduler last wrote it: "alive" or "gone"
    host: str = ""
    pid: int = 0
    queues: list[str] = field(default_factory=list)
    started_at: str = ""
    build: str = ""
    attempt: int = 0
    shard: int | None = None
    shard_attempt: int = 0
    heartbeat_at: str = ""
    heartbeat_age_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LostAttempt:
    """An attempt whose runner died, as the scheduler recorded it, and what it did then."""

    build: str
    repo: str
    commit: str
    attempt: int
    runner: str
    started_at: str
    lost_at: str
    reason: str
    then: str  # "attempt 2 queued", "shard 1 attempt 2 queued", "gave up"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> LostAttempt:
        data = json.loads(text)
        return cls(**{k: data.get(k, "" if k != "attempt" else 0) for k in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FlakyTest:
    """A test of a repository that passed only when run again, and how often (kept through pruning)."""

    repo: str
    test: str
    times: int
    last_build: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
