"""Joining through seeds: contacted at start, then again while this node stays alone.

A node given seeds (``--seed``) sends each a full state exchange at once (``Membership.join``). As
long as nobody has answered, it tries again after ``seed_retry_initial_s``, each wait twice the one
before, up to ``seed_retry_max_s``, and keeps running alone meanwhile. Once it has peers the wait
starts over, so a node that loses every peer later retries its seeds promptly. Like the rest of the
core it reads no clock: ``due`` takes ``now``.

``SeedWatch`` decides when the node tells its user how joining goes: a warning once it has been
alone ``first_s`` (the shell says why, seed by seed), repeated at gaps that double up to ``max_s``
so a node left alone writes a bounded number of lines, not one per retry; and one word when the
node has peers at last. A node that loses every peer later is watched again from the start.
"""

from __future__ import annotations

import enum

from .config import MembershipConfig
from .types import Address

__all__ = ["SeedNews", "SeedRetry", "SeedWatch"]


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


class SeedNews(enum.Enum):
    """What the user should hear about joining."""

    STILL_ALONE = "still_alone"  # no seed (nor anyone) has answered yet: warn
    JOINED = "joined"  # the node has peers now


class SeedWatch:
    """When to warn that no seed has answered, and when to say the node joined."""

    def __init__(self, first_s: float, max_s: float, now: float) -> None:
        if not 0 < first_s <= max_s:
            raise ValueError(f"need 0 < first_s <= max_s, got {first_s} and {max_s}")
        self._first_s = first_s
        self._max_s = max_s
        self._gap_s = first_s
        self._joined = False
        #: When the node became alone (its start, or the loss of its last peer).
        self.alone_since = now
        #: When `update` may warn next; infinity while the node has peers (no warning is due, and a
        #: shell that sleeps until this time must not find it in the past and spin).
        self.next_at = now + first_s

    def update(self, now: float, *, alone: bool) -> SeedNews | None:
        """The news at `now`, if any; `alone`: this node has no peers."""
        if not alone:
            self.next_at = float("inf")
            if self._joined:
                return None
            self._joined = True
            return SeedNews.JOINED
        if self._joined:  # every peer is gone: watch the rejoin as the first join
            self._joined = False
            self._gap_s = self._first_s
            self.alone_since = now
            self.next_at = now + self._first_s
            return None
        if now < self.next_at:
            return None
        self._gap_s = min(self._gap_s * 2, self._max_s)
        self.next_at = now + self._gap_s
        return SeedNews.STILL_ALONE
