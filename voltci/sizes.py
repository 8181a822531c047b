"""Sizes and counts people write in settings and in a repository's .volt.toml: "2G", "512M", "50%" of
this host's memory, a disk limit, a number of processes; and sizes as people read them."""

from __future__ import annotations

import os
import re

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class BadLimit(ValueError):
    """A memory, disk or process limit that is not one, in one line."""


def parse_size(text: object, *, allow_percent: bool = False) -> int:
    """Bytes in "2G", "512M", "1.5GiB", "1073741824" (binary units), or, with `allow_percent`, "50%"
    of this host's memory."""
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise BadLimit(f"must be a size like \"2G\" or \"512M\", got {text!r}")
    value = str(text).strip()
    if allow_percent and value.endswith("%"):
        try:
            percent = float(value[:-1])
        except ValueError:
            raise BadLimit(f"must be a size like \"2G\" or a share of memory like \"50%\", got {text!r}") from None
        if not 0 < percent <= 100:
            raise BadLimit(f"a share of memory must be above 0% and at most 100%, got {text!r}")
        return int(host_memory() * percent / 100)
    size = _bytes(text, "\"2G\" or \"512M\"")
    if size < 16 << 20:
        raise BadLimit(f"must be at least 16M (a Python process needs more), got {text!r}")
    return size


def parse_disk(text: object) -> int:
    """Bytes of disk in "10G", "500M" (binary units); at least 16M, about what a virtual environment
    with pip takes."""
    size = _bytes(text, "\"10G\" or \"500M\"")
    if size < 16 << 20:
        raise BadLimit(f"must be at least 16M (a virtual environment takes about that), got {text!r}")
    return size


def _bytes(text: object, example: str) -> int:
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise BadLimit(f"must be a size like {example}, got {text!r}")
    match = _SIZE.fullmatch(str(text).strip())
    if not match:
        raise BadLimit(f"must be a size like {example}, got {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def parse_processes(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 16 <= value <= 1_000_000:
        raise BadLimit(f"must be a whole number from 16 to 1000000, got {value!r}")
    return value


def human_size(size: int) -> str:
    """"12G", "1.5G", "512M": the largest binary unit the size reaches, three significant digits."""
    for unit in ("T", "G", "M", "K"):
        if size >= _UNITS[unit]:
            return f"{size / _UNITS[unit]:.3g}{unit}"
    return f"{size}B"


def host_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
