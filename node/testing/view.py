"""A fake gossiped view: the members a forwarder routes over, built from short specs of peers.

``FakeView`` has what the forwarder reads of the gossip runner (``MeshView`` in
``dataplane/forward.py``): ``members()`` and a ``view_version`` that moves whenever a member
changes. Each member comes from a ``PeerSpec``: the node's name, place and status, and its replicas
as it gossips them (``ReplicaEntry``: state, queue, slots, capacity, hints, models) with their
measured service times. Routing reads these members exactly as it reads real ones
(``mesh/route_candidates.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..mesh.member import Member
from ..mesh.metadata import NodeMeta
from ..mesh.replica_state import ReplicaEntry
from ..mesh.types import Address, NodeId, Status

__all__ = ["FakeView", "PeerSpec", "peer_id"]


def peer_id(name: str) -> NodeId:
    """The node id of the fake peer called `name` (ids and names differ, as on a real mesh)."""
    return NodeId(f"{name}-id")


@dataclass(frozen=True)
class PeerSpec:
    """One peer as the view shows it."""

    name: str
    # Its replicas as it gossips them, by deployment name.
    replicas: Mapping[str, ReplicaEntry] = field(default_factory=dict)
    # Measured mean time per request, by deployment (unmeasured when absent).
    service_ms: Mapping[str, float] = field(default_factory=dict)
    status: Status = Status.ALIVE
    region: str = ""
    zone: str = ""
    rtt_s: float | None = None
    # Its data-plane address; a made-up one unless the test runs a real server.
    data: str = ""

    @property
    def node(self) -> NodeId:
        """This peer's node id."""
        return peer_id(self.name)

    @property
    def data_addr(self) -> str:
        """Where its data plane listens (as gossiped in ``NodeMeta.data``)."""
        return self.data or f"{self.name}.invalid:9"

    def member(self, version: int) -> Member:
        """This peer as a member of the view, its metadata at `version`."""
        meta = NodeMeta(
            name=self.name,
            data=self.data_addr,
            region=self.region,
            zone=self.zone,
            replicas=dict(self.replicas),
            speeds={name: {"service_ms": ms} for name, ms in self.service_ms.items()},
        )
        return Member(
            node=self.node,
            addr=Address(f"{self.name}.invalid:7946"),
            incarnation=1,
            status=self.status,
            meta_version=version,
            meta=meta,
            since=0.0,
            rtt_s=self.rtt_s,
        )


class FakeView:
    """The members this node sees, set by the test; ``view_version`` moves on every change."""

    def __init__(self, peers: Iterable[PeerSpec] = ()) -> None:
        self._version = 0
        self._specs: dict[str, PeerSpec] = {}
        self._members: dict[str, Member] = {}
        for spec in peers:
            self.put(spec)

    @property
    def view_version(self) -> int:
        """Bumped whenever a member or its metadata changes."""
        return self._version

    def members(self) -> list[Member]:
        """Every member, in any state."""
        return list(self._members.values())

    def member(self, node: NodeId) -> Member | None:
        """One member, or None when unknown."""
        return next((member for member in self._members.values() if member.node == node), None)

    def spec(self, name: str) -> PeerSpec:
        """The spec the peer called `name` was last put with."""
        return self._specs[name]

    def put(self, spec: PeerSpec) -> None:
        """Add the peer, or replace what the view says about it (as a gossiped update would)."""
        self._version += 1
        self._specs[spec.name] = spec
        self._members[spec.name] = spec.member(self._version)

    def remove(self, name: str) -> None:
        """Forget the peer altogether (as after the dead grace period)."""
        self._version += 1
        self._specs.pop(name, None)
        self._members.pop(name, None)
