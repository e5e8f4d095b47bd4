"""Probe rounds of the failure detector (SWIM): this node's own probe, and probes it relays for others.

Theory of operation (Das et al., "SWIM", 2002; Dadgar et al., "Lifeguard", 2018; memberlist state.go):

- Rounds. Once per probe interval, stretched by local health (``awareness.py``), the prober pings
  one live peer, taken in a shuffled round-robin order so every peer is probed once per pass. A
  peer that becomes live mid-pass takes a random later place in it (memberlist), so it is probed
  within the pass too.
- Escalation. No ack within the probe timeout (also stretched): ``indirect_checks`` random peers
  are asked to ping the target for us, and we ping it a second time ourselves. No ack by the end of
  the interval: we suspect the target, and tell it first (Lifeguard's buddy system) so that it can
  refute at once; a suspect we probe gets the accusation with the ping.
- Relays. Asked to probe for a peer, the prober pings the target under a sequence number of its own
  and relays the ack back; if the target stays silent until the probe timeout it sends a nack.
- Local health. An ack lowers the awareness score; a failed probe raises it by the nacks that did
  not come back (relays that could not even answer point at our own network), or by one.
- Round-trip time. A direct ack measures the path; routing uses the smoothed value for locality.

``Prober`` owns the rounds' state: the pass order, the probe in flight, the relays it runs for
others and the sequence numbers that tie acks to them. It reads the live peer set and the member
rows that ``Membership`` (``membership.py``) passes in, and calls back into it only through the two
callables it is given: ``send`` (a packet with queued gossip piggybacked, ``broadcast_queue.py``)
and ``suspect`` (membership's rule for an accusation, fed ours when a probe fails). Like the rest of
the core it reads no clock and sends nothing itself: work is done in ``tick(now)``, whose effects
the shell carries out, and ``next_deadline`` says when.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from .awareness import Awareness
from .config import MembershipConfig
from .effects import Effect, Send
from .member import Member, PeerSet
from .types import Address, NodeId, Status
from .wire import Ack, IndirectPing, Message, Nack, Packet, Ping, Suspect

__all__ = ["HandleAccusation", "Probe", "ProbeMessage", "Prober", "Relay", "SendWithGossip", "random_peers"]

# A relayed target's ping goes there through a relay and its ack comes straight back: about 1.5
# round trips where a direct one takes 1. Waiting 2x would leave no time for the indirect probes
# before the interval ends in the local profile (timeout 100 ms of a 200 ms interval).
_RELAYED_TIMEOUT_FACTOR = 1.5

# Builds the packet that carries `messages` to an address, with queued gossip piggybacked.
SendWithGossip = Callable[[Address, list[Message]], Send]
# What the prober handles: every message of a probe round.
ProbeMessage = Ping | Ack | Nack | IndirectPing
# Membership's rule for an accusation (now, effects to append to); ours go through it too.
HandleAccusation = Callable[[Suspect, float, list[Effect]], None]


@dataclass
class Probe:
    """This node's probe in progress."""

    target: NodeId
    seq: int
    sent_at: float
    indirect_at: float
    fail_at: float
    indirect_sent: bool = False
    expected_nacks: int = 0
    nacks: int = 0


@dataclass(frozen=True)
class Relay:
    """A ping this node sends on behalf of a peer: where the ack goes back to, and until when."""

    origin_addr: Address
    origin_seq: int
    expires_at: float
    want_nack: bool


def random_peers(
    rng: random.Random, peers: PeerSet, count: int, exclude: NodeId | None = None
) -> list[NodeId]:
    """Up to `count` distinct random peers, never `exclude`."""
    items = peers.items
    if not items:
        return []
    picked = rng.sample(items, min(count + 1, len(items)))
    return [node for node in picked if node != exclude][:count]


class Prober:
    """Probe one peer per interval, directly then through relays; relay probes for others."""

    def __init__(
        self,
        config: MembershipConfig,
        node_id: NodeId,
        addr: Address,
        members: Mapping[NodeId, Member],
        live: PeerSet,
        awareness: Awareness,
        rng: random.Random,
        now: float,
        *,
        send: SendWithGossip,
        suspect: HandleAccusation,
    ) -> None:
        self._config = config
        self._node_id = node_id
        self._addr = addr
        self._members = members  # read, and round-trip times written; owned by membership
        self._live = live  # alive or suspect peers; owned by membership
        self._awareness = awareness
        self._rng = rng
        self._send = send
        self._suspect = suspect
        self._order: list[NodeId] = []
        self._index = 0
        self._probe: Probe | None = None
        self._relays: dict[int, Relay] = {}
        self._stopped = False
        self._seq = rng.randrange(1 << 31)
        # Timers start at random phases so that agents started together do not probe in lockstep.
        self._next_probe_at = now + rng.random() * config.probe_interval_s

    def admit(self, node: NodeId) -> None:
        """A peer just became live: give it a random place in the rest of the current pass."""
        # The node it displaces moves to the end, which keeps this O(1).
        order = self._order
        low = min(self._index, len(order))
        position = low + int(self._rng.random() * (len(order) - low + 1))
        if position == len(order):
            order.append(node)
        else:
            order.append(order[position])
            order[position] = node

    def stop(self) -> None:
        """Start no more probes of our own (the node is leaving); relays for others still finish."""
        self._stopped = True
        self._probe = None

    def handle(self, message: ProbeMessage, sender_addr: Address, now: float, effects: list[Effect]) -> None:
        """A probe message from the peer at `sender_addr`."""
        match message:
            case Ack(seq):
                self._on_ack(seq, now, effects)
            case Ping(seq, target):
                # Ours to answer only while we are in the mesh, and only if meant for us: an address
                # reused by another node must not keep a dead one alive.
                if target == self._node_id and not self._stopped:
                    effects.append(self._send(sender_addr, [Ack(seq)]))
            case Nack(seq):
                # A relay heard nothing from our target: the relay, at least, reached us.
                if self._probe is not None and self._probe.seq == seq:
                    self._probe.nacks += 1
            case IndirectPing(seq, target, target_addr, want_nack):
                # Ping the target under a sequence number of our own; its ack goes back to the
                # peer, or our nack when the probe timeout passes.
                relay_seq = self._next_seq()
                expires_at = now + self._awareness.scale(self._config.probe_timeout_s)
                self._relays[relay_seq] = Relay(sender_addr, seq, expires_at, want_nack)
                effects.append(self._send(target_addr, [Ping(relay_seq, target)]))

    def tick(self, now: float, effects: list[Effect]) -> None:
        """Escalate or fail the probe in flight, start the next one when due, expire relays."""
        if not self._stopped:
            probe = self._probe
            if probe is not None:
                if not probe.indirect_sent and now >= probe.indirect_at:
                    self._probe_indirectly(probe, effects)
                if now >= probe.fail_at:
                    self._probe = None
                    self._probe_failed(probe, now, effects)
            if now >= self._next_probe_at:
                self._next_probe_at = now + self._awareness.scale(self._config.probe_interval_s)
                self._start_probe(now, effects)
        if self._relays:
            self._expire_relays(now, effects)

    def postpone(self, by_s: float) -> None:
        """Move every timer of the rounds `by_s` later, after this node stalled that long: the
        answers its peers sent meanwhile may wait unread in its own socket, so the stall counts
        against none of them (the probe in flight keeps the time it had left in each phase)."""
        self._next_probe_at += by_s
        probe = self._probe
        if probe is not None:
            probe.sent_at += by_s  # a round-trip sample across the stall would measure the stall
            probe.indirect_at += by_s
            probe.fail_at += by_s
        for seq, relay in self._relays.items():
            self._relays[seq] = replace(relay, expires_at=relay.expires_at + by_s)

    def next_deadline(self) -> float:
        """When `tick` has work next."""
        # Called after every packet: plain comparisons, no temporary lists.
        best = float("inf") if self._stopped else self._next_probe_at
        probe = self._probe
        if probe is not None:
            due = probe.fail_at if probe.indirect_sent else probe.indirect_at
            if due < best:
                best = due
        for relay in self._relays.values():
            if relay.expires_at < best:
                best = relay.expires_at
        return best

    # -- rounds ----------------------------------------------------------------------------

    def _on_ack(self, seq: int, now: float, effects: list[Effect]) -> None:
        probe = self._probe
        if probe is not None and probe.seq == seq:
            self._awareness.apply(-1)
            self._probe = None
            member = self._members.get(probe.target)
            if member is not None and not probe.indirect_sent:
                # Only a direct answer measures the path; one through relays measures two paths.
                sample = now - probe.sent_at
                member.rtt_s = sample if member.rtt_s is None else 0.8 * member.rtt_s + 0.2 * sample
            return
        relay = self._relays.pop(seq, None)
        if relay is not None:
            effects.append(self._send(relay.origin_addr, [Ack(relay.origin_seq)]))

    def _start_probe(self, now: float, effects: list[Effect]) -> None:
        target = self._next_target()
        if target is None:
            return
        member = self._members[target]
        seq = self._next_seq()
        timeout_s = self._awareness.scale(self._config.probe_timeout_s)
        if member.meta.reach == "relayed":
            # The ping takes one more hop, through the target's relay (reachability.py).
            timeout_s *= _RELAYED_TIMEOUT_FACTOR
        self._probe = Probe(
            target,
            seq,
            sent_at=now,
            indirect_at=min(now + timeout_s, self._next_probe_at),
            fail_at=self._next_probe_at,
        )
        messages: list[Message] = [Ping(seq, target)]
        if member.status == Status.SUSPECT:
            # Tell the suspect first: it can refute before anyone else acts on the rumour.
            messages.append(Suspect(target, member.incarnation, self._node_id))
        effects.append(self._send(member.addr, messages))

    def _next_target(self) -> NodeId | None:
        for _ in range(2):
            while self._index < len(self._order):
                node = self._order[self._index]
                self._index += 1
                if node in self._live:
                    return node
            # A pass is over: reshuffle the live members for the next one.
            self._order = list(self._live.items)
            self._rng.shuffle(self._order)
            self._index = 0
        return None

    def _probe_indirectly(self, probe: Probe, effects: list[Effect]) -> None:
        probe.indirect_sent = True
        member = self._members.get(probe.target)
        if member is None:
            return
        relays = random_peers(self._rng, self._live, self._config.indirect_checks, exclude=probe.target)
        probe.expected_nacks = len(relays)
        request = IndirectPing(probe.seq, probe.target, member.addr, want_nack=True)
        for relay in relays:
            effects.append(self._send(self._members[relay].addr, [request]))
        # memberlist also retries the target directly over its reliable channel at this point;
        # a second direct ping is the same second chance, and cuts false suspicions on lossy links.
        effects.append(self._send(member.addr, [Ping(probe.seq, probe.target)]))

    def _probe_failed(self, probe: Probe, now: float, effects: list[Effect]) -> None:
        if probe.expected_nacks > 0:
            self._awareness.apply(max(probe.expected_nacks - probe.nacks, 0))
        else:
            self._awareness.apply(1)
        member = self._members.get(probe.target)
        if member is not None and not member.status.gone:
            accusation = Suspect(probe.target, member.incarnation, self._node_id)
            self._suspect(accusation, now, effects)
            # Tell the suspect first, alone in its packet: it can refute at once.
            effects.append(Send(member.addr, Packet(self._node_id, self._addr, (accusation,))))

    def _expire_relays(self, now: float, effects: list[Effect]) -> None:
        for seq, relay in list(self._relays.items()):
            if now >= relay.expires_at:
                del self._relays[seq]
                if relay.want_nack:
                    effects.append(self._send(relay.origin_addr, [Nack(relay.origin_seq)]))

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % (1 << 62)
        return self._seq
