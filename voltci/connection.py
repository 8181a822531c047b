"""Opening Redis connections from a URL, with every failure turned into one line.

Volt's own code reads strings (`decode_responses=True`); rq needs a bytes connection of its own.

Whoever can write to Volt's Redis can queue jobs and rewrite any build's result, so every Volt
process says once, in one line on stderr, when the Redis it uses takes no password on an address
other hosts can reach, and when the password sits on its command line (every user of the host
reads that in `ps`).
"""

from __future__ import annotations

import ipaddress
import socket
import sys
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
        _ = parts.port  # raises ValueError on a bad port
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
        warn_if_unprotected(client)
    return client


_warned: set[str] = set()


def warn_once(topic: str, message: str) -> None:
    """One line on stderr, the first time this process has something to say about `topic`."""
    if topic in _warned:
        return
    _warned.add(topic)
    print(f"volt: warning: {message}", file=sys.stderr, flush=True)


def warn_if_unprotected(client: redis.Redis, argv: list[str] | None = None) -> None:
    """Call once Redis has answered `client`: warn when it took no password on an address that is
    not loopback, and when the password is on this process' command line."""
    kwargs = client.connection_pool.connection_kwargs
    password = kwargs.get("password")
    if password and _in_arguments(str(password), sys.argv if argv is None else argv):
        warn_once("password-in-arguments",
                  "the Redis URL on the command line carries its password, which every user of this host can "
                  "read (ps, /proc); set VOLT_REDIS_URL or redis_url in the config file instead "
                  "(for rq's own commands: RQ_REDIS_URL)")
    if password or kwargs.get("credential_provider") or "path" in kwargs:
        return
    host = str(kwargs.get("host", "localhost"))
    if not is_loopback(host):
        warn_once("no-password",
                  f"Redis at {host}:{kwargs.get('port', 6379)} takes no password and is not on loopback: anyone "
                  "who reaches it can queue jobs and rewrite any build's result; set requirepass and put the "
                  "password in VOLT_REDIS_URL")


def _in_arguments(password: str, argv: list[str]) -> bool:
    """Whether a URL carrying `password` (as given, or percent-encoded) is among `argv`."""
    forms = {f":{password}@", f":{urllib.parse.quote(password, safe='')}@"}
    return any(form in arg for arg in argv for form in forms)


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or a name) is only ever this machine's loopback interface."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(str(a).split("%", 1)[0]).is_loopback for a in addresses)


def decoded(client: redis.Redis) -> redis.Redis:
    """A string-decoding client on the same server as `client` (which may be rq's bytes client)."""
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    kwargs["decode_responses"] = True
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))
