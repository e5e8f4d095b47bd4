"""SWIM membership with the Lifeguard extensions, as a pure state machine.

Theory of operation (Das et al., "SWIM", 2002; Dadgar et al., "Lifeguard", 2018; hashicorp/memberlist):

- Probing (``probe.py``). Once per probe interval this node pings one peer, taken in a shuffled
  round-robin order so every peer is probed within one pass. No ack within the probe timeout:
  ``indirect_checks`` random peers are asked to ping it for us. No ack by the end of the interval:
  we suspect it.
- Suspicion. A suspect has until its Lifeguard timeout (``suspicion.py``) to refute by gossiping
  ``alive`` with a higher incarnation; independent confirmations shorten the wait. We tell the
  suspect first, by piggybacking the accusation on the next ping we send it. Past the timeout it
  is declared dead.
- Incarnations. Only a node raises its own incarnation, and only to refute an accusation (or on
  restart). For the same node, news with a higher incarnation wins; at equal incarnation
  ``dead``/``left`` beats ``suspect`` beats ``alive``. Metadata changes do not touch the
  incarnation: they raise ``meta_version``, which orders ``alive`` messages at equal incarnation.
- Dissemination. Every change is queued once per node in a transmit-limited queue and piggybacked on
  pings, acks and gossip rounds (``gossip_nodes`` random peers every gossip interval while anything
  is queued) until sent ``retransmit_limit(N)`` times.
- Anti-entropy. Every push-pull interval a full state exchange with one random live peer repairs
  what gossip missed; every reconnect interval one with a random dead member lets a healed
  partition merge back. Remote ``dead`` rows merge as suspicions, so a live node wrongly declared
  dead hears of it and refutes instead of staying dead (memberlist's mergeState).
- Deployment records. The deployment table (``records.py``) rides along: a record that wins is
  queued like membership news, and every push-pull carries the whole table, so declarations reach
  every node and a healed partition merges both sides' writes.
- Local health. A node that misses nacks or must refute raises its awareness score, which stretches
  its own probe interval and timeout (``awareness.py``).

The core never reads a clock, sleeps or touches a socket: ``handle`` and ``tick`` take ``now`` and
return effects (packets to send, membership changes) for the shell to carry out, and
``next_deadline`` says when ``tick`` must run next.
"""

from __future__ import annotations

import random

from .awareness import Awareness
from .broadcast_queue import BroadcastQueue
from .config import MembershipConfig
from .deployment import DeploymentSpec
from .effects import Effect, IncarnationChanged, MemberChanged, RecordChanged, Send
from .member import Member, PeerSet
from .metadata import NodeMeta
from .probe import Probe, ProbeRounds, Relay
from .records import DeploymentTable, Record
from .suspicion import Suspicion
from .types import Address, NodeId, Status
from .wire import (
    Ack,
    Alive,
    Dead,
    IndirectPing,
    MemberState,
    Message,
    Nack,
    Packet,
    Ping,
    PushPull,
    Suspect,
)

# Bytes reserved in a packet for its own message before piggybacking broadcasts.
_PACKET_OVERHEAD_BYTES = 160


class Membership(ProbeRounds):
    """One node's membership core. Feed it packets and ticks; carry out what it returns."""

    def __init__(
        self,
        config: MembershipConfig,
        node_id: NodeId,
        addr: Address,
        meta: NodeMeta,
        *,
        rng: random.Random,
        now: float,
        incarnation: int = 0,
        seeds: tuple[Address, ...] = (),
    ) -> None:
        self.config = config
        self.node_id = node_id
        self.rng = rng
        self.me = Member(node_id, addr, incarnation, Status.ALIVE, 0, meta, now)
        self.members: dict[NodeId, Member] = {node_id: self.me}
        # Raised whenever a member joins, leaves the table, changes status, address or metadata:
        # views derived from the members (routing candidates) are cached against it.
        self.view_version = 0
        self.awareness = Awareness(config.awareness_max_multiplier)
        self.leaving = False
        self.deployments = DeploymentTable()
        self._queue = BroadcastQueue()
        self._live = PeerSet()  # alive or suspect, never self
        self._recently_dead: dict[NodeId, float] = {}
        self._gone: set[NodeId] = set()  # dead or left, until reaped
        self._suspicions: dict[NodeId, Suspicion] = {}
        self._relays: dict[int, Relay] = {}
        self._probe: Probe | None = None
        self._probe_order: list[NodeId] = []
        self._probe_index = 0
        self._seq = rng.randrange(1 << 31)
        # Timers start at random phases so that agents started together do not probe in lockstep.
        self._next_probe_at = now + rng.random() * config.probe_interval_s
        self._next_gossip_at = now
        self._next_push_pull_at = now + config.push_pull_interval_s * (0.5 + rng.random())
        self._next_reconnect_at = now + config.reconnect_interval_s * (0.5 + rng.random())
        self._seeds = seeds
        self._seed_wait_s = config.seed_retry_initial_s
        self._next_seed_at: float | None = now if seeds else None
        self._queue.push(self._alive_of_self())

    # -- public surface --------------------------------------------------------------------

    @property
    def incarnation(self) -> int:
        """This node's current incarnation."""
        return self.me.incarnation

    def live_count(self) -> int:
        """Members alive or suspect, this node included (the N of the formulas)."""
        return len(self._live) + 1

    def has_peers(self) -> bool:
        """Whether this node has joined anyone."""
        return len(self._live) > 0

    def join(self, addrs: tuple[Address, ...] | list[Address], now: float) -> list[Effect]:
        """Start a full state exchange with each address (seeds, or nodes found by mDNS)."""
        exchange = self._push_pull(reply_wanted=True, join=True)
        return [self._send(addr, exchange, piggyback=False) for addr in addrs]

    def leave(self, now: float) -> list[Effect]:
        """Leave gracefully: tell peers we are `left`, stop probing and refuting."""
        if self.leaving:
            return []
        self.leaving = True
        self.me.status = Status.LEFT
        self.view_version += 1
        self.me.since = now
        self._probe = None
        self._queue.push(Dead(self.node_id, self.me.incarnation, self.node_id))
        effects: list[Effect] = []
        self._gossip_round(effects, fanout=max(self.config.gossip_nodes, 2 * self.config.gossip_nodes))
        return effects

    def leave_announced(self) -> bool:
        """True once our `left` message has been piggybacked its full count."""
        return not any(isinstance(m, Dead) and m.node == self.node_id for m in self._queue.queued())

    def update_meta(self, meta: NodeMeta) -> None:
        """Replace this node's metadata and gossip it (raises meta_version, not incarnation)."""
        if meta == self.me.meta:
            return
        self.me.meta = meta
        self.me.meta_version += 1
        self.view_version += 1
        self._queue.push(self._alive_of_self())

    def declare(self, name: str, spec: DeploymentSpec | None, wall_ms: int) -> list[Effect]:
        """Write a deployment record here (spec None removes it) and gossip it."""
        return self.merge_record(self.deployments.write(name, spec, self.node_id, wall_ms))

    def merge_record(self, record: Record) -> list[Effect]:
        """Take a record (from the wire, the node's database or a local write); gossip it if it wins."""
        held = self.deployments.get(record.name)
        if held is record or self.deployments.merge(record):
            self._queue.push(record)
            return [RecordChanged(record)]
        return []

    def clear_broadcasts(self) -> None:
        """Drop queued gossip; the simulator uses it to start from an already settled mesh."""
        self._queue = BroadcastQueue()

    def handle(self, packet: Packet, now: float) -> list[Effect]:
        """Process one validated packet from the wire."""
        if packet.sender == self.node_id:
            return []
        effects: list[Effect] = []
        for message in packet.messages:
            self._dispatch(message, packet, now, effects)
        return effects

    def tick(self, now: float) -> list[Effect]:
        """Run every timer that is due."""
        effects: list[Effect] = []
        if not self.leaving:
            self._tick_probe(now, effects)
        self._tick_relays(now, effects)
        self._tick_suspicions(now, effects)
        self._tick_gossip(now, effects)
        if not self.leaving:
            self._tick_push_pull(now, effects)
            self._tick_reconnect(now, effects)
            self._tick_seeds(now, effects)
        return effects

    def next_deadline(self) -> float:
        """When `tick` must next run."""
        # Called after every packet: plain comparisons, no temporary lists.
        best = float("inf") if self.leaving else self._next_probe_at
        if self._queue and self._next_gossip_at < best:
            best = self._next_gossip_at
        probe = self._probe
        if probe is not None:
            best = min(best, probe.fail_at if probe.indirect_sent else probe.indirect_at)
        if self._relays:
            best = min(best, min(relay.expires_at for relay in self._relays.values()))
        if self._suspicions:
            best = min(best, min(s.deadline for s in self._suspicions.values()))
        if not self.leaving:
            best = min(best, self._next_push_pull_at, self._next_reconnect_at)
            if self._next_seed_at is not None and self._next_seed_at < best:
                best = self._next_seed_at
        return best

    # -- receiving -------------------------------------------------------------------------

    def _dispatch(self, message: Message, packet: Packet, now: float, effects: list[Effect]) -> None:
        match message:
            case Ping(seq, target):
                if target == self.node_id and not self.leaving:
                    effects.append(self._send(packet.sender_addr, Ack(seq)))
            case IndirectPing(seq, target, target_addr, want_nack):
                relay_seq = self._next_seq()
                expires = now + self.awareness.scale(self.config.probe_timeout_s)
                self._relays[relay_seq] = Relay(packet.sender_addr, seq, expires, want_nack)
                effects.append(self._send(target_addr, Ping(relay_seq, target)))
            case Ack(seq):
                self._on_ack(seq, now, effects)
            case Nack(seq):
                if self._probe is not None and self._probe.seq == seq:
                    self._probe.nacks += 1
            case Alive() | Suspect() | Dead():
                self._on_gossip(message, now, effects)
                self._correct_stale(message, packet.sender_addr, effects)
            case PushPull(reply_wanted, _join, states, records):
                for state in states:
                    self._merge(state, packet.sender, now, effects)
                for record in records:
                    effects.extend(self.merge_record(record))
                if reply_wanted and not self.leaving:
                    reply = self._push_pull(reply_wanted=False, join=False)
                    effects.append(self._send(packet.sender_addr, reply, piggyback=False))
            case Record():
                effects.extend(self.merge_record(message))

    def _on_gossip(self, message: Alive | Suspect | Dead, now: float, effects: list[Effect]) -> None:
        match message:
            case Alive():
                self._on_alive(message, now, effects)
            case Suspect():
                self._on_suspect(message, now, effects)
            case Dead():
                self._on_dead(message, now, effects)

    def _correct_stale(
        self, message: Alive | Suspect | Dead, sender_addr: Address, effects: list[Effect]
    ) -> None:
        """Answer an outdated accusation with the newer `alive` we hold.

        Epidemic spread can miss a node now and then (one in ~10^4 per rumour at N = 1000). A node
        that missed a refutation keeps gossiping the stale suspicion; whoever receives it sends the
        refutation straight back, so the laggard catches up long before its suspicion times out.
        """
        if isinstance(message, Alive):
            return
        member = self.members.get(message.node)
        if member is None or message.incarnation >= member.incarnation or member.status != Status.ALIVE:
            return
        news = Alive(member.node, member.incarnation, member.addr, member.meta_version, member.meta)
        effects.append(Send(sender_addr, Packet(self.node_id, self.me.addr, (news,))))

    def _merge(self, state: MemberState, sender: NodeId, now: float, effects: list[Effect]) -> None:
        known = self.members.get(state.node)
        if (
            known is not None
            and known.incarnation == state.incarnation
            and known.meta_version >= state.meta_version
            and known.status == state.status
        ):
            return  # the common case in a steady mesh: nothing new
        match state.status:
            case Status.ALIVE:
                alive = Alive(state.node, state.incarnation, state.addr, state.meta_version, state.meta)
                self._on_alive(alive, now, effects)
            case Status.LEFT:
                self._on_dead(Dead(state.node, state.incarnation, state.node), now, effects)
            case Status.SUSPECT | Status.DEAD:
                # A remote "dead" only makes us suspect: if the node lives it gets to refute.
                self._on_suspect(Suspect(state.node, state.incarnation, sender), now, effects)

    def _on_alive(self, alive: Alive, now: float, effects: list[Effect]) -> None:
        if alive.node == self.node_id:
            me = self.me
            stale_claim = alive.incarnation > me.incarnation or (
                alive.incarnation == me.incarnation
                and (alive.addr != me.addr or alive.meta_version > me.meta_version)
            )
            if stale_claim and not self.leaving:
                self._refute(alive.incarnation, effects)
            return
        member = self.members.get(alive.node)
        if member is None:
            member = Member(
                alive.node, alive.addr, alive.incarnation, Status.ALIVE, alive.meta_version, alive.meta, now
            )
            self.members[alive.node] = member
            self.view_version += 1
            self._add_live(alive.node)
            self._queue.push(alive)
            effects.append(MemberChanged(alive.node, None, Status.ALIVE))
            return
        newer = alive.incarnation > member.incarnation
        meta_only = (
            alive.incarnation == member.incarnation
            and alive.meta_version > member.meta_version
            and not member.status.gone
        )
        if not (newer or meta_only):
            return
        member.addr = alive.addr
        member.incarnation = alive.incarnation
        member.meta_version = alive.meta_version
        member.meta = alive.meta
        self.view_version += 1
        self._queue.push(alive)
        if newer and member.status != Status.ALIVE:
            self._set_status(member, Status.ALIVE, now, effects)

    def _on_suspect(self, suspect: Suspect, now: float, effects: list[Effect]) -> None:
        member = self.members.get(suspect.node)
        if member is None or suspect.incarnation < member.incarnation or member.status.gone:
            return
        if suspect.node == self.node_id:
            if not self.leaving:
                self.awareness.apply(1)
                self._refute(suspect.incarnation, effects)
            return
        if member.status == Status.SUSPECT:
            suspicion = self._suspicions.get(suspect.node)
            if suspicion is not None and suspicion.confirm(suspect.source):
                self._queue.push(suspect)
            return
        member.incarnation = suspect.incarnation
        n = self.live_count()
        expected = self.config.suspicion_mult - 2
        if n - 2 < expected:
            expected = 0
        self._suspicions[suspect.node] = Suspicion(
            suspect.source, expected, self.config.suspicion_min_s(n), self.config.suspicion_max_s(n), now
        )
        self._queue.push(suspect)
        self._set_status(member, Status.SUSPECT, now, effects)

    def _on_dead(self, dead: Dead, now: float, effects: list[Effect]) -> None:
        member = self.members.get(dead.node)
        if member is None or dead.incarnation < member.incarnation or member.status.gone:
            return
        if dead.node == self.node_id:
            if not self.leaving:
                self._refute(dead.incarnation, effects)
            return
        member.incarnation = dead.incarnation
        self._queue.push(dead)
        self._set_status(member, Status.LEFT if dead.source == dead.node else Status.DEAD, now, effects)

    def _refute(self, accused_incarnation: int, effects: list[Effect]) -> None:
        self.me.incarnation = max(self.me.incarnation, accused_incarnation) + 1
        self._queue.push(self._alive_of_self())
        effects.append(IncarnationChanged(self.me.incarnation))

    def _set_status(self, member: Member, status: Status, now: float, effects: list[Effect]) -> None:
        previous = member.status
        member.status = status
        member.since = now
        self.view_version += 1
        if status.gone:
            self._gone.add(member.node)
            self._live.discard(member.node)
            self._suspicions.pop(member.node, None)
            if status == Status.DEAD:
                self._recently_dead[member.node] = now
        else:
            self._gone.discard(member.node)
            self._add_live(member.node)
            self._recently_dead.pop(member.node, None)
            if status == Status.ALIVE:
                self._suspicions.pop(member.node, None)
        effects.append(MemberChanged(member.node, previous, status))

    def _add_live(self, node: NodeId) -> None:
        if node in self._live:
            return
        self._live.add(node)
        # A newcomer joins the current probe pass at a random later position (memberlist); the
        # node it displaces moves to the end, which keeps this O(1).
        order = self._probe_order
        low = min(self._probe_index, len(order))
        position = low + int(self.rng.random() * (len(order) - low + 1))
        if position == len(order):
            order.append(node)
        else:
            order.append(order[position])
            order[position] = node

    # -- timers ----------------------------------------------------------------------------

    def _tick_suspicions(self, now: float, effects: list[Effect]) -> None:
        for node, suspicion in list(self._suspicions.items()):
            if now >= suspicion.deadline:
                member = self.members[node]
                self._on_dead(Dead(node, member.incarnation, self.node_id), now, effects)

    def _tick_gossip(self, now: float, effects: list[Effect]) -> None:
        if now < self._next_gossip_at:
            return
        self._next_gossip_at = now + self.config.gossip_interval_s
        if self._queue:
            self._gossip_round(effects, self.config.gossip_nodes)
        horizon = now - self.config.gossip_to_the_dead_s
        for node, since in list(self._recently_dead.items()):
            if since < horizon:
                del self._recently_dead[node]

    def _gossip_round(self, effects: list[Effect], fanout: int) -> None:
        limit = self.config.retransmit_limit(self.live_count())
        budget = self.config.packet_budget_bytes - _PACKET_OVERHEAD_BYTES
        for node in self._gossip_targets(fanout):
            messages = self._queue.pop_for_packet(budget, limit)
            if not messages:
                return
            effects.append(Send(self.members[node].addr, Packet(self.node_id, self.me.addr, tuple(messages))))

    def _tick_push_pull(self, now: float, effects: list[Effect]) -> None:
        if now < self._next_push_pull_at:
            return
        interval = self.config.push_pull_scaled_s(self.live_count())
        self._next_push_pull_at = now + interval * (0.75 + 0.5 * self.rng.random())
        alive = [node for node in self._random_live(3) if self.members[node].status == Status.ALIVE]
        if alive:
            peer = self.members[alive[0]]
            exchange = self._push_pull(reply_wanted=True, join=False)
            effects.append(self._send(peer.addr, exchange, piggyback=False))

    def _tick_reconnect(self, now: float, effects: list[Effect]) -> None:
        if now < self._next_reconnect_at:
            return
        self._next_reconnect_at = now + self.config.reconnect_interval_s
        horizon = now - self.config.dead_retention_s
        dead: list[Member] = []
        for node in list(self._gone):
            member = self.members[node]
            if member.since < horizon:
                del self.members[node]  # reap
                self.view_version += 1
                self._gone.discard(node)
            elif member.status == Status.DEAD:
                dead.append(member)
        if dead:
            target = self.rng.choice(dead)
            exchange = self._push_pull(reply_wanted=True, join=False)
            effects.append(self._send(target.addr, exchange, piggyback=False))

    def _tick_seeds(self, now: float, effects: list[Effect]) -> None:
        if self._next_seed_at is None:
            return
        if self.has_peers():
            self._seed_wait_s = self.config.seed_retry_initial_s
            self._next_seed_at = now + self._seed_wait_s
            return
        if now >= self._next_seed_at:
            effects.extend(self.join(self._seeds, now))
            self._next_seed_at = now + self._seed_wait_s
            self._seed_wait_s = min(self._seed_wait_s * 2, self.config.seed_retry_max_s)

    # -- helpers ---------------------------------------------------------------------------

    def _alive_of_self(self) -> Alive:
        me = self.me
        return Alive(me.node, me.incarnation, me.addr, me.meta_version, me.meta)

    def _full_state(self) -> tuple[MemberState, ...]:
        return tuple(member.state() for member in self.members.values())

    def _push_pull(self, *, reply_wanted: bool, join: bool) -> PushPull:
        return PushPull(reply_wanted, join, self._full_state(), tuple(self.deployments.all()))

    def _gossip_targets(self, fanout: int) -> list[NodeId]:
        live = self._live.items
        dead = list(self._recently_dead)
        total = len(live) + len(dead)
        indices = self.rng.sample(range(total), min(fanout, total))
        return [live[i] if i < len(live) else dead[i - len(live)] for i in indices]

    def _send(self, addr: Address, message: Message, *, piggyback: bool = True) -> Send:
        return self._send_many(addr, [message], piggyback=piggyback)

    def _send_many(self, addr: Address, messages: list[Message], *, piggyback: bool = True) -> Send:
        if piggyback and self._queue:
            limit = self.config.retransmit_limit(self.live_count())
            messages = messages + list(
                self._queue.pop_for_packet(self.config.packet_budget_bytes - _PACKET_OVERHEAD_BYTES, limit)
            )
        return Send(addr, Packet(self.node_id, self.me.addr, tuple(messages)))
