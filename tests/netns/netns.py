"""Real hosts for tests: network namespaces joined by a Linux bridge (docs/testing.md).

``Bridge(prefix, count)`` builds, per test::

    namespace <prefix><pid>x<n>br    holds bridge br0 and one veth end per host (v0, v1, ...)
    namespace <prefix><pid>x<n>h<i>  one per host: lo, and eth0 = the other veth end,
                                     10.250.<subnet>.<i+1>/24, multicast on, 224.0.0.0/4 routed to eth0

The subnet exists only inside these namespaces (nothing is routed to or from the machine's own
namespace), so parallel runs cannot collide on addresses; names carry the pid and a counter so they
cannot collide on namespace names either. Leaving the ``with`` block kills the processes started with
``exec`` and deletes every namespace created, also when setup or the test failed halfway.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import shutil
import subprocess
from types import TracebackType
from typing import IO, Any

import pytest

__all__ = ["Bridge", "require_netns"]

_counter = itertools.count()


def _ip(*args: str) -> None:
    """Run one ``ip`` command, raising with its stderr if it fails."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")


@functools.cache
def _netns_unusable_reason() -> str | None:
    if os.geteuid() != 0:
        return "network namespace tests need root"
    if shutil.which("ip") is None:
        return "network namespace tests need iproute2's `ip`"
    # `ip netns list` works even where creating one is forbidden (a container without
    # CAP_SYS_ADMIN), so try the real thing once.
    probe = f"mnprobe{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot create network namespaces here: {exc}"
    try:
        _ip("netns", "del", probe)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot delete network namespaces here: {exc}"
    return None


def require_netns() -> None:
    """Skip the calling test, with the reason, unless this process can create network namespaces."""
    reason = _netns_unusable_reason()
    if reason is not None:
        pytest.skip(reason)


class Bridge:
    """``count`` host namespaces on one bridged, namespace-private subnet; use as a context manager."""

    def __init__(self, prefix: str, count: int, *, subnet: int | None = None) -> None:
        """Name the namespaces; nothing is created until ``__enter__``."""
        if count < 1 or count > 250:
            raise ValueError("count must be between 1 and 250")
        base = f"{prefix}{os.getpid()}x{next(_counter)}"
        self.bridge_namespace = f"{base}br"
        self.hosts = [f"{base}h{index}" for index in range(count)]
        # Any /24 works since nothing outside the namespaces sees it; varying it by pid makes a
        # packet that strays into a log or capture easy to attribute to its run.
        third = subnet if subnet is not None else os.getpid() % 250
        self.addresses = [f"10.250.{third}.{index + 1}" for index in range(count)]
        self.prefix_length = 24
        self._created: list[str] = []
        self._processes: list[subprocess.Popen[Any]] = []

    def __enter__(self) -> Bridge:
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

    def address_of(self, host: str) -> str:
        """The IPv4 address of ``host``'s eth0."""
        return self.addresses[self.hosts.index(host)]

    def exec(self, host: str, argv: list[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside ``host``'s namespace; it is killed when the bridge closes."""
        if host not in self.hosts:
            raise ValueError(f"{host} is not a host of this bridge")
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
        # Hosts first: deleting a host namespace removes its veth pair, then the bridge goes.
        for namespace in reversed(self._created):
            try:
                _ip("netns", "del", namespace)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                errors.append(str(exc))
        self._created.clear()
        if errors:
            raise RuntimeError("could not delete namespaces: " + "; ".join(errors))

    def _add_namespace(self, name: str) -> None:
        _ip("netns", "add", name)
        self._created.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _build(self) -> None:
        bridge = self.bridge_namespace
        self._add_namespace(bridge)
        _ip("-n", bridge, "link", "add", "br0", "type", "bridge")
        # Without an IGMP querier, snooping can stop forwarding multicast groups; mDNS must flood.
        _ip("-n", bridge, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0")
        _ip("-n", bridge, "link", "set", "br0", "up")
        for index, (host, address) in enumerate(zip(self.hosts, self.addresses, strict=True)):
            self._add_namespace(host)
            port = f"v{index}"
            _ip("-n", bridge, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", host)
            _ip("-n", bridge, "link", "set", port, "master", "br0", "up")
            _ip("-n", host, "addr", "add", f"{address}/{self.prefix_length}", "dev", "eth0")
            _ip("-n", host, "link", "set", "eth0", "multicast", "on", "up")
            _ip("-n", host, "route", "add", "224.0.0.0/4", "dev", "eth0")

    # The nftables table (family bridge, in the bridge namespace) that ``partition`` writes.
    partition_table = "meshnode_partition"

    def partition(self, groups: list[list[str]]) -> None:
        """Drop IPv4 between hosts of different ``groups`` at the bridge until ``repair``; replaces any."""
        if len(groups) < 2:
            raise ValueError("a partition needs at least two groups")
        named = [host for group in groups for host in group]
        if len(set(named)) != len(named) or any(host not in self.hosts for host in named):
            raise ValueError("each group must hold distinct hosts of this bridge")
        table = self.partition_table
        # Declaring the table first makes the delete valid when none exists, so one script
        # atomically replaces an earlier partition.
        lines = [f"table bridge {table}", f"delete table bridge {table}", f"table bridge {table} {{"]
        for index, group in enumerate(groups):
            elements = ", ".join(self.address_of(host) for host in group)
            lines.append(f"  set side{index} {{ type ipv4_addr; elements = {{ {elements} }}; }}")
        # A bridge-family forward hook sees every frame br0 switches between two veth ports.
        lines.append("  chain forward {")
        lines.append("    type filter hook forward priority 0; policy accept;")
        for source in range(len(groups)):
            for target in range(len(groups)):
                if source != target:
                    lines.append(f"    ip saddr @side{source} ip daddr @side{target} counter drop")
        lines += ["  }", "}"]
        self._nft("\n".join(lines) + "\n")

    def repair(self) -> None:
        """Delete the partition's table so every host reaches every other again; safe without one."""
        table = self.partition_table
        self._nft(f"table bridge {table}\ndelete table bridge {table}\n")

    def partition_rules(self) -> str:
        """The partition table as ``nft list`` prints it (with drop counters), for diagnostics."""
        result = self._nft_run(["list", "table", "bridge", self.partition_table], None)
        # The table not existing is the usual reason for a failure here, and all a diagnosis needs.
        return result.stdout if result.returncode == 0 else "(no partition table)"

    def _nft(self, script: str) -> None:
        """Run an nft script inside the bridge namespace, raising with its stderr if it fails."""
        result = self._nft_run(["-f", "-"], script)
        if result.returncode != 0:
            raise RuntimeError(f"nft failed ({result.returncode}): {result.stderr.strip()}\n{script}")

    def _nft_run(self, args: list[str], script: str | None) -> subprocess.CompletedProcess[str]:
        """Run ``nft args`` inside the bridge namespace with ``script`` on stdin."""
        return subprocess.run(
            ["ip", "netns", "exec", self.bridge_namespace, "nft", *args],
            input=script,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
