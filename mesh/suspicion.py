"""Lifeguard's dynamic suspicion timeout (Dadgar et al., "Lifeguard", 2018; memberlist suspicion.go).

A suspicion starts at ``max_s`` and shrinks toward ``min_s`` as independent peers confirm it:

    timeout(c) = max(min_s, max_s - (max_s - min_s) * log(c + 1) / log(k + 1))

where ``c`` is the number of distinct confirmers so far and ``k`` the number expected. A lone
accuser therefore waits long (giving a slow-but-alive node time to refute), while a node many peers
independently fail to reach is declared dead quickly. With ``k == 0`` (tiny meshes) the minimum
applies at once.
"""

from __future__ import annotations

import math

from .types import NodeId


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
