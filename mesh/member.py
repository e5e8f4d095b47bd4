"""One member as a node sees it, and the set of live peers the core samples from."""

from __future__ import annotations

from dataclasses import dataclass

from .metadata import NodeMeta
from .types import Address, NodeId, Status
from .wire import Alive, MemberState


@dataclass(slots=True)
class Member:
    """One node as this node sees it."""

    node: NodeId
    addr: Address
    incarnation: int
    status: Status
    meta_version: int
    meta: NodeMeta
    since: float  # when the status last changed (this node's clock)
    # Round-trip time of direct probes, smoothed; None until one was answered. Routing uses it.
    rtt_s: float | None = None

    def newer_alive(self, accused_incarnation: int) -> Alive | None:
        """Our `alive` of this member if it refutes an accusation at `accused_incarnation`, else None.

        Epidemic spread can miss a node now and then (one in ~10^4 per rumour at N = 1000). A node
        that missed a refutation keeps gossiping the stale suspicion; whoever receives it sends the
        refutation straight back, so the laggard catches up long before its suspicion times out.
        """
        if accused_incarnation >= self.incarnation or self.status != Status.ALIVE:
            return None
        return Alive(self.node, self.incarnation, self.addr, self.meta_version, self.meta)

    def restored_by(self, incarnation: int, meta_version: int, meta: NodeMeta) -> bool:
        """Whether `meta`, at the version held, is whole where the copy held lost fields on its way.

        A node of an earlier release passes on what it relays without the fields it does not know,
        at the owner's version; a node that took that copy first would ignore the owner's own at the
        same version until the owner changes again (with ``features`` gone, it would also believe
        the owner takes no load news). ``features`` tells the two copies apart: every release that
        has the field lists a feature in it."""
        same = (incarnation, meta_version) == (self.incarnation, self.meta_version)
        return same and bool(meta.features) and not self.meta.features

    def state(self) -> MemberState:
        """This member as a push-pull row."""
        return MemberState(self.node, self.addr, self.incarnation, self.status, self.meta_version, self.meta)


class PeerSet:
    """Ids with O(1) add, remove and uniform random choice."""

    def __init__(self) -> None:
        self.items: list[NodeId] = []
        self._index: dict[NodeId, int] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, node: object) -> bool:
        return node in self._index

    def add(self, node: NodeId) -> None:
        """Add `node` if absent."""
        if node not in self._index:
            self._index[node] = len(self.items)
            self.items.append(node)

    def discard(self, node: NodeId) -> None:
        """Remove `node` if present, by moving the last item into its slot."""
        index = self._index.pop(node, None)
        if index is None:
            return
        last = self.items.pop()
        if index < len(self.items):
            self.items[index] = last
            self._index[last] = index
