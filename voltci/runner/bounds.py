"""Reading what a build wrote for the runner — the collectors' JSON lines, the listing of a suite's test
ids — with every bound decided before anything is parsed, and every value checked.

A commit may be hostile, and its tests may write these files as they like: a line of 100 MB with no
newline, JSON nested 100,000 deep, a duration of 1e999, an id that is a number, an outcome Volt does not
know, binary garbage. Each read here takes at most FILE_MAX bytes, LINE_MAX bytes a line, RECORDS_MAX
lines and DEPTH_MAX levels of nesting, and each record is checked against what the collectors write.
Whatever breaks a bound, or does not make sense, is a BadOutput naming the file, the line and what
was wrong — the build ends `error` with it — except values that are harmless to drop (a test's cost, a
file's collection time), which are dropped and counted. The tests kept go through the store's Keeper
(store/budget.py), so memory stays bounded however many the build reports.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from voltci.models import Outcome
from voltci.runner import untrusted
from voltci.store.budget import clean, seconds

FILE_MAX = 512 * 1024 * 1024  # bytes of one results file
LINE_MAX = 8 * 1024 * 1024  # bytes of one line (a record with a message of megabytes still fits)
RECORDS_MAX = 2_000_000  # lines of one file: far more tests than any suite has
DEPTH_MAX = 8  # the collectors' records nest 3 deep
CHUNK = 1024 * 1024
OUTCOMES = {outcome.value: outcome for outcome in (Outcome.PASSED, Outcome.FAILED, Outcome.ERROR, Outcome.SKIPPED)}
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")


class BadOutput(Exception):
    """What a build wrote breaks a bound or makes no sense: one line naming the file and the fault."""


def lines(source: BinaryIO, name: str, file_max: int = FILE_MAX) -> Iterator[tuple[int, bytes, bool]]:
    """The lines of `source` as (number from 1, bytes, whether a newline ended it), read CHUNK bytes at a
    time: at most `file_max` bytes, LINE_MAX a line, RECORDS_MAX lines (BadOutput past any of them)."""
    pending = b""
    number = 0
    total = 0
    while True:
        chunk = source.read(CHUNK)
        total += len(chunk)
        if total > file_max:
            raise BadOutput(f"{name} is larger than {file_max // (1024 * 1024)} MiB")
        if not chunk:
            break
        pending += chunk
        *whole, pending = pending.split(b"\n")
        for line in whole:
            number += 1
            if number > RECORDS_MAX:
                raise BadOutput(f"{name} has more than {RECORDS_MAX} lines")
            if len(line) > LINE_MAX:
                raise BadOutput(f"{name} line {number} is longer than {LINE_MAX // (1024 * 1024)} MiB")
            yield number, line, True
        if len(pending) > LINE_MAX:
            raise BadOutput(f"{name} line {number + 1} is longer than {LINE_MAX // (1024 * 1024)} MiB")
    if pending:
        yield number + 1, pending, False


def nested_deeper_than(line: bytes, depth: int = DEPTH_MAX) -> bool:
    """Whether JSON text `line` nests arrays and objects more than `depth` deep (brackets in strings do
    not count). Decided before parsing: the parser itself would recurse once per level."""
    if line.count(b"[") + line.count(b"{") <= depth:
        return False
    level = 0
    for bracket in _BRACKETS.finditer(_STRINGS.sub(b'""', line)):
        level += 1 if bracket.group() in (b"[", b"{") else -1
        if level > depth:
            return True
    return False


def short(value: Any) -> str:
    """A value as a fault names it: its repr, at most 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def text_of(record: dict[str, Any], key: str, required: bool = False) -> str:
    """`record[key]`, which must be a string (BadOutput naming the key otherwise)."""
    value = record.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise BadOutput(f"{key} is not a string ({short(value)})")
    return clean(value)


def duration_of(record: dict[str, Any], key: str = "duration_s") -> float:
    """`record[key]`: a finite number of seconds, not negative, not absurd (BadOutput otherwise)."""
    value = record.get(key, 0.0)
    found = seconds(value)
    if found is None:
        raise BadOutput(f"{key} is not a number of seconds from 0 to 1000000 ({short(value)})")
    return found


def pairs_of(summary: dict[str, Any], key: str) -> list[tuple[str, str]]:
    """`summary[key]`: a list of [name, message] pairs of strings (BadOutput otherwise)."""
    value = summary.get(key) or []
    if not isinstance(value, list) or not all(
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(part, str) for part in pair)
            for pair in value):
        raise BadOutput(f"summary's {key} is not a list of [name, message] pairs of strings")
    return [(clean(name), clean(message)) for name, message in value]


def count_of(summary: dict[str, Any], key: str, required: bool = False) -> int | None:
    value = summary.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 10 * RECORDS_MAX:
        raise BadOutput(f"summary's {key} is not a count ({short(value)})")
    return value


def read_listing(path: Path, inside: Path, ids_max: int, id_max: int) -> list[str]:
    """The test ids a listing run wrote (one {"id": …} a line), for splitting a suite; empty when the
    file breaks a bound, holds anything else, more than `ids_max` ids or an id longer than `id_max`
    (such a suite is run whole: a shard plan of shortened ids would match no test)."""
    ids: list[str] = []
    try:
        with untrusted.open_binary(path, inside) as source:
            for number, line, _ in lines(source, path.name):
                record = parse(line, path.name, number)
                test_id = record.get("id") if isinstance(record, dict) else None
                if not isinstance(test_id, str) or len(test_id) > id_max or len(ids) >= ids_max:
                    return []
                ids.append(clean(test_id))
    except (OSError, BadOutput):
        return []
    return ids


def parse(line: bytes, name: str, number: int) -> Any:
    """One line of JSON, refused (BadOutput) when it nests deeper than DEPTH_MAX or is not JSON."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise BadOutput(f"{name} line {number} is not JSON (it is not UTF-8)") from None
    if nested_deeper_than(line):
        raise BadOutput(f"{name} line {number} nests deeper than {DEPTH_MAX} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or a number of more than 4300 digits
        raise BadOutput(f"{name} line {number} is not JSON") from None
