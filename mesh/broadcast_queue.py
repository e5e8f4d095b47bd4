"""Dissemination: the transmit-limited broadcast queue and the gossip rounds that drain it.

Every membership change is broadcast by piggybacking it on outgoing packets a limited number of
times, ``retransmit_mult * ceil(log10(N + 1))``, which is enough for epidemic spread to reach every
node with high probability (memberlist's TransmitLimitedQueue). Invariants of the queue:

- at most one queued message per node: newer news about a node replaces older news (an ``alive``
  at incarnation 7 makes a queued ``suspect`` at incarnation 6 pointless); likewise one per
  deployment record (``records.py``). A node's load news (``load_news.Load``, a delta) has a slot
  of its own beside it, since it does not carry the change a queued ``alive`` may; an ``alive`` or
  a ``dead`` of the node empties that slot;
- background news (load news, or an ``alive`` that only moves a node's load) goes
  after all other news, whatever their transmits; but news replacing a foreground item sent fewer
  than ``CARRY_TRANSMITS`` times stays in the foreground, since it is then the main carrier of that
  item's change (once a few peers have it, each of them gossips it in the foreground, as news to
  them: a node classes news against what it held);
- within each of the two, the least transmitted messages go first, and among equals the newest;
- a message transmitted ``limit`` times leaves the queue.

Why two classes: every busy node republishes its load every ``meta_min_interval_s``, and each update
costs about ``N * limit`` sends mesh-wide, so past a hundred or so busy nodes load news alone is
more than gossip carries (200 nodes of ~1.2 KB metadata every 5 s want ~25 times the packets the
``lan`` profile sends). With one class, fresh load news (sent 0 times, newest) always went before a
``suspect``, a ``dead`` or a replica's new state sent once or twice: in that simulated mesh a crash
was not known everywhere after 120 s (13 s expected), nor a new hint (``bench/busy_gossip.py``). Load
news now takes what the rest leaves, so it ages as the mesh grows (routing corrects gossiped load
with what it has in flight itself), and failure detection, placement and deployments spread at
their quiet speed. Every ``BACKGROUND_EVERY``-th packet takes background news first, so load still
moves while a backlog of other news drains.

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
from .wire import Alive, Dead, Gossip, Load, Message, Packet, encoded_size

__all__ = ["BACKGROUND_EVERY", "CARRY_TRANSMITS", "BroadcastQueue", "Dissemination"]

# Queue slots: a node's id; ("load", node id) for its load news (``load_news.py``); ("deployment",
# name) for a deployment record; ("key", id) for an API key; ("keyring", "") for the keyring.
_Key = NodeId | tuple[str, str]

# Bytes reserved in a packet for its own message before piggybacking broadcasts.
_PACKET_OVERHEAD_BYTES = 160
# Foreground news sent fewer times than this passes its class on to background news replacing it.
# Not "until its limit": a busy node's load news replaces its entry every few seconds, before a
# saturated queue sends it out, so every entry would stay in the foreground and the classes mean
# nothing (the simulated mesh of the module's docstring did exactly that).
CARRY_TRANSMITS = 3
# Every this many packets, one takes background news first: load keeps moving, at a quarter of the
# packets at least, while a backlog of other news drains (a mesh starting, a change on every node).
BACKGROUND_EVERY = 4


@dataclass(slots=True)
class _Entry:
    key: _Key
    message: Gossip
    size: int  # encoded bytes, measured on first use: most news is replaced before it is sent
    transmits: int
    pushed: int  # when it was queued, as a count of pushes: the newest is the largest
    background: bool  # load news only (see the module's docstring)


class BroadcastQueue:
    """Queued gossip about nodes, handed out newest and least transmitted first, foreground first.

    Each class's order lives in a heap of (transmits, -pushed, entry), so a packet costs the entries
    it looks at, each O(log n), not a sort of the whole queue: a busy mesh of 1,000 members keeps a
    news item about most of them queued. Items go stale when their entry is replaced, sent or
    dropped; they are skipped when popped, and the heaps are rebuilt when they outnumber the live ones.
    """

    def __init__(self) -> None:
        # Oldest first: news replacing older news about the same key moves to the end.
        self._entries: dict[_Key, _Entry] = {}
        self._heaps: tuple[list[tuple[int, int, _Entry]], ...] = ([], [])  # foreground, background
        self._pushes = 0
        # For stopping a packet early (see pop_for_packet): entries not measured yet, and the
        # smallest size ever measured here, a lower bound on every queued size.
        self._unmeasured = 0
        self._smallest = 1 << 30

    def __len__(self) -> int:
        return len(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def push(self, message: Gossip, *, background: bool = False) -> None:
        """Queue news about a node (or a deployment), replacing anything older about it.

        `background`: load news only, handed out after other news (but kept in the foreground if it
        replaces foreground news sent fewer than ``CARRY_TRANSMITS`` times)."""
        key: _Key
        if isinstance(message, Record):
            key = ("deployment", message.name)
        elif isinstance(message, ApiKey):
            key = ("key", message.id)
        elif isinstance(message, KeyringRecord):
            key = ("keyring", "")
        elif isinstance(message, Load):
            key = ("load", message.node)  # beside the node's other news, which it does not replace
        else:
            key = message.node
            if isinstance(message, Alive | Dead):
                self._forget(("load", message.node))  # an alive holds newer load; the dead have none
        replaced = self._entries.pop(key, None)
        if replaced is None or replaced.size >= 0:
            self._unmeasured += 1
        self._pushes += 1
        background = background and (
            replaced is None or replaced.background or replaced.transmits >= CARRY_TRANSMITS
        )
        entry = self._entries[key] = _Entry(key, message, -1, 0, self._pushes, background)
        heapq.heappush(self._heaps[background], (0, -entry.pushed, entry))
        if len(self._heaps[0]) + len(self._heaps[1]) > 2 * len(self._entries) + 64:
            self._heaps = ([], [])
            for e in self._entries.values():
                self._heaps[e.background].append((e.transmits, -e.pushed, e))
            for heap in self._heaps:
                heapq.heapify(heap)

    def drop_load_news(self) -> None:
        """Forget every queued ``Load`` (a member that does not take them joined: ``load_news.py``)."""
        for key in [key for key in self._entries if isinstance(key, tuple) and key[0] == "load"]:
            self._forget(key)

    def _forget(self, key: _Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None and entry.size < 0:
            self._unmeasured -= 1

    def pop_for_packet(
        self, budget_bytes: int, limit: int, *, oversized_alone: bool = False, background_first: bool = False
    ) -> list[Gossip]:
        """Messages that fit in ``budget_bytes``; each handed out counts as one transmit.

        Foreground news first, then background (`background_first`: the other way round). With
        `oversized_alone`, a message next in line that is larger than the whole budget is handed
        out alone instead of skipped (a gossip round's packet of its own)."""
        if not self._entries or budget_bytes <= 0:
            return []
        chosen: list[Gossip] = []
        looked: list[_Entry] = []  # back into the heaps after the packet: each entry is looked at once
        foreground, background = self._heaps
        used = 0
        for heap in (background, foreground) if background_first else (foreground, background):
            used = self._fill(heap, budget_bytes, used, limit, oversized_alone, chosen, looked)
            if used > budget_bytes:
                break  # one oversized message fills the packet
        for entry in looked:
            heapq.heappush(self._heaps[entry.background], (entry.transmits, -entry.pushed, entry))
        return chosen

    def _fill(
        self,
        heap: list[tuple[int, int, _Entry]],
        budget_bytes: int,
        used: int,
        limit: int,
        oversized_alone: bool,
        chosen: list[Gossip],
        looked: list[_Entry],
    ) -> int:
        """Add what fits of `heap` to `chosen` (`used` bytes so far); the bytes used after.

        More than `budget_bytes` when one oversized message was handed out alone.
        """
        entries = self._entries
        while heap:
            head_may_be_big = oversized_alone and not chosen and not looked
            if budget_bytes - used < self._smallest and not self._unmeasured and not head_may_be_big:
                return used  # nothing queued fits any more: a long queue need not be walked to its end
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
                return used  # it fills a packet of its own
        return used

    def queued(self) -> list[Gossip]:
        """Everything queued, for inspection."""
        return [entry.message for entry in self._entries.values()]

    def counts(self) -> dict[str, int]:
        """News queued by class (``meshnode_gossip_queued``): a backlog that stays is a saturated mesh."""
        background = sum(entry.background for entry in self._entries.values())
        return {"foreground": len(self._entries) - background, "background": background}


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
        self._packets = 0  # packets that took queued news: every BACKGROUND_EVERY-th starts with load

    def push(self, message: Gossip, *, background: bool = False) -> None:
        """Queue news for every peer, replacing older news about the same node or deployment."""
        self.queue.push(message, background=background)

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
            messages = [*messages, *self._pop(budget, limit, oversized_alone=False)]
        return Send(addr, Packet(self._node_id, self._addr, tuple(messages)))

    def round(self, fanout: int) -> list[Effect]:
        """Send queued news to `fanout` random peers, one packet each, while there is any."""
        limit = self._config.retransmit_limit(len(self._live) + 1)
        budget = self._config.packet_budget_bytes - _PACKET_OVERHEAD_BYTES
        effects: list[Effect] = []
        for node in self._targets(fanout):
            messages = self._pop(budget, limit, oversized_alone=True)
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

    def _pop(self, budget: int, limit: int, *, oversized_alone: bool) -> list[Gossip]:
        self._packets += 1
        background_first = self._packets % BACKGROUND_EVERY == 0
        return self.queue.pop_for_packet(
            budget, limit, oversized_alone=oversized_alone, background_first=background_first
        )

    def _targets(self, fanout: int) -> list[NodeId]:
        live = self._live.items
        dead = list(self._recently_dead)
        total = len(live) + len(dead)
        indices = self._rng.sample(range(total), min(fanout, total))
        return [live[i] if i < len(live) else dead[i - len(live)] for i in indices]
