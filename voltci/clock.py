"""Volt's one clock: times are stored as ISO-8601 strings in UTC with milliseconds, and read back here.

Every record's times come from `now_iso`; ages and durations come from `seconds_between`, which
takes a time Volt did not write (empty, or malformed by hand) as no time at all rather than failing.
"""

from __future__ import annotations

from datetime import UTC, datetime


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def parse(iso: str) -> datetime | None:
    """The moment `iso` names, or None for an empty or malformed one."""
    try:
        return datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return None


def seconds_between(start_iso: str, end_iso: str) -> float:
    """`end - start` in seconds (ms precision); 0 when either is unknown, or one of them names no zone."""
    start, end = parse(start_iso), parse(end_iso)
    if start is None or end is None or (start.tzinfo is None) != (end.tzinfo is None):
        return 0.0
    return round((end - start).total_seconds(), 3)


def age_s(iso: str, now: datetime | None = None) -> float:
    """Seconds since `iso` (until `now`); infinite when it is unknown, so an unknown time is never fresh."""
    then = parse(iso)
    if then is None:
        return float("inf")
    return ((now or datetime.now(UTC)) - then).total_seconds()
