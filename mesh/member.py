"""One member as a node sees it, and the set of live peers the core samples from."""

from __future__ import annotations

from dataclasses import dataclass

from .metadata import NodeMeta
from .types import Address, NodeId, Status
from .wire import MemberState


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
