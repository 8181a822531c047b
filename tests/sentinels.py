"""A Redis made highly available with Sentinel, on loopback, for the tests and benchmarks of failover:
a primary, its replicas and three Sentinels, each a real redis-server in a directory of its own, all
wanting one password (as a deployment's do).

    with SentinelGroup(tmp_path) as group:
        url = group.url                     # redis+sentinel://:PASSWORD@127.0.0.1:P1,…/volt
        old = group.fail_over()             # SIGKILL the primary, wait for the Sentinels to promote one
        group.rejoin(old)                   # start the killed one again, as a replica of the new primary
"""

from __future__ import annotations

import secrets
import subprocess
import time
import urllib.parse
from pathlib import Path

import redis

from voltci.redis_server import RedisServer, find_redis_server, free_port

SERVICE = "volt"
DOWN_AFTER_MS = 1000  # how long the Sentinels wait before they call the primary down
FAILOVER_TIMEOUT_MS = 5000
WAIT_S = 60.0


class SentinelGroup:
    """A primary, `replicas` replicas and `sentinels` Sentinels (quorum 2) on loopback."""

    def __init__(self, base: Path, replicas: int = 1, sentinels: int = 3, password: str | None = None):
        self.base = Path(base)
        self.password = password or secrets.token_hex(12)
        self.servers = [self._server(n) for n in range(1 + replicas)]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.sentinel_procs: list[subprocess.Popen] = []

    def _server(self, n: int) -> RedisServer:
        settings = {"masterauth": self.password, "replica-announce-ip": "127.0.0.1"}
        return RedisServer(self.base / f"redis-{n}", password=self.password, settings=settings)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://:{urllib.parse.quote(self.password, safe='')}@{hosts}/{SERVICE}/0"

    def start(self) -> SentinelGroup:
        primary = self.servers[0]
        primary.start()
        for replica in self.servers[1:]:
            replica.settings["replicaof"] = f"127.0.0.1 {primary.port}"
            replica.start()
            self.wait_synced(replica)
        for n, port in enumerate(self.sentinel_ports):
            self._start_sentinel(n, port, primary.port)
        self.wait_stable()
        return self

    def _start_sentinel(self, n: int, port: int, primary_port: int) -> None:
        folder = self.base / f"sentinel-{n}"
        folder.mkdir(parents=True, exist_ok=True)
        conf = folder / "sentinel.conf"
        conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {folder}\nlogfile {folder / 'sentinel.log'}\n"
                        f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n"
                        f'sentinel auth-pass {SERVICE} "{self.password}"\n'
                        f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                        f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
                        f"sentinel parallel-syncs {SERVICE} 1\n")
        conf.chmod(0o600)
        self.sentinel_procs.append(subprocess.Popen([find_redis_server(), str(conf), "--sentinel"],
                                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                    stderr=subprocess.DEVNULL, start_new_session=True))

    def sentinel(self, n: int = 0) -> redis.Redis:
        return redis.Redis(port=self.sentinel_ports[n], socket_timeout=2, decode_responses=True)

    def primary_port(self) -> int | None:
        """The primary's port as the Sentinels name it (the first that answers)."""
        for n in range(len(self.sentinel_ports)):
            try:
                host_port = self.sentinel(n).execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
            except redis.RedisError:
                continue
            if host_port:
                return int(host_port[1])
        return None

    def server_on(self, port: int) -> RedisServer:
        return next(server for server in self.servers if server.port == port)

    def wait_stable(self) -> None:
        """Until every Sentinel knows the primary, every replica and the other Sentinels."""
        deadline = time.monotonic() + WAIT_S
        want_replicas, want_sentinels = len(self.servers) - 1, len(self.sentinel_ports) - 1
        while time.monotonic() < deadline:
            try:
                ready = all(
                    int(master["num-slaves"]) >= want_replicas and int(master["num-other-sentinels"]) >= want_sentinels
                    and "s_down" not in master["flags"] and "o_down" not in master["flags"]
                    for master in (self.sentinel(n).sentinel_master(SERVICE) for n in range(len(self.sentinel_ports))))
            except (redis.RedisError, KeyError):
                ready = False
            if ready:
                return
            time.sleep(0.1)
        raise AssertionError("the Sentinels did not agree on the group within the wait")

    def fail_over(self) -> RedisServer:
        """SIGKILL the primary and wait until the Sentinels name another; the killed server is returned."""
        port = self.primary_port()
        assert port is not None, "no Sentinel names a primary"
        old = self.server_on(port)
        old.stop(kill=True)
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            now = self.primary_port()
            if now is not None and now != port:
                return old
            time.sleep(0.05)
        raise AssertionError("no Sentinel promoted a replica within the wait")

    def agreed_primary(self) -> int:
        """The primary's port once every Sentinel names the same one: a server started again while the
        Sentinels still disagree could be told to follow the one that is going away."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            named = set()
            for n in range(len(self.sentinel_ports)):
                try:
                    named.add(self.sentinel(n).execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)[1])
                except (redis.RedisError, TypeError, IndexError):
                    named.add(None)
            if len(named) == 1 and None not in named:
                return int(named.pop())
            time.sleep(0.05)
        raise AssertionError("the Sentinels did not agree on a primary within the wait")

    def rejoin(self, server: RedisServer) -> None:
        """Start a killed server again, as a replica of the primary of now. Under load the Sentinels may
        call the new primary down too before the server has copied it, and promote the server instead
        (it then comes up with what it had: nothing); either way, the group settles."""
        server.settings["replicaof"] = f"127.0.0.1 {self.agreed_primary()}"
        server.start()
        self.wait_synced(server)
        self.wait_stable()

    def wait_synced(self, replica: RedisServer) -> None:
        """Until `replica` holds its primary's data: its link up, no sync under way (a replica Sentinel
        promoted before that would come up empty)."""
        client = redis.Redis(port=replica.port, password=self.password, socket_timeout=2, decode_responses=True)
        deadline = time.monotonic() + WAIT_S
        try:
            while time.monotonic() < deadline:
                try:
                    info = client.info("replication")
                    if info.get("role") == "master" and self.primary_port() == replica.port:
                        return  # the Sentinels promoted it meanwhile
                    if info.get("master_link_status") == "up" and not int(info.get("master_sync_in_progress", 1)):
                        return
                except redis.RedisError:
                    pass
                time.sleep(0.05)
        finally:
            client.close()
        raise AssertionError(f"the replica on {replica.port} did not sync within the wait")

    def stop(self) -> None:
        for proc in self.sentinel_procs:
            proc.kill()
            proc.wait(timeout=10)
        for server in self.servers:
            server.stop(kill=True)

    def __enter__(self) -> SentinelGroup:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
