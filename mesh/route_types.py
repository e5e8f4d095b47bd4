"""What routing reads and answers: a candidate replica, a request, where the router is, a tier.

Frozen values passed between ``route_candidates.py`` (candidates from the gossiped view),
``routing.py`` (the policy) and the forwarder (``node/dataplane/forward.py``). ``routing`` exports
them too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .types import NodeId, Status

__all__ = ["TIER_ORDER", "Candidate", "Locality", "RouteRequest", "Tier", "TierName"]

TierName = Literal["hint", "warm", "any", "full", "suspect"]
TIER_ORDER: tuple[TierName, ...] = ("hint", "warm", "any", "full", "suspect")


@dataclass(frozen=True)
class Candidate:
    """One ready replica of a deployment as the gossiped view describes it."""

    node: NodeId
    name: str
    data_addr: str  # "host:port" of the node's data plane
    status: Status
    is_self: bool
    region: str = ""
    zone: str = ""
    rtt_s: float | None = None  # measured by this node's probes; None when unknown
    hints: frozenset[str] = frozenset()
    models: frozenset[str] = frozenset()
    queue: int = 0  # requests admitted and not finished, as last gossiped (or exact for this node)
    slots: int = 1  # requests it runs at once (concurrency times batch size)
    capacity: int = 1  # requests it admits at once before answering 429
    service_s: float | None = None  # measured mean time to serve one request; None: unknown or stale
    data_key: str = ""  # the node's data-plane public key, as it gossiped it
    throughput_rps: float | None = None  # measured completions per second


@dataclass(frozen=True)
class RouteRequest:
    """What the policy needs to know about one request."""

    deployment: str
    hint: str | None = None
    model: str | None = None
    # An opaque key (a conversation's, ``affinity.py``) whose requests prefer one replica.
    affinity: str | None = None


@dataclass(frozen=True)
class Locality:
    """Where the routing node is."""

    node: NodeId
    region: str = ""
    zone: str = ""


@dataclass(frozen=True)
class Tier:
    """Candidates of equal standing, ordered by power-of-two-choices."""

    name: TierName
    candidates: tuple[Candidate, ...]
