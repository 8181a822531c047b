"""The moment a build's first failing test is known: written once on its record, with the time, and
told at once — to `volt up` and `volt log -f` (a message on the first-failures channel), to the
webhook (a `build.first_failure` message in the outbox, in the same transaction, so a scheduler that
changes meanwhile loses none) and to its forge (an urgent commit status).

Three writers find it: the runner's progress (builds.py `set_progress`, the moment its results file
shows it), a shard that ends before the others (shards.py), and a build's end (endings.py), for a
failure nobody saw while it ran. Whichever comes first writes it; the others find it there. A matrix
leg's first failure is its build's too, when the build has none yet: a matrix build's first failure is
the first that any of its legs found, and its time is measured from the build's own start.
"""

from __future__ import annotations

import json
from dataclasses import replace

from voltci import keys
from voltci.models import Build, Outcome, TestResult
from voltci.store import outbox, statuses
from voltci.store.tx import Txn

NAME_MAX = 1024  # a first failing test's id, as a build keeps ids (budget.py)
EVENT = "build.first_failure"  # the webhook message's event (webhooks.py)
FIELDS = ("failing", "first_failure", "first_failure_at", "tests_started_at")  # what a new attempt starts without


def first_failing(tests: list[TestResult]) -> str:
    """The id of the first test (in the order they ran) that failed or errored, or ""."""
    bad = [t for t in tests if t.outcome in (Outcome.FAILED, Outcome.ERROR) and not t.via_subtests]
    return min(bad, key=lambda t: t.order).id if bad else ""


def note(pipe: Txn, unit: Build, parent: Build | None, test_id: str, at: str) -> list[str]:
    """In the caller's transaction, after `pipe.multi()`: `test_id` failed, known at `at`, in `unit` (a
    build, or a matrix leg whose build is `parent`), both read under WATCH. Each of the two that has no
    first failure yet gets it; a build (never a leg) is told. The ids of the records written."""
    name = test_id[:NAME_MAX]
    written = []
    for record in (unit, parent):
        if record is None or record.first_failure or not name:
            continue
        pipe.hset(keys.build(record.id), mapping={"first_failure": name, "first_failure_at": at})
        written.append(record.id)
        if record.is_leg:
            continue
        known = replace(record, first_failure=name, first_failure_at=at)
        outbox.put(pipe, {"build": record.id, "event": EVENT, "attempt": record.attempt, "first_failure": name,
                          "first_failure_at": at, "first_failure_s": known.first_failure_s})
        pipe.publish(keys.first_failures(), json.dumps({"build": record.id, "test": name}))
    if written:
        statuses.mark(pipe, unit.id, urgent=True)
    return written


def forget(pipe: Txn, unit_id: str) -> None:
    """In the caller's transaction: a new attempt of `unit_id` starts without the last one's failures."""
    pipe.hdel(keys.build(unit_id), *FIELDS)
