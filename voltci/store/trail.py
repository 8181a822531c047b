"""A repository's test trail: each test's outcome and duration in the repository's newest TRAIL_BUILDS
builds, kept so that one test's row across them is cheap to read.

Why: a test's history, the flaky and slow views and a build page's "first failed in" each need a few
tests across many builds, and a build's results are one compressed blob of all its tests (codec.py):
27,000 tests take ~30 ms to decode, so a history of 100 builds read that way would take seconds. The
trail numbers each test of the repository once — `trail-ids`, the ids in the order first seen; a test
keeps its number — and keeps per build one column aligned to those numbers: an outcome code and the
whole milliseconds of each test, zlib-compressed (about 10 KB a build of 25,000 tests). Reading a
test's row is one decode of the ids and one small decompression per build.

It is written when a build's result has been stored, after and apart from that write: a trail that
missed a build (Redis refused the write) shows it as not recorded, and nothing else depends on it.
It holds only the newest TRAIL_BUILDS builds, retention drops the columns of the builds it prunes, and
when more than half of the numbers belong to tests no kept column has (renamed tests, ids that change
every run) the tests are numbered again. It numbers at most TRAIL_IDS_MAX tests: a repository whose
ids change every build (a hostile commit's, say) keeps fewer builds in its trail, never more ids.
"""

from __future__ import annotations

import functools
import logging
import sys
import zlib
from array import array
from dataclasses import dataclass
from typing import Any, cast

import redis

from voltci import keys
from voltci.models import Build, Outcome, TestResult
from voltci.store import codec
from voltci.store.records import Records
from voltci.store.tx import Client, Txn, guarded, raw

log = logging.getLogger("volt.store")

TRAIL_BUILDS = 100
TRAIL_IDS_MAX = 500_000  # tests numbered at most: ids that change every build leave fewer builds in the trail
RENUMBER_SLACK = 1000  # numbers beyond twice the suite's size (and this many) make a writer look for dead ones
COLUMN_FORMAT = 1
MAX_MS = 2**32 - 1
_CODES = {Outcome.PASSED: ord("p"), Outcome.FAILED: ord("f"), Outcome.ERROR: ord("e"), Outcome.SKIPPED: ord("s"),
          Outcome.FLAKY: ord("k")}
_OUTCOMES = {code: outcome for outcome, code in _CODES.items()}
ABSENT = ord("-")
_RANK = {_CODES[Outcome.SKIPPED]: 0, _CODES[Outcome.PASSED]: 1, _CODES[Outcome.FLAKY]: 2, _CODES[Outcome.FAILED]: 3,
         _CODES[Outcome.ERROR]: 4}


@dataclass(frozen=True)
class Cell:
    """One test in one build: its outcome (None: the build did not run it, or it was not recorded)."""

    outcome: Outcome | None
    ms: int = 0


class Column:
    """One build's column: its outcome codes and its milliseconds (as four byte planes: they compress),
    compressed apart, so that reading outcomes alone (strips, streaks) decompresses only the codes.

    Layout: a format byte, the length of the compressed codes (4 bytes, little-endian), the codes,
    then the planes."""

    def __init__(self, blob: bytes | None):
        self._codes_z, self._ms_z = b"", b""
        if blob:
            if blob[0] != COLUMN_FORMAT:
                raise codec.CorruptRecord(f"a trail column in format {blob[0]}; this Volt reads {COLUMN_FORMAT}")
            split = 5 + int.from_bytes(blob[1:5], "little")
            self._codes_z, self._ms_z = blob[5:split], blob[split:]
        self._codes: bytes | None = None
        self._ms: bytes | None = None

    def codes(self) -> bytes:
        """Every number's outcome code (b"-": not in this build)."""
        if self._codes is None:
            self._codes = _inflate(self._codes_z)
        return self._codes

    @property
    def size(self) -> int:
        return len(self.codes())

    def _planes(self) -> bytes:
        if self._ms is None:
            self._ms = _inflate(self._ms_z)
        return self._ms

    def outcome(self, number: int) -> Outcome | None:
        codes = self.codes()
        return _OUTCOMES.get(codes[number]) if 0 <= number < len(codes) else None

    def cell(self, number: int) -> Cell:
        outcome = self.outcome(number)
        if outcome is None:
            return Cell(None)
        d, n = self._planes(), self.size
        return Cell(outcome, d[number] | d[n + number] << 8 | d[2 * n + number] << 16 | d[3 * n + number] << 24)

    def numbers(self) -> list[int]:
        """The numbers of the tests this build has."""
        return [n for n, code in enumerate(self.codes()) if code != ABSENT]

    def millis(self) -> array:
        """Every number's milliseconds, at once (the planes put back together)."""
        d, n = self._planes(), self.size
        joined = bytearray(4 * n)
        for k in range(4):
            joined[k::4] = d[k * n:(k + 1) * n]
        found = array("I")
        found.frombytes(bytes(joined))
        if sys.byteorder == "big":
            found.byteswap()
        return found

    @staticmethod
    def encode(size: int, cells: dict[int, tuple[int, int]]) -> bytes:
        """`cells`: number -> (outcome code, milliseconds)."""
        codes = bytearray(b"-" * size)
        planes = [bytearray(size) for _ in range(4)]
        for number, (code, ms) in cells.items():
            codes[number] = code
            ms = min(max(ms, 0), MAX_MS)
            planes[0][number], planes[1][number] = ms & 255, ms >> 8 & 255
            planes[2][number], planes[3][number] = ms >> 16 & 255, ms >> 24
        codes_z = zlib.compress(bytes(codes), codec.LEVEL)
        return (bytes([COLUMN_FORMAT]) + len(codes_z).to_bytes(4, "little") + codes_z
                + zlib.compress(b"".join(planes), codec.LEVEL))


def _inflate(blob: bytes) -> bytes:
    try:
        return zlib.decompress(blob) if blob else b""
    except zlib.error as exc:
        raise codec.CorruptRecord(f"a trail column does not decode: {exc}") from None


@dataclass
class TestTable:
    """One build's tests as its trail column holds them, in trail order: ids, outcomes, milliseconds."""

    __test__ = False

    ids: list[str]
    codes: bytes
    millis: list[int]

    def cell(self, index: int) -> Cell:
        return Cell(_OUTCOMES.get(self.codes[index]), self.millis[index])

    def __len__(self) -> int:
        return len(self.ids)


class Trail:
    """A repository's test trail, written once a build's result is stored. `Trail(client, records)`."""

    def __init__(self, client: Client, records: Records):
        self.r = client
        self.records = records

    # ------------------------------------------------------------ writing

    def record_quietly(self, build_id: str, tests: list[TestResult] | None = None) -> bool:
        """record, for the writers of a build's result: the result is stored by then, so a trail
        Redis refuses to write is one log line, not an error of the build."""
        try:
            return self.record(build_id, tests)
        except (redis.RedisError, codec.CorruptRecord) as exc:
            log.warning("the test trail of %s was not recorded: %s", build_id, exc)
            return False

    def record(self, build_id: str, tests: list[TestResult] | None = None) -> bool:
        """Add an ended build to its repository's trail (its stored results are read when `tests` is
        None). False when there is nothing to add: no such build, not ended, pruned, or older than the
        trail's builds."""
        build = self.records.get_build(build_id)
        if build is None or not build.status.is_final:
            return False
        if tests is None:
            tests = self.records.get_tests(build_id)
        results: dict[str, tuple[int, int]] = {}
        for test in tests:  # a matrix build has a test once per leg: the trail keeps its worst outcome
            cell = (_CODES[test.outcome], round(test.duration_s * 1000))
            if test.id not in results or _RANK[cell[0]] > _RANK[results[test.id][0]]:
                results[test.id] = cell
        ids_key, order_key, trail_key = (keys.repo_trail_ids(build.repo), keys.repo_trail_order(build.repo),
                                         keys.repo_trail(build.repo))

        def body(pipe: Txn) -> bool:
            score = pipe.zscore(keys.repo_history(build.repo), build_id)
            if score is None:
                return False
            known = codec.decode_ids(raw(pipe, "GET", ids_key))
            scored = cast(list[tuple[str, float]], pipe.zrange(order_key, 0, -1, withscores=True))
            order = dict(scored)
            order[build_id] = float(score)
            newest_first = sorted(order, key=lambda b: order[b], reverse=True)
            dropped = newest_first[TRAIL_BUILDS:]
            if build_id in dropped:
                return False
            number = {test_id: n for n, test_id in enumerate(known)}
            ids = known + [test_id for test_id in results if test_id not in number]
            for n in range(len(known), len(ids)):
                number[ids[n]] = n
            columns = {build_id: Column.encode(len(ids), {number[t]: cell for t, cell in results.items()})}
            if len(ids) > 2 * len(results) + RENUMBER_SLACK:
                others = [b for b in newest_first[:TRAIL_BUILDS] if b != build_id]
                blobs = _blobs(pipe, trail_key, others)
                if len(ids) > TRAIL_IDS_MAX:  # ids that change every build: the oldest columns go first
                    kept = _newest_within(blobs, others, columns[build_id], TRAIL_IDS_MAX)
                    dropped += [b for b in others if b not in kept]
                    blobs = {b: blobs[b] for b in kept}
                renumbered = _renumber(ids, {**blobs, build_id: columns[build_id]}, force=len(ids) > TRAIL_IDS_MAX)
                if renumbered is not None:
                    ids, columns = renumbered
            pipe.multi()
            if len(ids) != len(known) or ids != known:
                pipe.set(ids_key, codec.encode_ids(ids))
            pipe.hset(trail_key, mapping=cast(Any, columns))
            pipe.zadd(order_key, {build_id: float(score)})
            if dropped:
                pipe.hdel(trail_key, *dropped)
                pipe.zrem(order_key, *dropped)
            return True

        return guarded(self.r, [ids_key, order_key], body)

    # ------------------------------------------------------------ reading

    def builds(self, repo: str, branch: str | None = None) -> list[Build]:
        """The ended builds of the trail, newest first (of one branch, when given), without their output."""
        newest = cast(list[str], self.r.zrevrange(keys.repo_trail_order(repo), 0, TRAIL_BUILDS - 1))
        builds = self.records.light(newest)
        return [b for b in builds if b.status.is_final and (branch is None or b.branch == branch)]

    def ids(self, repo: str) -> list[str]:
        """Every test id the trail numbers, in the order first seen."""
        return list(_decoded_ids(raw(self.r, "GET", keys.repo_trail_ids(repo)) or b""))

    def rows(self, repo: str, test_ids: list[str], builds: list[Build],
             durations: bool = True) -> dict[str, list[Cell]]:
        """Each of `test_ids` the trail knows, with its cell in each of `builds` (in their order);
        without `durations`, outcomes only (every `ms` 0: the columns' durations are not decompressed)."""
        known = self.ids(repo)
        wanted = set(test_ids)
        number = {test_id: n for n, test_id in enumerate(known) if test_id in wanted}
        columns = _columns(self.r, keys.repo_trail(repo), [b.id for b in builds])

        def cell(build: Build, n: int) -> Cell:
            column = columns.get(build.id)
            if column is None:
                return Cell(None)
            return column.cell(n) if durations else Cell(column.outcome(n))

        return {test_id: [cell(b, n) for b in builds] for test_id, n in number.items()}

    def table(self, build: Build) -> TestTable | None:
        """The build's own tests from its trail column (None when the trail does not hold the build)."""
        blob = raw(self.r, "HGET", keys.repo_trail(build.repo), build.id)
        if blob is None:
            return None
        column = Column(blob)
        ids = self.ids(build.repo)
        codes, millis = column.codes(), column.millis()
        numbers = [n for n in column.numbers() if n < len(ids)]
        return TestTable([ids[n] for n in numbers], bytes(codes[n] for n in numbers), [millis[n] for n in numbers])


@functools.lru_cache(maxsize=4)
def _decoded_ids(blob: bytes) -> tuple[str, ...]:
    """The ids of a trail's blob, decoded once per process while it is unchanged: a page and each
    search keystroke read them (25,000 ids: ~15 ms to decode, ~0.1 ms to hash)."""
    return tuple(codec.decode_ids(blob))


def _columns(client: redis.Redis | Txn, trail_key: str, build_ids: list[str]) -> dict[str, Column]:
    if not build_ids:
        return {}
    blobs = raw(client, "HMGET", trail_key, *build_ids)
    return {build_id: Column(blob) for build_id, blob in zip(build_ids, blobs, strict=True) if blob is not None}


def _blobs(client: redis.Redis | Txn, trail_key: str, build_ids: list[str]) -> dict[str, bytes]:
    """The columns of `build_ids`, compressed as stored (a build the trail does not hold is left out)."""
    if not build_ids:
        return {}
    found = raw(client, "HMGET", trail_key, *build_ids)
    return {build_id: blob for build_id, blob in zip(build_ids, found, strict=True) if blob is not None}


def _newest_within(blobs: dict[str, bytes], newest_first: list[str], own: bytes, most: int) -> list[str]:
    """The newest of the builds that, with the build being added, have at most `most` tests between them."""
    live = set(Column(own).numbers())
    kept = []
    for build_id in newest_first:
        if build_id not in blobs:
            continue
        numbers = live.union(Column(blobs[build_id]).numbers())
        if len(numbers) > most:
            break
        live = numbers
        kept.append(build_id)
    return kept


def _renumber(ids: list[str], columns: dict[str, bytes],
              force: bool = False) -> tuple[list[str], dict[str, bytes]] | None:
    """The ids of the tests some column has, numbered again, and every column rewritten to them — or
    None when at least half of the numbers are still in use (unless `force`). Columns are decoded one at
    a time, so memory holds one decoded column, whatever the trail holds."""
    live = sorted({n for blob in columns.values() for n in Column(blob).numbers() if n < len(ids)})
    if len(live) * 2 > len(ids) and not force:
        return None
    renumbered = {old: new for new, old in enumerate(live)}
    rewritten = {}
    for build_id, blob in columns.items():
        column, cells = Column(blob), {}
        for old in column.numbers():
            if old in renumbered:
                cell = column.cell(old)
                if cell.outcome is not None:
                    cells[renumbered[old]] = (_CODES[cell.outcome], cell.ms)
        rewritten[build_id] = Column.encode(len(live), cells)
    return [ids[n] for n in live], rewritten
