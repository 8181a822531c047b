"""How a build's steps reach the network without reaching the runner host.

A step with network gets a network namespace of its own (bubblewrap's), and in it a user-mode network
stack: slirp4netns, the one rootless Podman uses, started by the runner on the host for that step's
namespace. Its traffic leaves as ordinary sockets of the slirp4netns process, so the build reaches
what this host reaches — and, but for the rules below, this host itself: its own services on
127.0.0.1 (slirp4netns's `--disable-host-loopback` closes its gateway to them), on its other addresses,
and on the private networks around it. Before the step's command starts, the runner sets a firewall
in that namespace (nftables, from the host, as the namespace's owner) that rejects every connection
to loopback, link-local, private and shared (CGNAT) addresses and to every address of this host —
but the stack's own DNS forwarder, and the `host:port`s the `build_network_allow` setting names (a
package index or a database the team runs on purpose) and the proxies the runner passes to builds.
The build runs without capabilities, so it cannot change those rules.

`build_network = "host"` shares the runner host's network with builds instead (and every build's log
says so); a runner that has no way to isolate builds refuses those that ask for the network, naming
the packages to install and that setting.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import select
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from urllib.parse import urlsplit

from voltci.config import host_ports

ISOLATED, HOST = "isolated", "host"
READY_TIMEOUT_S = 10.0
RULES_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 2.0
PROBE_TIMEOUT_S = 10.0
TAP = "tap0"
DNS = "10.0.2.3"  # slirp4netns's DNS forwarder, inside its 10.0.2.0/24
HOST_GATEWAY = "10.0.2.2"  # where slirp4netns shows this host's loopback, when it does
RESOLV_CONF = f"nameserver {DNS}\n"
PACKAGES = "slirp4netns and nftables (apt install slirp4netns nftables)"
# Never reached from a build: loopback, "this network", private (RFC 1918), shared (RFC 6598), link-local,
# multicast and reserved; IPv6 loopback, unique-local, link-local, multicast and IPv4-mapped.
CLOSED_V4 = ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
             "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4")
CLOSED_V6 = ("::1/128", "::/128", "::ffff:0:0/96", "fc00::/7", "fe80::/10", "ff00::/8")
NS_GET_USERNS = 0xB701  # ioctl on a namespace's descriptor: the user namespace that owns it (linux/nsfs.h)
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


class NetworkUnavailable(OSError):
    """A step's network could not be set up, in one line."""


@dataclass(frozen=True)
class Opening:
    """One address and port builds may reach although it is closed to them otherwise."""

    address: str
    port: int

    @property
    def family(self) -> str:
        return "ip6" if ":" in self.address else "ip"

    @property
    def on_loopback(self) -> bool:
        """A service on this host's loopback: builds reach it at the stack's gateway, HOST_GATEWAY."""
        return ipaddress.ip_address(self.address).is_loopback

    def rule(self) -> str:
        if self.on_loopback:
            return f"ip daddr {HOST_GATEWAY} tcp dport {self.port} accept"
        return f"{self.family} daddr {self.address} tcp dport {self.port} accept"


def openings(allow: str, proxies: dict[str, str]) -> tuple[Opening, ...]:
    """What builds may reach of the closed addresses: `allow`'s host:ports (names resolved now, once),
    and the proxies of the runner's environment that builds are given."""
    wanted = host_ports(allow)
    for name in PROXY_VARIABLES:
        if proxies.get(name):
            parts = urlsplit(proxies[name] if "://" in proxies[name] else f"http://{proxies[name]}")
            try:
                port = parts.port or (443 if parts.scheme == "https" else 1080 if "socks" in parts.scheme else 80)
            except ValueError:
                continue
            if parts.hostname:
                wanted.append((parts.hostname, port))
    found = []
    for host, port in wanted:
        try:
            addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)}
        except OSError:
            continue  # a name that does not resolve opens nothing
        found += [Opening(str(ipaddress.ip_address(address.split("%")[0])), port) for address in sorted(addresses)]
    return tuple(dict.fromkeys(found))


def host_addresses() -> list[str]:
    """Every address of this host's interfaces (`ip -j address`), so that a build cannot reach this
    host's services through its public address either."""
    try:
        shown = subprocess.run(["ip", "-j", "address"], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                               env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        interfaces = json.loads(shown.stdout or "[]")
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return []
    return sorted({str(ipaddress.ip_address(info["local"])) for interface in interfaces
                   for info in interface.get("addr_info", []) if isinstance(info.get("local"), str)})


def rules(opened: tuple[Opening, ...], own: list[str]) -> str:
    """The nftables ruleset of a step's namespace: what it may not reach, but for `opened`."""
    v4 = [*CLOSED_V4, *(address for address in own if ":" not in address)]
    v6 = [*CLOSED_V6, *(address for address in own if ":" in address)]
    lines = ["table inet volt {", "  chain out {", "    type filter hook output priority 0; policy accept;",
             '    oifname "lo" accept', f"    ip daddr {DNS} udp dport 53 accept",
             f"    ip daddr {DNS} tcp dport 53 accept"]
    lines += [f"    {o.rule()}" for o in opened]
    lines += [f"    ip daddr {{ {', '.join(v4)} }} reject", f"    ip6 daddr {{ {', '.join(v6)} }} reject", "  }", "}"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Isolation:
    """The programs that isolate a step's network on this host, and what builds may still reach."""

    slirp4netns: str
    nft: str
    nsenter: str
    opened: tuple[Opening, ...] = ()
    own: tuple[str, ...] = ()

    @contextmanager
    def uplink(self, pid: int) -> Iterator[None]:
        """Give the network namespace of process `pid` (a sandbox's init, still blocked before its command)
        a user-mode stack and its firewall; both go when the block ends. Raises NetworkUnavailable."""
        with _owner(pid) as owner:
            yield from self._uplink(pid, owner)

    def _uplink(self, pid: int, owner: int | None) -> Iterator[None]:
        ready_read, ready_write = os.pipe()
        exit_read, exit_write = os.pipe()
        userns = [] if owner is None else [f"--userns-path=/proc/self/fd/{owner}"]
        # This host's loopback stays closed in slirp4netns itself, unless a service on it is allowed: then
        # the firewall lets through that port of the gateway alone.
        loopback = [] if any(o.on_loopback for o in self.opened) else ["--disable-host-loopback"]
        try:
            stack = subprocess.Popen(
                [self.slirp4netns, "--configure", "--mtu=65520", *loopback, "--enable-seccomp",
                 f"--ready-fd={ready_write}", f"--exit-fd={exit_read}", *userns, str(pid), TAP],
                pass_fds=(ready_write, exit_read, *([] if owner is None else [owner])), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={}, start_new_session=True)
        except OSError as exc:
            for fd in (ready_read, ready_write, exit_read, exit_write):
                os.close(fd)
            raise NetworkUnavailable(f"cannot start {self.slirp4netns}: {exc.strerror or exc}") from None
        os.close(ready_write)
        os.close(exit_read)
        firewall = None
        try:
            firewall = self._firewall(pid, owner)  # set while the stack starts: the step waits for both
            self._await_ready(stack, ready_read)
            self._firewall_set(firewall)
            yield
        finally:
            if firewall is not None and firewall.poll() is None:
                firewall.kill()
                firewall.communicate(timeout=STOP_TIMEOUT_S)
            os.close(ready_read)
            os.close(exit_write)  # slirp4netns ends when this closes
            try:
                stack.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                stack.kill()
                stack.wait(timeout=STOP_TIMEOUT_S)
            if stack.stderr is not None:
                stack.stderr.close()

    def _await_ready(self, stack: subprocess.Popen, ready: int) -> None:
        if select.select([ready], [], [], READY_TIMEOUT_S)[0] and os.read(ready, 1) == b"1":
            return
        stack.kill()
        said = stack.stderr.read(4000).decode(errors="replace").strip().splitlines() if stack.stderr else []
        stack.wait(timeout=STOP_TIMEOUT_S)
        reasons = [line for line in said if not line.startswith(("child failed", "WARNING"))] or said
        hint = "; /dev/net/tun must be readable and writable by the runner's user (mode 0666, as udev makes it)" \
            if any("/dev/net/tun" in line for line in reasons) else ""
        raise NetworkUnavailable("slirp4netns did not start" + (f": {reasons[0]}" if reasons else "") + hint)

    def _firewall(self, pid: int, owner: int | None) -> subprocess.Popen:
        """nft, in the network namespace of `pid` (and the user namespace `owner` that owns it, for a runner
        that is not root), setting the rules (started; _firewall_set waits for it)."""
        enter = [self.nsenter, f"--net=/proc/{pid}/ns/net"] + \
            ([] if owner is None else [f"--user=/proc/self/fd/{owner}", "--preserve-credentials"])
        try:
            nft = subprocess.Popen([*enter, self.nft, "-f", "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                                   pass_fds=() if owner is None else (owner,))
        except OSError as exc:
            raise NetworkUnavailable(f"cannot set the build's firewall: {exc}") from None
        return nft

    def _firewall_set(self, nft: subprocess.Popen) -> None:
        try:
            _, said = nft.communicate(rules(self.opened, list(self.own)), timeout=RULES_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            nft.kill()
            nft.communicate(timeout=STOP_TIMEOUT_S)
            raise NetworkUnavailable(f"setting the build's firewall took more than {RULES_TIMEOUT_S:g} s") from None
        if nft.returncode != 0:
            last = (said.strip().splitlines() or [f"exit status {nft.returncode}"])[-1]
            raise NetworkUnavailable(f"cannot set the build's firewall (nft: {last})")

    def describe(self) -> str:
        opened = ", ".join(f"{HOST_GATEWAY if o.on_loopback else o.address}:{o.port}" for o in self.opened)
        return (f"a network of their own (slirp4netns), closed to this host, its loopback and private, "
                f"link-local and shared addresses{f' but {opened}' if opened else ''}")


@contextmanager
def _owner(pid: int) -> Iterator[int | None]:
    """A descriptor of the user namespace that owns the network namespace of `pid`, for a runner that is
    not root: it has rights there, as that namespace's creator, and nowhere else. bwrap may put the step
    in a user namespace nested in that one, so the step's own is not it (the kernel names the owner:
    NS_GET_USERNS). None for root, who has those rights everywhere."""
    if os.geteuid() == 0:
        yield None
        return
    try:
        net = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NetworkUnavailable(f"the step's network namespace is gone: {exc.strerror}") from None
    try:
        owner = fcntl.ioctl(net, NS_GET_USERNS)
    except OSError as exc:
        raise NetworkUnavailable(f"cannot find who owns the step's network namespace: {exc.strerror}") from None
    finally:
        os.close(net)
    try:
        yield owner
    finally:
        os.close(owner)


@dataclass(frozen=True)
class NoIsolation:
    """Why this host cannot isolate builds' network."""

    why: str

    def refusal(self) -> str:
        return (f"this runner cannot give builds a network of their own ({self.why}): install {PACKAGES}, or "
                f"set build_network = \"host\" to let builds use this host's network, its own services included")


def find_programs() -> tuple[str, str, str] | str:
    """(slirp4netns, nft, nsenter), or what is missing."""
    found = {name: shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
             for name in ("slirp4netns", "nft", "nsenter")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        return f"{' and '.join(missing)} not found"
    return found["slirp4netns"] or "", found["nft"] or "", found["nsenter"] or ""


@cache
def isolation(allow: str = "") -> Isolation | NoIsolation:
    """How this runner isolates builds' network, found once per process: the programs, and whether they
    work here (tried on a throw-away namespace by the caller's sandbox probe)."""
    programs = find_programs()
    if isinstance(programs, str):
        return NoIsolation(programs)
    try:
        opened = openings(allow, dict(os.environ))
    except ValueError as exc:
        return NoIsolation(f"build_network_allow {exc}")
    return Isolation(*programs, opened=opened, own=tuple(host_addresses()))

