"""Transmit-limited broadcast queue (memberlist's TransmitLimitedQueue).

Every membership change is broadcast by piggybacking it on outgoing packets a limited number of
times, ``retransmit_mult * ceil(log10(N + 1))``, which is enough for epidemic spread to reach every
node with high probability. Invariants:

- at most one queued message per node: newer news about a node replaces older news (an ``alive``
  at incarnation 7 makes a queued ``suspect`` at incarnation 6 pointless); likewise one per
  deployment record (``records.py``);
- the least transmitted messages go first, and among equals the newest;
- a message transmitted ``limit`` times leaves the queue.
"""

from __future__ import annotations

from dataclasses import dataclass

from .records import Record
from .types import NodeId
from .wire import Gossip, encoded_size

# Queue slots: a node's id, or ("deployment", name) for a deployment record.
_Key = NodeId | tuple[str, str]


@dataclass
class _Entry:
    message: Gossip
    size: int  # encoded bytes, measured on first use: most news is replaced before it is sent
    transmits: int
    order: int  # insertion counter: larger is newer


class BroadcastQueue:
    """Queued gossip about nodes, handed out newest and least transmitted first."""

    def __init__(self) -> None:
        self._entries: dict[_Key, _Entry] = {}
        self._counter = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def push(self, message: Gossip) -> None:
        """Queue news about a node (or a deployment), replacing anything older about it."""
        self._counter += 1
        key: _Key = ("deployment", message.name) if isinstance(message, Record) else message.node
        self._entries[key] = _Entry(message, -1, 0, self._counter)

    def pop_for_packet(self, budget_bytes: int, limit: int) -> list[Gossip]:
        """Messages that fit in ``budget_bytes``; each handed out counts as one transmit."""
        if not self._entries or budget_bytes <= 0:
            return []
        chosen: list[Gossip] = []
        used = 0
        ranked = sorted(self._entries.items(), key=lambda item: (item[1].transmits, -item[1].order))
        for key, entry in ranked:
            if entry.size < 0:
                entry.size = encoded_size(entry.message)
            if used + entry.size > budget_bytes:
                continue
            used += entry.size
            chosen.append(entry.message)
            entry.transmits += 1
            if entry.transmits >= limit:
                del self._entries[key]
        return chosen

    def queued(self) -> list[Gossip]:
        """Everything queued, for inspection."""
        return [entry.message for entry in self._entries.values()]
