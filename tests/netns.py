"""Several "hosts" on one Linux machine: network namespaces joined by veth pairs to one bridge, each
with its own IP address, its own loopback and a route for multicast (224.0.0.0/4), so DDS discovers
and talks across the bridge as it does across a LAN switch (issue 25). Needs root (CAP_NET_ADMIN) and
`ip` (iproute2); `tc` for the bandwidth limit.

Used by tests/test_network_namespaces.py and benchmarks/network.py. Names carry a per-session tag, so
parallel sessions never share a namespace or a bridge; :meth:`Network.close` removes every namespace,
veth and the bridge, and ends the processes still running in them (those we started there).

What the namespaces share with each other and the machine, unlike separate machines: the file system
(/dev/shm, where Fast DDS keeps its shared-memory transport) and /etc/machine-id. Fast DDS 2.14 here
sends between namespaces over UDP anyway (a 1 MB topic's bytes show on the veth either way), but HOST_ENV
pins its built-in transports to UDPv4 (FASTDDS_BUILTIN_TRANSPORTS) so that no test depends on how it
decides which participants share a host: everything crosses the link, as between separate machines.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field

#: Environment of every process started in a namespace: discovery over the subnet (not localhost only),
#: data over UDP (see the module docstring).
HOST_ENV = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET", "FASTDDS_BUILTIN_TRANSPORTS": "UDPv4"}


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be made here (not root, no iproute2, or the kernel refused)."""


def _ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} -> {r.returncode}: {r.stderr.strip()}")
    return r


def unavailable_reason() -> str:
    """'' when this process may build namespaces; else why not (a skip reason)."""
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2) to build network namespaces"
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN): run the namespace tests as root"
    probe = f"gpsprobe-{os.getpid()}-{secrets.token_hex(2)}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return f"`ip netns add` refused here: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=30)
    return ""


@dataclass
class Host:
    """One namespace on the bridge: ``name`` (e.g. 'trainer', 'robot1'), its namespace, its address,
    and the bridge-side end of its veth (what a cable pull or a rate limit acts on)."""

    name: str
    netns: str
    address: str
    port: str  # the veth end on the bridge, in the root namespace
    procs: list[subprocess.Popen] = field(default_factory=list)

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def env(self, base: dict) -> dict:
        return {**base, **HOST_ENV}

    def run(self, argv: list[str], env: dict, timeout: float = 60.0, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(argv), env=self.env(env), capture_output=True, text=True,
                              timeout=timeout, **kw)

    def popen(self, argv: list[str], env: dict, **kw) -> subprocess.Popen:
        """A process in this namespace, in its own process group (so a signal reaches all of it)."""
        proc = subprocess.Popen(self.command(argv), env=self.env(env), start_new_session=True, **kw)
        self.procs.append(proc)
        return proc

    def link(self, up: bool) -> None:
        """Plug or pull this host's cable (the bridge-side end: the host keeps its address and routes)."""
        _ip("link", "set", self.port, "up" if up else "down")

    def limit_rate(self, rate: str = "20mbit", burst: str = "64kb", latency: str = "200ms") -> None:
        """A token-bucket rate limit on this host's link, both directions (tc tbf on each veth end)."""
        for args in (["dev", self.port], ["-n", self.netns, "dev", "eth0"]):
            netns = args[1] if args[0] == "-n" else None
            dev = args[-1]
            cmd = ["tc", *(["-n", netns] if netns else []), "qdisc", "replace", "dev", dev, "root", "tbf",
                   "rate", rate, "burst", burst, "latency", latency]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} -> {r.returncode}: {r.stderr.strip()}")

    def unlimit_rate(self) -> None:
        subprocess.run(["tc", "qdisc", "del", "dev", self.port, "root"], capture_output=True, timeout=30)
        subprocess.run(["tc", "-n", self.netns, "qdisc", "del", "dev", "eth0", "root"], capture_output=True,
                       timeout=30)

    def shaped_bytes(self) -> int:
        """Bytes this host sent through the rate limit on its link (0 without one)."""
        r = subprocess.run(["tc", "-s", "-n", self.netns, "qdisc", "show", "dev", "eth0"], capture_output=True,
                           text=True, timeout=30)
        found = re.search(r"qdisc tbf .*?Sent (\d+) bytes", r.stdout, re.S)
        return int(found.group(1)) if found else 0

    def counters(self) -> tuple[int, int]:
        """(bytes received, bytes sent) by this host on its link (eth0 in its namespace)."""
        base = "/sys/class/net/eth0/statistics/"
        r = self.run(["cat", base + "rx_bytes", base + "tx_bytes"], env=dict(os.environ), timeout=10)
        rx, tx = r.stdout.split()
        return int(rx), int(tx)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGINT to what we started here (as Ctrl-C would), then SIGKILL to what is left of it."""
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGINT)
                except OSError:
                    pass
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                proc.wait(10)
        # Anything else still in the namespace was started by us there (a ros2 daemon a CLI call forked):
        # the namespace is ours alone.
        r = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True, timeout=30)
        for pid in r.stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass


class Network:
    """A bridge and the hosts on it, 10.<a>.<b>.0/24 (the bridge has no address of its own, so the
    machine's own routing is untouched and two sessions' networks never meet)."""

    def __init__(self, tag: str | None = None):
        reason = unavailable_reason()
        if reason:
            raise NetnsUnavailable(reason)
        self.tag = tag or secrets.token_hex(3)  # interface names are at most 15 characters
        self.bridge = f"gpsbr{self.tag}"
        self.hosts: dict[str, Host] = {}
        self._subnet = f"10.225.{int(self.tag, 16) % 250 + 1}"
        _ip("link", "add", self.bridge, "type", "bridge")
        # Multicast is flooded to every port (no IGMP querier here: snooping would drop it at first)
        _ip("link", "set", self.bridge, "type", "bridge", "mcast_snooping", "0", check=False)
        _ip("link", "set", self.bridge, "up")

    def add_host(self, name: str) -> Host:
        index = len(self.hosts) + 1
        netns, port = f"gps-{self.tag}-{name}", f"gpsv{self.tag}{index}"
        address = f"{self._subnet}.{index + 1}"
        _ip("netns", "add", netns)
        host = Host(name, netns, address, port)
        self.hosts[name] = host
        _ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("link", "set", port, "master", self.bridge)
        _ip("link", "set", port, "up")
        _ip("link", "set", "lo", "up", netns=netns)
        _ip("addr", "add", f"{address}/24", "dev", "eth0", netns=netns)
        _ip("link", "set", "eth0", "up", netns=netns)
        _ip("route", "add", "224.0.0.0/4", "dev", "eth0", netns=netns)
        return host

    def close(self) -> None:
        for host in self.hosts.values():
            try:
                host.stop(timeout=15.0)
            finally:
                _ip("netns", "del", host.netns, check=False)  # takes its veth pair with it
        _ip("link", "del", self.bridge, check=False)
        self.hosts.clear()

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
