"""Times and durations as people read them: "3 min ago", "1m 12s" — the same on the web page (where
the browser then shows them in the viewer's time zone) and in the terminal."""

from __future__ import annotations

from datetime import UTC, datetime


def parse(iso: str) -> datetime | None:
    """An ISO time as Volt stores it (UTC), or None when it is empty or not a time."""
    try:
        when = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def duration(seconds: float | None) -> str:
    """`320ms`, `4.2s`, `42s`, `1m 12s`, `2h 3m`; `—` for none."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "—"
    if seconds < 0.001:
        return "0ms" if seconds == 0 else "<1ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60}s"
    return f"{whole // 3600}h {whole % 3600 // 60}m"


def ago(iso: str, now: datetime | None = None) -> str:
    """How long ago `iso` was: `just now`, `3 min ago`, `5 h ago`, `2 days ago`; `—` for no time."""
    when = parse(iso)
    if when is None:
        return "—"
    seconds = ((now or datetime.now(UTC)) - when).total_seconds()
    if seconds < 0:
        return "in the future"
    for limit, size, unit in ((60, 1, "s"), (3600, 60, "min"), (86400, 3600, "h"), (86400 * 60, 86400, "day"),
                              (86400 * 730, 86400 * 30, "month")):
        if seconds < limit:
            count = int(seconds // size)
            if unit == "s":
                return "just now" if count < 10 else f"{count} s ago"
            return f"{count} {unit}{'s' if count != 1 and unit in ('day', 'month') else ''} ago"
    return f"{int(seconds // (86400 * 365))} years ago"


def exact(iso: str) -> str:
    """The exact time, in UTC, to the second (what a page shows on hover until its script shows the
    viewer's own time zone)."""
    when = parse(iso)
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if when else ""
