"""Looking at mDNS on an interface as ``meshnode doctor`` does: the interface, the group, a browse.

For each interface address: which interface of this machine has it, whether that interface is up
and has the MULTICAST flag (``psutil``, as ``ip -brief link`` shows them), whether a socket can join
224.0.0.251 there (the kernel's own answer), and whom browsing ``_meshnode._tcp.local.`` on it for
a while finds, of any mesh id (``discovery.browse_once``), exactly as the agent browses.

No multicast route is looked at: the agent names its interfaces to zeroconf, which sends and joins
on that interface directly, so mDNS works without a 224.0.0.0/4 route (checked in network
namespaces: tests/netns/test_netns_doctor.py).
"""

from __future__ import annotations

import socket
import struct

import psutil

from ..membership.discovery import browse_once
from .doctor_facts import Advertised, Interface, MdnsProbe

__all__ = ["MDNS_GROUP", "inspect_interface", "probe_mdns"]

MDNS_GROUP = "224.0.0.251"


def inspect_interface(address: str) -> Interface:
    """The interface of this machine that has `address`: up, multicast, and whether the group joins."""
    device = next(
        (
            name
            for name, addresses in psutil.net_if_addrs().items()
            if any(a.address.split("%")[0] == address for a in addresses)
        ),
        "",
    )
    if not device:
        return Interface(address, "")
    stats = psutil.net_if_stats().get(device)
    flags = set(stats.flags.split(",")) if stats is not None else set()
    return Interface(
        address,
        device,
        up=stats is not None and stats.isup,
        multicast="multicast" in flags,
        join_error=_join_error(address),
    )


async def probe_mdns(address: str, browse_s: float) -> MdnsProbe:
    """Inspect the interface with `address`, then browse mDNS on it for `browse_s` seconds."""
    interface = inspect_interface(address)
    if not interface.device or not interface.up:
        return MdnsProbe(interface, browse_s)
    try:
        adverts = await browse_once([address], None, browse_s)
    except (OSError, ValueError) as exc:
        return MdnsProbe(interface, browse_s, error=str(exc))
    seen = tuple(Advertised(a.node_id, a.name, a.mesh_id, a.mesh_addr) for a in adverts)
    return MdnsProbe(interface, browse_s, seen)


def _join_error(address: str) -> str:
    """Why a socket cannot join the mDNS group on the interface with `address` ("" when it can)."""
    if ":" in address:
        return ""  # IPv6 interfaces are named to zeroconf by index: the browse tells
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("4s4s", socket.inet_aton(MDNS_GROUP), socket.inet_aton(address))
        try:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, request)
        except OSError as exc:
            return str(exc.strerror or exc)
    return ""
