"""The errors a person can see. Each carries the exit status its process ends with.

Library errors (redis, git, rq) are translated into these where they enter Volt, so the CLI
has one thing to catch and always prints one line. (`volt report`'s statuses for a build that
failed or has not finished, 1 and 3, are its report, not errors: report.py.)
"""

from __future__ import annotations


class VoltError(Exception):
    """A failure explained in one line; `exit_code` is what the process exits with."""

    exit_code = 1


class BadInput(VoltError):
    """Something the user typed or configured is wrong (unknown commit, bad path, bad URL)."""

    exit_code = 2


class RedisUnavailable(VoltError):
    """Redis cannot be reached or answered with an error (the report contract: 2, as bad input)."""

    exit_code = 2


class GitError(VoltError):
    """A git command failed; the message carries git's own last line."""

    exit_code = 2


class WorkspaceBusy(VoltError):
    """Every workspace of a repository on this host stayed held by other builds for the whole wait."""


class RedisLost(VoltError):
    """A runner could not reach Redis for longer than redis_outage_limit: EX_TEMPFAIL, for its
    supervisor (systemd, `volt up`) to start it again."""

    exit_code = 75


class CannotSandbox(VoltError):
    """This host cannot sandbox builds, and the runner was not told to build without: EX_CONFIG,
    starting again will not help until the host or the settings change."""

    exit_code = 78


class Interrupted(VoltError):
    """Ctrl-C: 128 + SIGINT, as shells report it."""

    exit_code = 130
