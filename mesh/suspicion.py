"""Lifeguard's dynamic suspicion timeout (Dadgar et al., "Lifeguard", 2018; memberlist suspicion.go).

A suspicion starts at ``max_s`` and shrinks toward ``min_s`` as independent peers confirm it:

    timeout(c) = max(min_s, max_s - (max_s - min_s) * log(c + 1) / log(k + 1))

where ``c`` is the number of distinct confirmers so far and ``k`` the number expected. A lone
accuser therefore waits long (giving a slow-but-alive node time to refute), while a node many peers
independently fail to reach is declared dead quickly. As in memberlist, ``k = suspicion_mult - 2``,
or 0 when the mesh has fewer than ``k + 2`` members; with ``k == 0`` the minimum applies at once.

``Suspicions`` holds the open suspicions of one node's view, one per suspected node, and keeps the
earliest deadline at hand: the core asks for it after every packet.

Vouching (meshnode's, not memberlist's). A node takes another's ``dead`` verdict only once it has
suspected the accused itself for half the shortest suspicion (``suspicion_mult * probe_interval``,
Lifeguard's minimum for N <= 10). A real death's verdict comes a whole suspicion timeout after the
suspicion began, and the suspicion reaches every node within a dissemination time, so it is always
vouched for. A verdict from across a partition just repaired is not: the accused's own side never
suspected it, or only since the moment of the repair. Such a verdict goes to the accused, which
refutes it, and changes nothing here but to confirm a suspicion already held; so nobody declares
dead a node it could reach. (A node that missed a real death's suspicion learns of the death from
its own probe instead, a probe round and a suspicion later: rare, and slower, never wrong.)
"""

from __future__ import annotations

import math

from .config import MembershipConfig
from .types import NodeId

INFINITY = float("inf")


class Suspicion:
    """One suspicion of one node: its start, confirmers and current deadline."""

    def __init__(self, accuser: NodeId, expected: int, min_s: float, max_s: float, now: float) -> None:
        self.start = now
        self.expected = expected
        self.min_s = min_s
        self.max_s = max_s if expected > 0 else min_s
        self.confirmers: set[NodeId] = {accuser}
        self.deadline = now + self._timeout()

    def _timeout(self) -> float:
        confirmations = len(self.confirmers) - 1
        if self.expected <= 0 or confirmations <= 0:
            return self.max_s
        fraction = math.log(confirmations + 1) / math.log(self.expected + 1)
        return max(self.min_s, self.max_s - fraction * (self.max_s - self.min_s))

    def confirm(self, source: NodeId) -> bool:
        """Count an independent confirmation; True if it was new (then re-gossip it)."""
        if source in self.confirmers or len(self.confirmers) > self.expected:
            return False
        self.confirmers.add(source)
        self.deadline = self.start + self._timeout()
        return True


class Suspicions:
    """The open suspicions, one per node, and the earliest of their deadlines."""

    def __init__(self, config: MembershipConfig) -> None:
        self._config = config
        self._vouching_s = config.suspicion_mult * config.probe_interval_s / 2
        self._by_node: dict[NodeId, Suspicion] = {}
        # The earliest deadline, or None when it must be recomputed (after a removal).
        self._earliest: float | None = INFINITY

    def __contains__(self, node: object) -> bool:
        return node in self._by_node

    def __getitem__(self, node: NodeId) -> Suspicion:
        return self._by_node[node]

    def __len__(self) -> int:
        return len(self._by_node)

    def start(self, node: NodeId, accuser: NodeId, cluster_size: int, now: float) -> None:
        """Open a suspicion of `node`, sized for a mesh of `cluster_size` (memberlist's k and bounds)."""
        if node in self._by_node:
            self._earliest = None  # replaced: its old deadline may have been the earliest
        expected = self._config.suspicion_mult - 2
        if cluster_size - 2 < expected:
            expected = 0
        suspicion = Suspicion(
            accuser,
            expected,
            self._config.suspicion_min_s(cluster_size),
            self._config.suspicion_max_s(cluster_size),
            now,
        )
        self._by_node[node] = suspicion
        self._lowered(suspicion.deadline)

    def confirm(self, node: NodeId, source: NodeId) -> bool:
        """Count `source`'s accusation of `node`; True if it was a new, independent one."""
        suspicion = self._by_node.get(node)
        if suspicion is None or not suspicion.confirm(source):
            return False
        self._lowered(suspicion.deadline)
        return True

    def vouches(self, node: NodeId, now: float) -> bool:
        """Whether `node` has been suspected here long enough to take another node's verdict on it."""
        suspicion = self._by_node.get(node)
        return suspicion is not None and now - suspicion.start >= self._vouching_s

    def discard(self, node: NodeId) -> None:
        """Forget the suspicion of `node`, if any (refuted, or the node is gone)."""
        suspicion = self._by_node.pop(node, None)
        if suspicion is not None and suspicion.deadline == self._earliest:
            self._earliest = None

    def postpone(self, by_s: float) -> None:
        """Move every suspicion `by_s` later, after this node stalled that long: a refutation may
        wait unread in its own socket."""
        for suspicion in self._by_node.values():
            suspicion.start += by_s
            suspicion.deadline += by_s
        self._earliest = None

    def due(self, now: float) -> list[NodeId]:
        """Nodes whose suspicion has timed out, oldest suspicion first."""
        if now < self.next_deadline():
            return []
        return [node for node, suspicion in self._by_node.items() if now >= suspicion.deadline]

    def next_deadline(self) -> float:
        """The earliest deadline (infinity when nobody is suspected)."""
        if self._earliest is None:
            self._earliest = min((s.deadline for s in self._by_node.values()), default=INFINITY)
        return self._earliest

    def _lowered(self, deadline: float) -> None:
        if self._earliest is not None and deadline < self._earliest:
            self._earliest = deadline
