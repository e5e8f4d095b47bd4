"""Joining through seeds: contacted at start, then again while this node stays alone.

A node given seeds (``--seed``) sends each a full state exchange at once (``Membership.join``). As
long as nobody has answered, it tries again after ``seed_retry_initial_s``, each wait twice the one
before, up to ``seed_retry_max_s``, and keeps running alone meanwhile. Once it has peers the wait
starts over, so a node that loses every peer later retries its seeds promptly. Like the rest of the
core it reads no clock: ``due`` takes ``now``.
"""

from __future__ import annotations

from .config import MembershipConfig
from .types import Address

__all__ = ["SeedRetry"]


class SeedRetry:
    """When to contact the seeds again."""

    def __init__(self, seeds: tuple[Address, ...], config: MembershipConfig, now: float) -> None:
        self.seeds = seeds
        self._initial_s = config.seed_retry_initial_s
        self._max_s = config.seed_retry_max_s
        self._wait_s = self._initial_s
        # Checked whenever the core's next deadline is: without seeds, never.
        self.next_at = now if seeds else float("inf")

    def due(self, now: float, *, alone: bool) -> bool:
        """Whether to contact the seeds now; `alone`: this node has no peers."""
        if not self.seeds:
            return False
        if not alone:
            self._wait_s = self._initial_s
            self.next_at = now + self._wait_s
            return False
        if now < self.next_at:
            return False
        self.next_at = now + self._wait_s
        self._wait_s = min(self._wait_s * 2, self._max_s)
        return True
