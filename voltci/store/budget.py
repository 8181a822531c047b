"""What a build keeps of its results, at most, and cutting them to it.

Why: everything a build reports is written by its commit, and a commit may be hostile. 100,000 failing
tests with 1 KiB random messages once grew Redis by 112 MB in one build. With these bounds a build's
results take at most RESULTS_MAX_BYTES (4 MiB) of Redis whatever it reports; with its output
(`log_max_bytes`, 10 MiB by default) and the rest of its record, a build grows Redis by at most 16 MiB.

The bounds, applied in this order as results arrive (Keeper), by the runner as it reads them and again
by the store on what it is given (shards and matrix legs merge several runs' results):

- an id is at most ID_MAX characters (its head and a hash of the whole: long ids stay distinct and the
  same from build to build, so a test's history holds);
- a message is at most MESSAGE_MAX bytes (its head and its tail, with a marker saying how much was cut);
- the failed, erroring and flaky tests keep their messages until LISTED_MESSAGES_MAX bytes of them,
  the first LISTED_MAX of them only; the other tests' messages (skip reasons) until OTHER_MESSAGES_MAX;
- at most TESTS_MAX tests are kept — the failed and erroring ones first, then the others in the order
  they ran; the rest are counted (the build's counts stay those of every test) but not kept;
- finally, encoded, the results must fit in RESULTS_MAX_BYTES: otherwise fewer tests are kept (passing
  ones first) and fewer messages, until they do.

What was cut is counted in a models.Cut, which the report shows (`cut`). A duration that is not a finite
number of seconds from 0 to MAX_DURATION_S is 0 here (the runner refuses it before: see runner/bounds.py).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, replace

from voltci.models import Cut, RunOutcome, TestResult, Timings
from voltci.store import codec

ID_MAX = 1024  # characters
MESSAGE_MAX = 16 * 1024  # bytes, marker included
LISTED_MAX = codec.LISTED_MAX  # failed, erroring and flaky tests kept with their messages
LISTED_MESSAGES_MAX = 3 * 1024 * 1024  # bytes of their messages
OTHER_MESSAGES_MAX = 256 * 1024  # bytes of every other test's message
TESTS_MAX = 250_000
RESULTS_MAX_BYTES = 4 * 1024 * 1024  # the encoded results, the listed tests and the timings together
REASON_MAX = 4 * 1024  # bytes of a build's reason
LOG_TAIL_MAX = 16 * 1024  # bytes of the output's last lines kept in the build's record (and each leg's)
MAX_DURATION_S = 1_000_000.0  # 11 days: longer than any build may run
FIT_TRIES = 4
_SURROGATES = re.compile("[\ud800-\udfff]")


def clean(text: str) -> str:
    """`text` as it can be written: lone surrogates (JSON's "\\ud800") become U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", text)


def clip_message(text: str, limit: int = MESSAGE_MAX) -> tuple[str, int]:
    """`text` at most `limit` bytes: its head and tail with a marker between, and the bytes cut."""
    text = clean(text)
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text, 0
    half = max(0, (limit - 80) // 2)
    head = data[:half].decode("utf-8", "ignore")
    tail = data[len(data) - half:].decode("utf-8", "ignore") if half else ""
    cut = len(data) - len(head.encode()) - len(tail.encode())
    return f"{head}\n[volt: {cut} bytes of this message were cut here]\n{tail}", cut


def clip_id(test_id: str) -> tuple[str, bool]:
    """A test id at most ID_MAX characters, and whether it was shortened: its head and a hash of the whole."""
    test_id = clean(test_id)
    if len(test_id) <= ID_MAX:
        return test_id, False
    digest = hashlib.sha256(test_id.encode()).hexdigest()[:16]
    return f"{test_id[:ID_MAX - 18]}…#{digest}", True


def seconds(value: object) -> float | None:
    """`value` as a duration, if it is a finite number of seconds from 0 to MAX_DURATION_S (else None)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, int):
        return float(value) if 0 <= value <= MAX_DURATION_S else None
    return value if math.isfinite(value) and 0.0 <= value <= MAX_DURATION_S else None


class Keeper:
    """Takes a run's tests one by one, in the order they ran, and keeps what the bounds allow (see the
    module's docstring); `done()` gives the tests kept, in that order, and what was cut. Memory stays
    bounded however many tests it is given: at most `tests_max` are held, each cut to its bounds."""

    def __init__(self, tests_max: int = TESTS_MAX, listed_messages_max: int = LISTED_MESSAGES_MAX,
                 other_messages_max: int = OTHER_MESSAGES_MAX, distinct: bool = False):
        self.tests_max = tests_max
        # With `distinct` (a reader's), an id that comes again is kept as "ID [2]", "ID [3]"… (two subtests
        # with the same parameters): told apart by a hash of the id, for the first TESTS_MAX ids.
        self.seen: dict[int, int] | None = {} if distinct else None
        self.listed_room, self.other_room = listed_messages_max, other_messages_max
        self.listed: list[TestResult] = []  # failed and erroring tests kept
        self.others: list[TestResult] = []
        self.listed_seen = 0
        self.cut = Cut()

    def add(self, test: TestResult) -> str:
        """Take the next test; its id as kept (when it is kept)."""
        if self.seen is not None:
            key = hash(test.id)
            if key in self.seen or len(self.seen) < TESTS_MAX:
                times = self.seen[key] = self.seen.get(key, 0) + 1
                if times > 1:
                    test = replace(test, id=f"{test.id} [{times}]")
        test = self._bounded(test)
        listed = test.outcome in codec.LISTED
        if len(self.listed) + len(self.others) >= self.tests_max:
            if not listed or not self.others:
                self._drop(test)
                return test.id
            self._drop(self.others.pop())  # a failure is kept before a passing test
        (self.listed if listed else self.others).append(test)
        return test.id

    def _drop(self, test: TestResult) -> None:
        self.cut.tests_not_kept += 1
        self.cut.counts.add(test)
        if test.message:
            self.cut.message_bytes_cut += len(test.message.encode())

    def _bounded(self, test: TestResult) -> TestResult:
        """The test cut to the bounds on one test and, its message, to what the messages have left."""
        changes: dict[str, object] = {}
        if not (len(test.id) <= ID_MAX and test.id.isascii() and not test.subtest_of):  # most tests: nothing to do
            test_id, shortened = clip_id(test.id)
            parent, parent_shortened = clip_id(test.subtest_of) if test.subtest_of else ("", False)
            if test_id != test.id or parent != test.subtest_of:
                self.cut.ids_shortened += shortened
                changes.update(id=test_id, subtest_of=parent)
        duration = test.duration_s
        if not (type(duration) is float and 0.0 <= duration <= MAX_DURATION_S) and seconds(duration) is None:
            self.cut.values_dropped += 1
            changes["duration_s"] = 0.0
        message = test.message
        if message:
            listed = test.outcome in codec.LISTED
            if listed:
                self.listed_seen += 1
            message, cut = clip_message(message)
            if cut:
                self.cut.messages_shortened += 1
                self.cut.message_bytes_cut += cut
            size = len(message.encode())
            room = self.listed_room if listed else self.other_room
            if size > room or (listed and self.listed_seen > LISTED_MAX):
                self.cut.messages_dropped += 1
                self.cut.message_bytes_cut += size
                message = ""
            elif listed:
                self.listed_room -= size
            else:
                self.other_room -= size
            if message != test.message:
                changes["message"] = message
        return replace(test, **changes) if changes else test  # type: ignore[arg-type]

    def done(self) -> tuple[list[TestResult], Cut]:
        """The tests kept, in the order they ran (numbered again from 0), and what was cut."""
        tests = sorted(self.listed + self.others, key=lambda t: t.order)
        return [t if t.order == n else replace(t, order=n) for n, t in enumerate(tests)], self.cut


@dataclass
class Fitted:
    """A run's outcome cut to what a build keeps, and its encoded results (None: no tests) and timings."""

    outcome: RunOutcome
    results: dict[str, bytes] | None
    timings: bytes | None

    @property
    def size(self) -> int:
        return sum(map(len, (self.results or {}).values())) + len(self.timings or b"")


def fit(outcome: RunOutcome) -> Fitted:
    """`outcome` cut to the bounds and encoded, within RESULTS_MAX_BYTES (see the module's docstring).
    `outcome` itself is left as it was: storing it again (a retried write) cuts the same again."""
    tests_max, messages_max, others_max = TESTS_MAX, LISTED_MESSAGES_MAX, OTHER_MESSAGES_MAX
    for _ in range(FIT_TRIES):
        fitted = _fit_once(outcome, tests_max, messages_max, others_max)
        if fitted.size <= RESULTS_MAX_BYTES:
            return fitted
        ratio = 0.9 * RESULTS_MAX_BYTES / fitted.size
        tests_max = int(len(fitted.outcome.tests) * ratio)
        messages_max, others_max = int(messages_max * ratio), int(others_max * ratio)
    return _fit_once(outcome, 0, 0, 0)  # nothing of the tests but their counts


def _fit_once(outcome: RunOutcome, tests_max: int, messages_max: int, others_max: int) -> Fitted:
    keeper = Keeper(tests_max, messages_max, others_max)
    for test in outcome.tests:
        keeper.add(test)  # the keeper changes copies, never the caller's tests
    tests, cut = keeper.done()
    kept = {t.id for t in tests}
    timings = Timings({test_id: s for test_id, s in outcome.timings.tests.items()
                       if test_id in kept and seconds(s) is not None},
                      {file: s for file, s in outcome.timings.files.items()
                       if len(file) <= ID_MAX and seconds(s) is not None},
                      seconds(outcome.timings.start_s) or 0.0) if kept else Timings()
    reason, _ = clip_message(outcome.reason, REASON_MAX)
    log_tail, _ = clip_message(outcome.log_tail, LOG_TAIL_MAX)
    # The counts stay those of every test that ran: the tests cut here are counted in `cut.counts`.
    fitted = replace(outcome, tests=tests, reason=reason, log_tail=log_tail, timings=timings, cut=outcome.cut + cut)
    return Fitted(fitted, codec.encode_tests(tests) if tests else None,
                  codec.encode_timings(timings) if timings else None)
