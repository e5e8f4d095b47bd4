"""What ``meshnode doctor`` observes and what it concludes, as plain records.

The gathering (``doctor_probe.py``, ``doctor_gossip.py``, ``doctor_mdns.py``) fills the observation
records; the checks (``doctor_checks.py``, ``doctor_net_checks.py``) are pure functions from them to
``Finding``s, so every conclusion is tested without a network. Each finding says what was tried and,
when something is wrong, what to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Advertised",
    "ClockSample",
    "Counters",
    "DialPair",
    "Finding",
    "Interface",
    "Level",
    "MdnsProbe",
    "NodeFacts",
    "PeerProbe",
    "SeedProbe",
    "Seen",
    "Tried",
]

Level = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Finding:
    """One check's outcome: how it went, what it found, what was tried, and what to do."""

    level: Level
    check: str
    detail: str
    tried: str = ""
    fix: str = ""


@dataclass(frozen=True)
class NodeFacts:
    """A node's ``GET /v1/doctor`` body: what it runs with."""

    node: str
    mesh_id: str
    mdns: bool
    mdns_interfaces: tuple[str, ...]
    seeds: tuple[str, ...]
    max_clock_offset_s: float
    uptime_s: float = 0.0

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> NodeFacts:
        """From the JSON body; KeyError or TypeError when it is not one."""
        return cls(
            node=str(body["node"]),
            mesh_id=str(body["mesh_id"]),
            mdns=bool(body["mdns"]),
            mdns_interfaces=tuple(str(ip) for ip in body["mdns_interfaces"]),
            seeds=tuple(str(seed) for seed in body["seeds"]),
            max_clock_offset_s=float(body["max_clock_offset_s"]),
            uptime_s=float(body.get("uptime_s", 0.0)),
        )


@dataclass(frozen=True)
class Tried:
    """One TCP connection tried: to which address, and how it went (``http/doctor.py``'s outcomes)."""

    addr: str
    outcome: str  # ok, refused, timeout, unreachable, error
    detail: str

    @property
    def ok(self) -> bool:
        """Whether it connected."""
        return self.outcome == "ok"


@dataclass(frozen=True)
class DialPair:
    """A connection to a node's mesh port and one to its data port."""

    mesh: Tried
    data: Tried

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> DialPair:
        """From a ``GET /v1/doctor/dial/{node}`` body."""
        return cls(
            *(
                Tried(str(d["addr"]), str(d["outcome"]), str(d["detail"]))
                for d in (body["mesh"], body["data"])
            )
        )


@dataclass(frozen=True)
class Seen:
    """A member as some node holds it: id, name, mesh address, status."""

    node: str
    name: str
    addr: str
    status: str


@dataclass(frozen=True)
class ClockSample:
    """Another clock minus the reference one, in seconds, give or take `uncertainty_s`."""

    offset_s: float
    uncertainty_s: float


@dataclass(frozen=True)
class SeedProbe:
    """A seed tried as an agent would, then with one sealed full-state exchange.

    `reason`: what a name lookup and a TCP connection found (``seed_watch.probe_seed``'s words).
    `answered`: whether the seed answered gossip sealed with the doctor's keyring; None when that
    was not tried (no token, or no TCP). `answer`: who answered and the members it holds.
    """

    seed: str
    reason: str
    answered: bool | None
    answer: Seen | None = None
    members: tuple[Seen, ...] = ()


@dataclass(frozen=True)
class PeerProbe:
    """One member of the node's view, tried both ways.

    `out`: the node dialing the peer's advertised addresses; `back`: the peer dialing the node's.
    `holds_node`: how the peer holds the examined node (None: the peer does not list it, or was not
    asked). `asked_error`: why the peer itself could not be asked ("" when it answered).
    """

    node: str
    name: str
    status: str
    reach: str
    out: DialPair | None = None
    back: DialPair | None = None
    holds_node: Seen | None = None
    asked_error: str = ""
    clock: ClockSample | None = None


@dataclass(frozen=True)
class Interface:
    """One interface address mDNS is meant to run on, as this machine has it."""

    address: str
    device: str  # "" when no interface of this machine has the address
    up: bool = False
    multicast: bool = False
    join_error: str = ""  # why joining 224.0.0.251 there failed, "" when it worked


@dataclass(frozen=True)
class Advertised:
    """A node announcing itself by mDNS: what its TXT record says."""

    node: str
    name: str
    mesh_id: str
    mesh_addr: str


@dataclass(frozen=True)
class MdnsProbe:
    """An interface checked, and whom browsing ``_meshnode._tcp.local.`` on it for a while found."""

    interface: Interface
    browse_s: float
    seen: tuple[Advertised, ...] = ()
    error: str = ""  # why browsing could not run, "" when it did


@dataclass(frozen=True)
class Counters:
    """A node's counters from ``/metrics`` that a diagnosis reads."""

    gossip_dropped: Mapping[str, float] = field(default_factory=dict)
    data_dropped: Mapping[str, float] = field(default_factory=dict)
    refutations: float = 0.0
    stalls: float = 0.0
