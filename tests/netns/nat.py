"""A home network behind NAT and a cloud network, in network namespaces (docs/testing.md).

``NatTopology(prefix, cloud_hosts, home_hosts)`` builds, per test::

    <base>cb      "cloud" bridge namespace: br0, a veth port per cloud host (c0, c1, ...) and one
                  (r) towards the router
    <base>c<i>    cloud hosts: eth0 = 10.251.<x>.<i+1>/24, no route anywhere else
    <base>hb      "home" bridge namespace, the same with ports h0, h1, ... and r
    <base>h<i>    home hosts: eth0 = 192.168.<x>.<i+1>/24, default route via 192.168.<x>.254
    <base>r       the router: cloud0 = 10.251.<x>.254, home0 = 192.168.<x>.254, ip_forward on, and
                  the nftables table ``meshnode_nat`` (below)

where ``<base>`` is ``<prefix><pid>x<counter>``. The router behaves like a home router: traffic from
the home subnet leaving through cloud0 is masqueraded (its source becomes 10.251.<x>.254); the
forward chain accepts established and related packets both ways, new connections only from home to
cloud, and drops everything else. A cloud host has no route to the home subnet, as a real cloud has
none to a private network; even one that adds a route via the router is dropped by the forward policy.
So a home host can open connections to cloud hosts and no cloud host can ever open one to it.

``flush_nat()`` makes the router forget every tracked connection (``conntrack -F``), as a home router
does when it reboots or its table overflows: what then happens to a connection that was open is in
tests/netns/test_netns_nat_topology.py. Leaving the ``with`` block kills the processes started with
``exec`` and deletes every namespace created (with them their nftables tables), also when setup or
the test failed halfway.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
from types import TracebackType
from typing import IO, Any

import pytest

from tests.netns.netns import require_netns

__all__ = ["NatTopology", "require_nat"]

_counter = itertools.count()
# The router's address on both segments, as home routers conventionally take an end of the range.
ROUTER_HOST_PART = 254
NAT_TABLE = "meshnode_nat"


def _run(argv: list[str], stdin: str | None = None) -> str:
    """Run one command, returning its stdout, raising with its stderr if it fails."""
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def require_nat() -> None:
    """Skip the calling test, with the reason, unless namespaces, nftables and conntrack are usable."""
    require_netns()
    for tool, package in (("nft", "nftables"), ("conntrack", "conntrack")):
        if shutil.which(tool) is None:
            pytest.skip(f"NAT topology tests need `{tool}` (Debian package {package}; scripts/setup.sh)")


class NatTopology:
    """Cloud hosts, home hosts behind a masquerading router; use as a context manager."""

    def __init__(
        self, prefix: str, cloud_hosts: int = 2, home_hosts: int = 1, *, subnet: int | None = None
    ) -> None:
        """Name the namespaces and pick the subnets; nothing is created until ``__enter__``."""
        for count in (cloud_hosts, home_hosts):
            if not 1 <= count < ROUTER_HOST_PART:
                raise ValueError(f"each segment takes 1 to {ROUTER_HOST_PART - 1} hosts")
        base = f"{prefix}{os.getpid()}x{next(_counter)}"
        self.cloud_bridge = f"{base}cb"
        self.home_bridge = f"{base}hb"
        self.router = f"{base}r"
        self.hosts_cloud = [f"{base}c{index}" for index in range(cloud_hosts)]
        self.hosts_home = [f"{base}h{index}" for index in range(home_hosts)]
        # Varying the third octet by pid makes a stray packet in a log easy to attribute to its run;
        # nothing outside these namespaces routes either subnet, so parallel runs cannot collide.
        third = subnet if subnet is not None else os.getpid() % 250
        self.cloud_subnet = f"10.251.{third}.0/24"
        self.home_subnet = f"192.168.{third}.0/24"
        self.router_cloud_address = f"10.251.{third}.{ROUTER_HOST_PART}"
        self.router_home_address = f"192.168.{third}.{ROUTER_HOST_PART}"
        self._addresses = {host: f"10.251.{third}.{index + 1}" for index, host in enumerate(self.hosts_cloud)}
        self._addresses |= {
            host: f"192.168.{third}.{index + 1}" for index, host in enumerate(self.hosts_home)
        }
        self._created: list[str] = []
        self._processes: list[subprocess.Popen[Any]] = []

    def __enter__(self) -> NatTopology:
        require_nat()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- hosts ----------------------------------------------------------------------------------

    def address_of(self, host: str) -> str:
        """The IPv4 address of ``host``'s eth0."""
        if host not in self._addresses:
            raise ValueError(f"{host} is not a host of this topology")
        return self._addresses[host]

    def exec(self, host: str, argv: list[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside ``host``'s namespace (or the router's); killed when the topology closes."""
        if host not in self._addresses and host != self.router:
            raise ValueError(f"{host} is not a host of this topology")
        process = subprocess.Popen(["ip", "netns", "exec", host, *argv], **popen_kwargs)
        self._processes.append(process)
        return process

    def exec_logged(self, host: str, argv: list[str], log: IO[bytes]) -> subprocess.Popen[Any]:
        """Start ``argv`` inside ``host`` (no stdin, unbuffered), its output going to ``log``."""
        return self.exec(
            host,
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    # -- the router -----------------------------------------------------------------------------

    def flush_nat(self) -> None:
        """Make the router forget every tracked connection, masquerade mappings included."""
        self._in_router(["conntrack", "-F"])

    def connections(self) -> str:
        """The router's connection-tracking table as ``conntrack -L`` prints it, for diagnostics."""
        return self._in_router(["conntrack", "-L"])

    def nat_rules(self) -> str:
        """The router's NAT table as ``nft list`` prints it (with counters), for diagnostics."""
        return self._in_router(["nft", "list", "table", "ip", NAT_TABLE])

    def cut_home(self) -> None:
        """Take the router's home leg down: the home segment loses the cloud until ``restore_home``."""
        _run(["ip", "-n", self.router, "link", "set", "home0", "down"])

    def restore_home(self) -> None:
        """Bring the router's home leg back up (its address and the home hosts' routes come back)."""
        _run(["ip", "-n", self.router, "link", "set", "home0", "up"])

    def _in_router(self, argv: list[str], stdin: str | None = None) -> str:
        return _run(["ip", "netns", "exec", self.router, *argv], stdin)

    # -- building and tearing down ----------------------------------------------------------------

    def close(self) -> None:
        """Kill started processes and delete every namespace created; safe to call twice."""
        for process in self._processes:
            if process.poll() is None:
                process.kill()
            # Deleting the namespace below still tears its interfaces down if a process lingers.
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        self._processes.clear()
        errors = []
        # Hosts and router first (each takes its veth pairs along), then the bridges.
        for namespace in reversed(self._created):
            try:
                _run(["ip", "netns", "del", namespace])
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                errors.append(str(exc))
        self._created.clear()
        if errors:
            raise RuntimeError("could not delete namespaces: " + "; ".join(errors))

    def _add_namespace(self, name: str) -> None:
        _run(["ip", "netns", "add", name])
        self._created.append(name)
        _run(["ip", "-n", name, "link", "set", "lo", "up"])

    def _add_segment(self, bridge: str, hosts: list[str], port_letter: str) -> None:
        """A bridge namespace and its hosts, each with eth0 on the bridge and its address."""
        self._add_namespace(bridge)
        _run(["ip", "-n", bridge, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", bridge, "link", "set", "br0", "up"])
        for index, host in enumerate(hosts):
            self._add_namespace(host)
            port = f"{port_letter}{index}"
            _run(
                [
                    "ip",
                    "-n",
                    bridge,
                    "link",
                    "add",
                    port,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    host,
                ]
            )
            _run(["ip", "-n", bridge, "link", "set", port, "master", "br0", "up"])
            _run(["ip", "-n", host, "addr", "add", f"{self._addresses[host]}/24", "dev", "eth0"])
            _run(["ip", "-n", host, "link", "set", "eth0", "up"])

    def _add_router_leg(self, bridge: str, leg: str, address: str) -> None:
        """Plug the router into ``bridge`` through interface ``leg`` holding ``address``."""
        _run(
            [
                "ip",
                "-n",
                bridge,
                "link",
                "add",
                "r",
                "type",
                "veth",
                "peer",
                "name",
                leg,
                "netns",
                self.router,
            ]
        )
        _run(["ip", "-n", bridge, "link", "set", "r", "master", "br0", "up"])
        _run(["ip", "-n", self.router, "addr", "add", f"{address}/24", "dev", leg])
        _run(["ip", "-n", self.router, "link", "set", leg, "up"])

    def _build(self) -> None:
        self._add_segment(self.cloud_bridge, self.hosts_cloud, "c")
        self._add_segment(self.home_bridge, self.hosts_home, "h")
        # Created after the bridges so that close() deletes it before them.
        self._add_namespace(self.router)
        self._add_router_leg(self.cloud_bridge, "cloud0", self.router_cloud_address)
        self._add_router_leg(self.home_bridge, "home0", self.router_home_address)
        # Written through /proc rather than sysctl(8): procps is not on every minimal image.
        self._in_router(["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])
        for host in self.hosts_home:
            _run(["ip", "-n", host, "route", "add", "default", "via", self.router_home_address])
        self._in_router(["nft", "-f", "-"], self._nat_script())

    def _nat_script(self) -> str:
        """The router's table: masquerade home -> cloud, forward only what home started."""
        from_home = f'iifname "home0" oifname "cloud0" ip saddr {self.home_subnet}'
        return "\n".join(
            [
                f"table ip {NAT_TABLE} {{",
                "  chain postrouting {",
                "    type nat hook postrouting priority srcnat; policy accept;",
                f'    ip saddr {self.home_subnet} oifname "cloud0" counter masquerade',
                "  }",
                "  chain forward {",
                "    type filter hook forward priority filter; policy drop;",
                "    ct state established,related counter accept",
                f"    {from_home} ct state new counter accept",
                # Counted, so a diagnosis shows how often the cloud tried to open a connection home.
                "    counter drop",
                "  }",
                "}",
                "",
            ]
        )
