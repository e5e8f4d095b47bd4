"""Lifeguard's local health awareness (memberlist awareness.go).

A node that misses acks may be the one in trouble (CPU starved, a saturated link) rather than its
peers. Its health score rises with each sign of trouble, missed nacks and refuting suspicions of
itself, and falls with each successful probe; its probe interval and timeout are multiplied by
``score + 1``, so a struggling node slows its own accusations instead of falsely killing healthy
peers. The score stays in ``[0, max_multiplier - 1]``.
"""

from __future__ import annotations


class Awareness:
    """The local health score and the multiplier it implies."""

    def __init__(self, max_multiplier: int) -> None:
        self.max_multiplier = max_multiplier
        self.score = 0

    def apply(self, delta: int) -> None:
        """Adjust the score, clamped to its range."""
        self.score = min(max(self.score + delta, 0), self.max_multiplier - 1)

    def scale(self, seconds: float) -> float:
        """A timeout stretched by the current health multiplier."""
        return seconds * (self.score + 1)
