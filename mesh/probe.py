"""Probe rounds of the failure detector (SWIM): this node's own probe, and probes it relays for others.

``ProbeRounds`` holds the rounds' logic and ``Membership`` (``membership.py``) inherits it, as
memberlist splits one state struct over several files: the probe's state lives on the membership
core, and nothing here reads a clock or sends anything (it returns effects like the rest).

A probe pings its target directly; without an ack by ``indirect_at`` it asks a few peers to ping
the target too (and sends a second direct ping); without any ack by ``fail_at`` the target becomes
suspect. Nacks from relays tell this node whether its own network is the problem (Lifeguard's local
health). A direct ack also measures the round-trip time that routing uses for locality.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .awareness import Awareness
from .config import MembershipConfig
from .effects import Effect, Send
from .member import Member, PeerSet
from .types import Address, NodeId, Status
from .wire import Ack, IndirectPing, Message, Nack, Packet, Ping, Suspect

__all__ = ["Probe", "ProbeRounds", "Relay"]


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


class ProbeRounds:
    """Probe one peer per interval, directly then through relays; suspect it if nobody heard it."""

    # State that lives on the membership core (declared here for the type checker).
    config: MembershipConfig
    node_id: NodeId
    rng: random.Random
    me: Member
    members: dict[NodeId, Member]
    awareness: Awareness
    _live: PeerSet
    _probe: Probe | None
    _probe_order: list[NodeId]
    _probe_index: int
    _relays: dict[int, Relay]
    _next_probe_at: float
    _seq: int

    if TYPE_CHECKING:  # provided by Membership

        def _send(self, addr: Address, message: Message, *, piggyback: bool = True) -> Send: ...

        def _send_many(self, addr: Address, messages: list[Message], *, piggyback: bool = True) -> Send: ...

        def _on_suspect(self, suspect: Suspect, now: float, effects: list[Effect]) -> None: ...

    def _on_ack(self, seq: int, now: float, effects: list[Effect]) -> None:
        probe = self._probe
        if probe is not None and probe.seq == seq:
            self.awareness.apply(-1)
            self._probe = None
            member = self.members.get(probe.target)
            if member is not None and not probe.indirect_sent:
                # Only a direct answer measures the path; one through relays measures two paths.
                sample = now - probe.sent_at
                member.rtt_s = sample if member.rtt_s is None else 0.8 * member.rtt_s + 0.2 * sample
            return
        relay = self._relays.pop(seq, None)
        if relay is not None:
            effects.append(self._send(relay.origin_addr, Ack(relay.origin_seq)))

    def _tick_probe(self, now: float, effects: list[Effect]) -> None:
        probe = self._probe
        if probe is not None:
            if not probe.indirect_sent and now >= probe.indirect_at:
                self._probe_indirectly(probe, effects)
            if now >= probe.fail_at:
                self._probe = None
                self._probe_failed(probe, now, effects)
        if now >= self._next_probe_at:
            self._next_probe_at = now + self.awareness.scale(self.config.probe_interval_s)
            self._start_probe(now, effects)

    def _start_probe(self, now: float, effects: list[Effect]) -> None:
        target = self._next_probe_target()
        if target is None:
            return
        member = self.members[target]
        seq = self._next_seq()
        self._probe = Probe(
            target,
            seq,
            sent_at=now,
            indirect_at=now + self.awareness.scale(self.config.probe_timeout_s),
            fail_at=self._next_probe_at,
        )
        messages: list[Message] = [Ping(seq, target)]
        if member.status == Status.SUSPECT:
            # Tell the suspect first: it can refute before anyone else acts on the rumour.
            messages.append(Suspect(target, member.incarnation, self.node_id))
        effects.append(self._send_many(member.addr, messages))

    def _next_probe_target(self) -> NodeId | None:
        for _ in range(2):
            while self._probe_index < len(self._probe_order):
                node = self._probe_order[self._probe_index]
                self._probe_index += 1
                if node in self._live:
                    return node
            # A pass is over: reshuffle the live members for the next one.
            self._probe_order = list(self._live.items)
            self.rng.shuffle(self._probe_order)
            self._probe_index = 0
        return None

    def _probe_indirectly(self, probe: Probe, effects: list[Effect]) -> None:
        probe.indirect_sent = True
        member = self.members.get(probe.target)
        if member is None:
            return
        relays = self._random_live(self.config.indirect_checks, exclude=probe.target)
        probe.expected_nacks = len(relays)
        request = IndirectPing(probe.seq, probe.target, member.addr, want_nack=True)
        for relay in relays:
            effects.append(self._send(self.members[relay].addr, request))
        # memberlist also retries the target directly over its reliable channel at this point;
        # a second direct ping is the same second chance, and cuts false suspicions on lossy links.
        effects.append(self._send(member.addr, Ping(probe.seq, probe.target)))

    def _probe_failed(self, probe: Probe, now: float, effects: list[Effect]) -> None:
        if probe.expected_nacks > 0:
            self.awareness.apply(max(probe.expected_nacks - probe.nacks, 0))
        else:
            self.awareness.apply(1)
        member = self.members.get(probe.target)
        if member is not None and not member.status.gone:
            accusation = Suspect(probe.target, member.incarnation, self.node_id)
            self._on_suspect(accusation, now, effects)
            # Tell the suspect first (Lifeguard's buddy system): it can refute at once.
            effects.append(Send(member.addr, Packet(self.node_id, self.me.addr, (accusation,))))

    def _tick_relays(self, now: float, effects: list[Effect]) -> None:
        if not self._relays:
            return
        for seq, relay in list(self._relays.items()):
            if now >= relay.expires_at:
                del self._relays[seq]
                if relay.want_nack:
                    effects.append(self._send(relay.origin_addr, Nack(relay.origin_seq)))

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % (1 << 62)
        return self._seq

    def _random_live(self, count: int, exclude: NodeId | None = None) -> list[NodeId]:
        items = self._live.items
        if not items:
            return []
        picked = self.rng.sample(items, min(count + 1, len(items)))
        return [node for node in picked if node != exclude][:count]
