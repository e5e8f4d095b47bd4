"""The candidates routing ranks, read from the gossiped view: each ready replica of a deployment on a
live or suspect member, with what its metadata says about its load, speed and place.

``node/dataplane/candidates.py`` keeps the result per deployment and view version; ``routing.rank``
orders it. Metadata passed ``NodeMeta.from_wire`` before it got here, so a malformed replica entry
is already gone; the speeds map, shaped by peers, is read leniently (a bad figure is unmeasured).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from .member import Member
from .route_types import Candidate
from .types import NodeId, Status

__all__ = ["candidates"]


def candidates(members: Iterable[Member], deployment: str, me: NodeId) -> list[Candidate]:
    """The ready replicas of `deployment` on live or suspect members, from their gossiped metadata.

    Gossiped metadata passed ``NodeMeta.from_wire``: a replica entry that was malformed is not there,
    and the speeds map, shaped by peers, is read leniently (a bad figure counts as unmeasured).
    """
    members = list(members)
    rtts = {member.node: member.rtt_s for member in members}
    found = []
    for member in members:
        if member.status not in (Status.ALIVE, Status.SUSPECT):
            continue
        meta = member.meta
        entry = meta.replicas.get(deployment)
        if entry is None or not entry.state.serving or not meta.data:
            continue
        speed = meta.speeds.get(deployment)
        speed = speed if isinstance(speed, dict) else {}
        # Stale (see the module docstring): rate 0, not a missing rate (older versions gossip none).
        rate = speed.get("rps")
        stale = isinstance(rate, int | float) and not isinstance(rate, bool) and rate == 0
        service_ms = None if stale else _number(speed.get("service_ms"))
        found.append(
            Candidate(
                node=member.node,
                name=meta.name,
                data_addr=meta.data,
                data_key=meta.data_key,
                status=member.status,
                is_self=member.node == me,
                region=meta.region,
                zone=meta.zone,
                rtt_s=_rtt_through_relays(member, rtts) if meta.reach == "relayed" else member.rtt_s,
                hints=frozenset(entry.hints),
                models=frozenset(entry.models),
                queue=entry.queue,
                slots=entry.slots,
                capacity=entry.capacity,
                service_s=service_ms / 1000 if service_ms is not None else None,
                throughput_rps=_number(speed.get("rps")),
            )
        )
    return found


def _rtt_through_relays(member: Member, rtts: Mapping[NodeId, float | None]) -> float | None:
    """A relayed node's round trip with the hop to its nearest measured relay added (docs/edge.md)."""
    hop = min(
        (rtt for relay in member.meta.relays if (rtt := rtts.get(NodeId(relay))) is not None), default=None
    )
    return member.rtt_s if hop is None else (member.rtt_s or 0.0) + hop


def _number(value: object) -> float | None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        return None
    return float(value)
