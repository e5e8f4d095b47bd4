"""The body of ``GET /v1/mesh``: every member as this node sees it, sorted by name.

``mesh_body`` builds it as a dict (the agent's ``mesh_view``, the event feed, tests). The route
answers from ``MeshRender`` instead: each member's entry is kept as JSON with the values it was
rendered from (``MemberRow``: id, address, status, incarnation and the metadata object, which is
frozen and replaced whole on every change, never changed in place) and rendered again only when one
of them changed (``rendered.py``, in slices that yield to the event loop), so a poll of a quiet
1,000-member view reads the members and joins 640 KiB of kept JSON instead of building, validating
and serializing it all on the event loop at once.

Invariants: the route's bytes are what FastAPI made of ``mesh_body`` through ``MeshResponse``
(pydantic's JSON serializer, the same one used here; the unit tests compare both on varied views);
nothing in an entry depends on the clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple, Protocol

from pydantic_core import to_json

from ..mesh.member import Member
from ..mesh.metadata import NodeMeta
from ..mesh.types import Address, NodeId, Status
from .rendered import RenderedList

__all__ = ["MemberRow", "MemberSource", "MeshRender", "member_entry", "mesh_body"]


class MemberSource(Protocol):
    """The gossiped members (the gossip runner)."""

    def members(self) -> Iterable[Member]:
        """Every member, in any state."""
        ...


class MemberRow(NamedTuple):
    """All that a member's entry reads of it, as values: equal rows, equal entries."""

    node: NodeId
    addr: Address
    status: Status
    incarnation: int
    meta: NodeMeta

    @classmethod
    def of(cls, member: Member) -> MemberRow:
        """The row of `member` as it is now."""
        return cls(member.node, member.addr, member.status, member.incarnation, member.meta)


def member_entry(row: MemberRow) -> dict[str, Any]:
    """One member's entry in ``GET /v1/mesh`` (``MemberView``'s fields, in its order)."""
    meta = row.meta
    return {
        "id": row.node,
        "name": meta.name,
        "status": row.status.value,
        "http": meta.http,
        "tls": meta.tls,
        "mesh": row.addr,
        "data": meta.data,
        # The data plane's public key: public, but useless without the mesh token.
        "data_key": meta.data_key,
        "key_ids": list(meta.key_ids),
        "region": meta.region,
        "zone": meta.zone,
        "device": meta.device,
        "load": meta.load,
        "models": list(meta.models),
        "hints": list(meta.hints),
        "incarnation": row.incarnation,
        "replicas": {name: entry.to_wire() for name, entry in meta.replicas.items()},
        "speeds": meta.speeds,
        "reach": meta.reach,
        "relays": list(meta.relays),
        "traffic": meta.traffic,
        # The models in its store, and those it is pulling from peers (docs/models.md).
        "store": meta.store,
        "pulls": meta.pulls,
        "features": list(meta.features),
    }


def mesh_body(self_id: str, members: Iterable[Member]) -> dict[str, Any]:
    """The body of ``GET /v1/mesh``: every member as `self_id` sees it, sorted by name."""
    listed = [member_entry(MemberRow.of(member)) for member in members]
    listed.sort(key=lambda m: (m["name"], m["id"]))
    return {"self": self_id, "members": listed}


def _entry_json(row: MemberRow) -> bytes:
    # inf_nan_mode as MeshResponse's serializer (pydantic's default config): a NaN load is null.
    return to_json(member_entry(row), inf_nan_mode="null")


class MeshRender:
    """``GET /v1/mesh`` as JSON bytes, each member rendered again only when it changed."""

    def __init__(self, self_id: str, members: MemberSource) -> None:
        self._members = members
        prefix = b'{"self":' + to_json(self_id) + b',"members":['
        self.pieces: RenderedList[NodeId, MemberRow] = RenderedList(prefix, b"]}", _entry_json)

    async def body(self) -> bytes:
        """The body as of now (the members are read here, before any await)."""
        rows = sorted(map(MemberRow.of, self._members.members()), key=lambda row: (row.meta.name, row.node))
        return await self.pieces.body([(row.node, row) for row in rows])
