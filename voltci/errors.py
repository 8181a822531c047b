"""The errors a person can see. Each carries the exit status the CLI gives it.

Library errors (redis, git, rq) are translated into these where they enter Volt, so the CLI
has one thing to catch and always prints one line.
"""

from __future__ import annotations

EXIT_BAD_INPUT = 2


class VoltError(Exception):
    """A failure explained in one line; `exit_code` is what the CLI exits with."""

    exit_code = EXIT_BAD_INPUT


class BadInput(VoltError):
    """Something the user typed or configured is wrong (unknown commit, bad path, bad URL)."""


class RedisUnavailable(VoltError):
    """Redis cannot be reached or answered with an error."""


class GitError(VoltError):
    """A git command failed; the message carries git's own last line."""
