"""Anti-entropy's timers: when a node exchanges its full state, and with whom.

Every push-pull interval (scaled with the mesh's size, memberlist's ``pushPullScale``) a full state
exchange with one random live peer repairs what gossip missed; every reconnect interval one with a
random dead member lets a healed partition merge back, and members gone longer than
``dead_retention_s`` are reaped from the table then. The exchange itself (``exchange.py``) and
what a node makes of the state it receives are the membership core's.
"""

from __future__ import annotations

import random

from .config import MembershipConfig
from .member import Member, PeerSet
from .probe import random_peers
from .types import Address, NodeId, Status
from .view_versions import ViewVersions

__all__ = ["AntiEntropy"]


class AntiEntropy:
    """The two timers of one membership core, over the tables the core owns."""

    def __init__(
        self,
        config: MembershipConfig,
        members: dict[NodeId, Member],
        live: PeerSet,
        gone: dict[NodeId, None],
        versions: ViewVersions,
        rng: random.Random,
        now: float,
    ) -> None:
        self._config = config
        self._members = members
        self._live = live
        self._gone = gone
        self._versions = versions
        self._rng = rng
        # Random phases, so that agents started together do not exchange in lockstep.
        self._next_push_pull_at = now + config.push_pull_interval_s * (0.5 + rng.random())
        self._next_reconnect_at = now + config.reconnect_interval_s * (0.5 + rng.random())

    def next_deadline(self) -> float:
        """When `due` has something to do next."""
        return min(self._next_push_pull_at, self._next_reconnect_at)

    def due(self, now: float) -> list[Address]:
        """The addresses to exchange full state with now, in order (none, one or two)."""
        wanted: list[Address] = []
        if now >= self._next_push_pull_at:
            interval = self._config.push_pull_scaled_s(len(self._live) + 1)
            self._next_push_pull_at = now + interval * (0.75 + 0.5 * self._rng.random())
            for node in random_peers(self._rng, self._live, 3):
                if self._members[node].status == Status.ALIVE:
                    wanted.append(self._members[node].addr)
                    break
        if now >= self._next_reconnect_at:
            self._next_reconnect_at = now + self._config.reconnect_interval_s
            horizon = now - self._config.dead_retention_s
            dead: list[Member] = []
            for node in list(self._gone):
                member = self._members[node]
                if member.since < horizon:
                    del self._members[node]  # reap
                    self._versions.member_changed()
                    del self._gone[node]
                elif member.status == Status.DEAD:
                    dead.append(member)
            if dead:
                wanted.append(self._rng.choice(dead).addr)
        return wanted
