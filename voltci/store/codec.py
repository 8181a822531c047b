"""Compact encodings of what a finished build keeps: its per-test results, its output, a repository's
recorded timings and a split build's shard plans.

Why: a 27,000-test build kept as one Redis hash field per test took 6 MB, and its repository's
durations another 4 MB. The test ids of one suite share long prefixes, so ids are front-coded (each
says how much of the one before it it keeps), the results are stored as columns, and everything is
zlib-compressed (the standard library's: fast to decode, nothing to install): about 45 KB for the
same build. The tests a report lists by name — failed, erroring and flaky ones, with their
tracebacks — are a blob of their own, so they can be read without decoding every passing test. A
matrix build's results carry each test's leg (a column of indexes into the legs' names), and the
same test in two legs is two entries.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterable
from typing import Any

from voltci.errors import VoltError
from voltci.models import Outcome, TestResult, Timings

FORMAT = 1
LEVEL = 6  # zlib's default: within a few per cent of 9 on test ids, several times faster
_CODES = {Outcome.PASSED: "p", Outcome.FAILED: "f", Outcome.ERROR: "e", Outcome.SKIPPED: "s", Outcome.FLAKY: "k"}
_OUTCOMES = {code: outcome for outcome, code in _CODES.items()}
LISTED = (Outcome.FAILED, Outcome.ERROR, Outcome.FLAKY)  # what `volt report` names: kept apart
LISTED_MAX = 5000  # of them, the first ones are kept with their messages (budget.py); the others as any test


class CorruptRecord(VoltError):
    """A stored blob that does not decode (written by a newer Volt, or damaged)."""


def _pack(data: Any) -> bytes:
    return zlib.compress(json.dumps(data, separators=(",", ":")).encode(), LEVEL)


def _unpack(blob: bytes) -> Any:
    try:
        return json.loads(zlib.decompress(blob))
    except (zlib.error, ValueError) as exc:
        raise CorruptRecord(f"a stored record does not decode: {exc}") from None


def front_code(ids: Iterable[str]) -> tuple[list[int], list[str]]:
    """Each id as (characters it shares with the one before, the rest)."""
    kept: list[int] = []
    rest: list[str] = []
    previous = ""
    for test_id in ids:
        n = _shared_prefix(previous, test_id)
        kept.append(n)
        rest.append(test_id[n:])
        previous = test_id
    return kept, rest


def _shared_prefix(a: str, b: str) -> int:
    """How many leading characters `a` and `b` share: a binary search of slice comparisons, which run
    in C (a character-by-character loop took 0.17 s for 27,000 ids)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def front_decode(kept: list[int], rest: list[str]) -> list[str]:
    ids: list[str] = []
    previous = ""
    for n, tail in zip(kept, rest, strict=False):
        previous = previous[:n] + tail
        ids.append(previous)
    return ids


def _seconds_out(value: float) -> int | float:
    """Whole microseconds when that is exact (it is for the six decimals results carry): they compress. A
    value that is no finite number of seconds is 0 (budget.py cuts them before)."""
    if not math.isfinite(value):
        return 0
    micros = round(value * 1_000_000)
    return micros if micros / 1_000_000 == value else value


def _seconds_in(value: int | float) -> float:
    return value / 1_000_000 if isinstance(value, int) else float(value)


def _unique_in_order(tests: list[TestResult]) -> list[TestResult]:
    """One result per id and leg (the last one written, as a hash keyed by id kept it), in the order they ran."""
    return sorted({(t.leg, t.id): t for t in tests}.values(), key=lambda t: t.order)


def _listed_entry(index: int, test: TestResult) -> dict[str, Any]:
    entry: dict[str, Any] = {"i": index, "id": test.id, "o": _CODES[test.outcome], "d": test.duration_s,
                             "m": test.message, "r": test.order}
    if test.subtest_of:
        entry["sub"] = test.subtest_of
    if test.via_subtests:
        entry["via"] = 1
    if test.leg:
        entry["g"] = test.leg
    return entry


def _listed_result(entry: dict[str, Any]) -> TestResult:
    return TestResult(entry["id"], _OUTCOMES[entry["o"]], float(entry["d"]), entry.get("m", ""), int(entry["r"]),
                      entry.get("sub", ""), bool(entry.get("via")), entry.get("g", ""))


def encode_tests(tests: list[TestResult]) -> dict[str, bytes]:
    """A build's results as the fields of its compact results hash: "all", and "listed" (see LISTED)."""
    ordered = _unique_in_order(tests)
    kept, rest = front_code(t.id for t in ordered)
    columns: dict[str, Any] = {"v": FORMAT, "n": len(ordered), "p": kept, "s": rest,
                               "o": "".join(_CODES[t.outcome] for t in ordered),
                               "d": [_seconds_out(t.duration_s) for t in ordered]}
    orders = [t.order for t in ordered]
    if orders != list(range(len(ordered))):
        columns["r"] = orders
    messages = {str(i): t.message for i, t in enumerate(ordered) if t.message and t.outcome not in LISTED}
    subtests = {str(i): t.subtest_of for i, t in enumerate(ordered) if t.subtest_of}
    via = [i for i, t in enumerate(ordered) if t.via_subtests]
    for name, value in (("m", messages), ("sub", subtests), ("via", via)):
        if value:
            columns[name] = value
    if any(t.leg for t in ordered):
        legs = list(dict.fromkeys(t.leg for t in ordered))
        columns["g"], columns["gi"] = legs, [legs.index(t.leg) for t in ordered]
    listed = [_listed_entry(i, t) for i, t in enumerate(ordered) if t.outcome in LISTED][:LISTED_MAX]
    return {"all": _pack(columns), "listed": _pack(listed)}


def decode_listed(blob: bytes | None) -> list[TestResult]:
    """Only the failed, erroring and flaky tests, with their messages, in the order they ran."""
    return [_listed_result(entry) for entry in _unpack(blob)] if blob else []


def decode_tests(fields: dict[bytes, bytes] | dict[str, bytes]) -> list[TestResult]:
    """Every test of a results hash, in the order they ran."""
    blobs = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}
    if "all" not in blobs:
        return []
    columns = _unpack(blobs["all"])
    if columns.get("v") != FORMAT:
        raise CorruptRecord(f"results written in format {columns.get('v')!r}; this Volt reads format {FORMAT}")
    ids = front_decode(columns["p"], columns["s"])
    orders = columns.get("r") or range(len(ids))
    messages, subtests = columns.get("m", {}), columns.get("sub", {})
    via = set(columns.get("via", ()))
    legs, leg_of = columns.get("g", []), columns.get("gi") or [None] * len(ids)
    tests = [TestResult(test_id, _OUTCOMES[code], _seconds_in(seconds), messages.get(str(i), ""), order,
                        subtests.get(str(i), ""), i in via, legs[leg] if leg is not None else "")
             for i, (test_id, code, seconds, order, leg)
             in enumerate(zip(ids, columns["o"], columns["d"], orders, leg_of, strict=False))]
    for entry in _unpack(blobs["listed"]) if blobs.get("listed") else []:
        tests[entry["i"]].message = entry.get("m", "")
    return tests


def encode_ids(ids: list[str]) -> bytes:
    """A list of test ids (a shard's plan)."""
    kept, rest = front_code(ids)
    return _pack({"p": kept, "s": rest})


def decode_ids(blob: bytes | None) -> list[str]:
    if not blob:
        return []
    data = _unpack(blob)
    return front_decode(data["p"], data["s"])


def encode_timings(timings: Timings) -> bytes:
    """A run's timings (models.Timings): test id -> seconds, ids sorted (they front-code best), file ->
    seconds of collection, and the seconds of the process's own start ("t", where known)."""
    ids = sorted(timings.tests)
    kept, rest = front_code(ids)
    data: dict[str, Any] = {"p": kept, "s": rest, "d": [_seconds_out(timings.tests[i]) for i in ids]}
    if timings.files:
        data["f"] = {file: _seconds_out(seconds) for file, seconds in sorted(timings.files.items())}
    if timings.start_s:
        data["t"] = _seconds_out(timings.start_s)
    return _pack(data)


def decode_timings(blob: bytes | None) -> Timings:
    if not blob:
        return Timings()
    data = _unpack(blob)
    tests = dict(zip(front_decode(data["p"], data["s"]), map(_seconds_in, data["d"]), strict=False))
    return Timings(tests, {file: _seconds_in(seconds) for file, seconds in data.get("f", {}).items()},
                   _seconds_in(data.get("t", 0)))


def compress_log(data: bytes) -> bytes:
    return zlib.compress(data, LEVEL)


def decompress_log(blob: bytes) -> bytes:
    try:
        return zlib.decompress(blob)
    except zlib.error as exc:
        raise CorruptRecord(f"a stored log does not decode: {exc}") from None
