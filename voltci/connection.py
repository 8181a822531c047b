"""Opening Redis connections from a URL, with every failure turned into one line.

Volt's own code reads strings (`decode_responses=True`); rq needs a bytes connection of its own.

A Redis made highly available with Sentinel is named by the Sentinels that watch it and its service:
`redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT…]/SERVICE[/DB]` (the password is the Redis
servers'; `?sentinel_password=…` the Sentinels' own, if they have one; `rediss+sentinel://` speaks TLS
to both, with `?ssl_ca_certs=FILE`). The client asks the Sentinels for the primary whenever it opens a
connection, and a connection to a primary that was demoted or died fails over to the new one at the
next try (redis-py's SentinelConnectionPool): every Volt process rides a failover out as it rides out a
Redis restart.

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
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.sentinel

from voltci.errors import BadInput, RedisUnavailable

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SCHEMES = ("redis", "rediss", "unix", *SENTINEL_SCHEMES)
SENTINEL_OPTIONS = ("sentinel_password", "sentinel_username", "ssl_ca_certs")
SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelURL:
    """What a `redis+sentinel://` URL names: the Sentinels, the service they watch, and how to log in."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    options: dict[str, str] = field(default_factory=dict)

    def sentinel_kwargs(self, timeout: float) -> dict[str, Any]:
        found: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        if "sentinel_password" in self.options:
            found["password"] = self.options["sentinel_password"]
        if "sentinel_username" in self.options:
            found["username"] = self.options["sentinel_username"]
        return {**found, **self._tls()}

    def server_kwargs(self) -> dict[str, Any]:
        return {"db": self.db, "username": self.username, "password": self.password, **self._tls()}

    def _tls(self) -> dict[str, Any]:
        if not self.tls:
            return {}
        return {"ssl": True, **({"ssl_ca_certs": self.options["ssl_ca_certs"]} if "ssl_ca_certs" in self.options
                                else {})}


def parse_sentinel_url(url: str) -> SentinelURL:
    """The parts of a `redis+sentinel://` URL; BadInput naming what is wrong (never the password)."""
    shown = redacted(url)
    scheme, sep, rest = url.partition("://")
    if scheme not in SENTINEL_SCHEMES or not sep:
        raise BadInput(f"malformed Redis URL {shown}: a Sentinel URL starts with redis+sentinel://")
    rest, _, query = rest.partition("?")
    where, _, path = rest.partition("/")
    userinfo, at, hosts = where.rpartition("@")
    if not at:
        userinfo, hosts = "", where
    username, colon, password = userinfo.partition(":")
    sentinels = []
    for item in hosts.split(","):
        item = item.strip()
        if item.startswith("["):  # [an IPv6 address]:port
            host, _, port = item[1:].partition("]")
            port = port.removeprefix(":")
        else:
            host, _, port = item.partition(":")
        if not host:
            raise BadInput(f"malformed Redis URL {shown}: a Sentinel's host is missing")
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise BadInput(f"malformed Redis URL {shown}: a Sentinel's port must be a number, got '{port}'")
        sentinels.append((host, int(port) if port else SENTINEL_PORT))
    parts = [part for part in path.split("/") if part]
    if not parts:
        raise BadInput(f"malformed Redis URL {shown}: no service name (…/SERVICE[/DB])")
    if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise BadInput(f"malformed Redis URL {shown}: after the service comes at most a database number")
    options = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - set(SENTINEL_OPTIONS))
    if unknown:
        raise BadInput(f"malformed Redis URL {shown}: unknown option '{unknown[0]}' (known: "
                       f"{', '.join(SENTINEL_OPTIONS)})")
    unquote = urllib.parse.unquote
    return SentinelURL(tuple(sentinels), unquote(parts[0]), int(parts[1]) if len(parts) == 2 else 0,
                       unquote(username) or None, unquote(password) if colon else None,
                       scheme == "rediss+sentinel", options)


def is_sentinel(url: str) -> bool:
    return url.partition("://")[0] in SENTINEL_SCHEMES


def redacted(url: str) -> str:
    """The URL with any password replaced (a Sentinel's in its query too), for messages and logs."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<malformed URL>"
    if parts.query:
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        parts = parts._replace(query="&".join(f"{k}={'***' if 'password' in k else v}" for k, v in query))
    if "@" not in parts.netloc or ":" not in parts.netloc.rsplit("@", 1)[0]:
        return urllib.parse.urlunsplit(parts)
    userinfo, netloc = parts.netloc.rsplit("@", 1)
    user = userinfo.split(":", 1)[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def check_url(url: str) -> None:
    if is_sentinel(url):
        parse_sentinel_url(url)
        return
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
        if is_sentinel(url):
            client = _sentinel_client(parse_sentinel_url(url), decode, timeout)
        else:
            client = redis.Redis.from_url(url, decode_responses=decode, socket_timeout=timeout,
                                          socket_connect_timeout=timeout, health_check_interval=30)
    except ValueError as exc:
        raise BadInput(f"malformed Redis URL {redacted(url)}: {exc}") from None
    if ping:
        try:
            client.ping()
        except redis.AuthenticationError as exc:
            raise RedisUnavailable(f"Redis at {redacted(url)} refused the credentials: {exc}") from None
        except redis.sentinel.MasterNotFoundError as exc:
            raise RedisUnavailable(f"no Sentinel of {redacted(url)} names a primary: {exc} (unreachable "
                                   "Sentinels, a service they do not know, or no quorum)") from None
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
    return sibling(client, decode=True)


def sibling(client: redis.Redis, decode: bool) -> redis.Redis:
    """A client of the same Redis as `client` — the same Sentinels' primary, for a Sentinel client —
    that decodes responses to strings or not."""
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "decode_responses": decode}
    if isinstance(pool, redis.sentinel.SentinelConnectionPool):
        kwargs.pop("connection_pool", None)
        return redis.Redis(connection_pool=redis.sentinel.SentinelConnectionPool(
            pool.service_name, pool.sentinel_manager, **kwargs))
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))


def _sentinel_client(url: SentinelURL, decode: bool, timeout: float) -> redis.Redis:
    """A client of the primary the Sentinels of `url` name, found again at every new connection."""
    manager = redis.sentinel.Sentinel(list(url.sentinels), sentinel_kwargs=url.sentinel_kwargs(timeout),
                                      socket_timeout=timeout, socket_connect_timeout=timeout, **url.server_kwargs())
    return manager.master_for(url.service, decode_responses=decode, socket_timeout=timeout,
                              socket_connect_timeout=timeout, health_check_interval=30)
