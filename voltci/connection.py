"""Opening Redis connections from a URL, with every failure turned into one line.

Volt's own code reads strings (`decode_responses=True`); rq needs a bytes connection of its own.
"""

from __future__ import annotations

import urllib.parse

import redis

from voltci.errors import BadInput, RedisUnavailable

SCHEMES = ("redis", "rediss", "unix")


def redacted(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<malformed URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def check_url(url: str) -> None:
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # raises ValueError on a bad port
    except ValueError:
        raise BadInput(f"malformed Redis URL: {redacted(url)}") from None
    if parts.scheme not in SCHEMES:
        raise BadInput(f"malformed Redis URL {redacted(url)}: the scheme must be one of {', '.join(SCHEMES)}")
    if parts.scheme != "unix" and not parts.hostname:
        raise BadInput(f"malformed Redis URL {redacted(url)}: no host")
    db = parts.path.lstrip("/")
    if parts.scheme != "unix" and db and not db.isdigit():
        raise BadInput(f"malformed Redis URL {redacted(url)}: the database must be a number, got '{db}'")


def connect(url: str, decode: bool = True, timeout: float = 5.0, ping: bool = True) -> redis.Redis:
    """A client for `url`; with `ping`, proves Redis answers or raises RedisUnavailable."""
    check_url(url)
    try:
        client = redis.Redis.from_url(url, decode_responses=decode, socket_timeout=timeout,
                                      socket_connect_timeout=timeout, health_check_interval=30)
    except ValueError as exc:
        raise BadInput(f"malformed Redis URL {redacted(url)}: {exc}") from None
    if ping:
        try:
            client.ping()
        except redis.AuthenticationError as exc:
            raise RedisUnavailable(f"Redis at {redacted(url)} refused the credentials: {exc}") from None
        except redis.RedisError as exc:
            raise RedisUnavailable(f"cannot reach Redis at {redacted(url)}: {exc}") from None
    return client


def decoded(client: redis.Redis) -> redis.Redis:
    """A string-decoding client on the same server as `client` (which may be rq's bytes client)."""
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    kwargs["decode_responses"] = True
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))
