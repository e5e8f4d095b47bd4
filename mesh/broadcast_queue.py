"""Dissemination: the transmit-limited broadcast queue and the gossip rounds that drain it.

Every membership change is broadcast by piggybacking it on outgoing packets a limited number of
times, ``retransmit_mult * ceil(log10(N + 1))``, which is enough for epidemic spread to reach every
node with high probability (memberlist's TransmitLimitedQueue). Invariants of the queue:

- at most one queued message per node: newer news about a node replaces older news (an ``alive``
  at incarnation 7 makes a queued ``suspect`` at incarnation 6 pointless); likewise one per
  deployment record (``records.py``);
- the least transmitted messages go first, and among equals the newest;
- a message transmitted ``limit`` times leaves the queue.

``Dissemination`` puts the queue to work for one node (memberlist's gossip loop): every packet the
node sends carries as much queued news as fits its byte budget, and while anything is queued, every
gossip interval sends it to ``gossip_nodes`` random peers. News larger than the whole budget (the
metadata of a node hosting a dozen deployments is ~2 KB; ``max_meta_bytes`` allows 16 KiB) is never
piggybacked, which keeps probes small, but a gossip round sends it alone in a packet of its own when
it is next in line: otherwise it would wait for a push-pull, every 30 s or more. Peers declared
dead in the last ``gossip_to_the_dead_s`` stay among those targets, so a node wrongly declared dead
hears of it and refutes.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Mapping
from dataclasses import dataclass

from .access import ApiKey
from .config import MembershipConfig
from .effects import Effect, Send
from .keyring_record import KeyringRecord
from .member import Member, PeerSet
from .records import Record
from .types import Address, NodeId
from .wire import Gossip, Message, Packet, encoded_size

__all__ = ["BroadcastQueue", "Dissemination"]

# Queue slots: a node's id; ("deployment", name) for a deployment record; ("key", id) for an API key;
# ("keyring", "") for the keyring.
_Key = NodeId | tuple[str, str]

# Bytes reserved in a packet for its own message before piggybacking broadcasts.
_PACKET_OVERHEAD_BYTES = 160


@dataclass(slots=True)
class _Entry:
    key: _Key
    message: Gossip
    size: int  # encoded bytes, measured on first use: most news is replaced before it is sent
    transmits: int
    pushed: int  # when it was queued, as a count of pushes: the newest is the largest


class BroadcastQueue:
    """Queued gossip about nodes, handed out newest and least transmitted first.

    The order lives in a heap of (transmits, -pushed, entry), so a packet costs the entries it
    looks at, each O(log n), not a sort of the whole queue: a busy mesh of 1,000 members keeps a
    news item about most of them queued. Items go stale when their entry is replaced, sent or
    dropped; they are skipped when popped, and the heap is rebuilt when they outnumber the live ones.
    """

    def __init__(self) -> None:
        # Oldest first: news replacing older news about the same key moves to the end.
        self._entries: dict[_Key, _Entry] = {}
        self._heap: list[tuple[int, int, _Entry]] = []
        self._pushes = 0
        # For stopping a packet early (see pop_for_packet): entries not measured yet, and the
        # smallest size ever measured here, a lower bound on every queued size.
        self._unmeasured = 0
        self._smallest = 1 << 30

    def __len__(self) -> int:
        return len(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def push(self, message: Gossip) -> None:
        """Queue news about a node (or a deployment), replacing anything older about it."""
        key: _Key
        if isinstance(message, Record):
            key = ("deployment", message.name)
        elif isinstance(message, ApiKey):
            key = ("key", message.id)
        elif isinstance(message, KeyringRecord):
            key = ("keyring", "")
        else:
            key = message.node
        replaced = self._entries.pop(key, None)
        if replaced is None or replaced.size >= 0:
            self._unmeasured += 1
        self._pushes += 1
        entry = self._entries[key] = _Entry(key, message, -1, 0, self._pushes)
        heapq.heappush(self._heap, (0, -entry.pushed, entry))
        if len(self._heap) > 2 * len(self._entries) + 64:
            self._heap = [(e.transmits, -e.pushed, e) for e in self._entries.values()]
            heapq.heapify(self._heap)

    def pop_for_packet(self, budget_bytes: int, limit: int, *, oversized_alone: bool = False) -> list[Gossip]:
        """Messages that fit in ``budget_bytes``; each handed out counts as one transmit.

        With `oversized_alone`, a message next in line that is larger than the whole budget is
        handed out alone instead of skipped (a gossip round's packet of its own)."""
        entries, heap = self._entries, self._heap
        if not entries or budget_bytes <= 0:
            return []
        chosen: list[Gossip] = []
        used = 0
        looked: list[_Entry] = []  # back into the heap after the packet: each entry is looked at once
        while heap:
            head_may_be_big = oversized_alone and not chosen and not looked
            if budget_bytes - used < self._smallest and not self._unmeasured and not head_may_be_big:
                break  # nothing queued fits any more: a long queue need not be walked to its end
            transmits, _, entry = heapq.heappop(heap)
            if entries.get(entry.key) is not entry or entry.transmits != transmits:
                continue  # stale: replaced, sent its limit, or moved on
            if entry.size < 0:
                entry.size = encoded_size(entry.message)
                self._unmeasured -= 1
                self._smallest = min(self._smallest, entry.size)
            alone = head_may_be_big and entry.size > budget_bytes
            if alone or used + entry.size <= budget_bytes:
                used += entry.size
                chosen.append(entry.message)
                entry.transmits += 1
                if entry.transmits >= limit:
                    del entries[entry.key]
                else:
                    looked.append(entry)
            else:
                looked.append(entry)
            if alone:
                break  # it fills a packet of its own
        for entry in looked:
            heapq.heappush(heap, (entry.transmits, -entry.pushed, entry))
        return chosen

    def queued(self) -> list[Gossip]:
        """Everything queued, for inspection."""
        return [entry.message for entry in self._entries.values()]


class Dissemination:
    """One node's outgoing news: piggybacked on every packet it sends, and gossiped in rounds."""

    def __init__(
        self,
        config: MembershipConfig,
        node_id: NodeId,
        addr: Address,
        members: Mapping[NodeId, Member],
        live: PeerSet,
        rng: random.Random,
        now: float,
    ) -> None:
        self.queue = BroadcastQueue()
        self._config = config
        self._node_id = node_id
        self._addr = addr
        self._members = members  # owned by membership; read for addresses
        self._live = live  # alive or suspect peers; owned by membership
        self._rng = rng
        self._recently_dead: dict[NodeId, float] = {}  # node -> when it was declared dead
        self._next_round_at = now

    def push(self, message: Gossip) -> None:
        """Queue news for every peer, replacing older news about the same node or deployment."""
        self.queue.push(message)

    def clear(self) -> None:
        """Drop everything queued."""
        self.queue = BroadcastQueue()

    def declared_dead(self, node: NodeId, now: float) -> None:
        """`node` was declared dead: keep gossiping to it for a while."""
        self._recently_dead[node] = now

    def revived(self, node: NodeId) -> None:
        """`node` is alive or suspect again: an ordinary gossip target."""
        self._recently_dead.pop(node, None)

    def send(self, addr: Address, messages: list[Message]) -> Send:
        """A packet carrying `messages`, with as much queued news as fits piggybacked."""
        if self.queue:
            limit = self._config.retransmit_limit(len(self._live) + 1)
            budget = self._config.packet_budget_bytes - _PACKET_OVERHEAD_BYTES
            messages = [*messages, *self.queue.pop_for_packet(budget, limit)]
        return Send(addr, Packet(self._node_id, self._addr, tuple(messages)))

    def round(self, fanout: int) -> list[Effect]:
        """Send queued news to `fanout` random peers, one packet each, while there is any."""
        limit = self._config.retransmit_limit(len(self._live) + 1)
        budget = self._config.packet_budget_bytes - _PACKET_OVERHEAD_BYTES
        effects: list[Effect] = []
        for node in self._targets(fanout):
            messages = self.queue.pop_for_packet(budget, limit, oversized_alone=True)
            if not messages:
                break
            effects.append(Send(self._members[node].addr, Packet(self._node_id, self._addr, tuple(messages))))
        return effects

    def tick(self, now: float, effects: list[Effect]) -> None:
        """Run a gossip round when one is due, and stop gossiping to the long dead."""
        if now < self._next_round_at:
            return
        self._next_round_at = now + self._config.gossip_interval_s
        if self.queue:
            effects.extend(self.round(self._config.gossip_nodes))
        horizon = now - self._config.gossip_to_the_dead_s
        for node, since in list(self._recently_dead.items()):
            if since < horizon:
                del self._recently_dead[node]

    def next_deadline(self) -> float:
        """When `tick` has a round to run (never while nothing is queued)."""
        return self._next_round_at if self.queue else float("inf")

    def _targets(self, fanout: int) -> list[NodeId]:
        live = self._live.items
        dead = list(self._recently_dead)
        total = len(live) + len(dead)
        indices = self._rng.sample(range(total), min(fanout, total))
        return [live[i] if i < len(live) else dead[i - len(live)] for i in indices]
