"""SWIM membership with the Lifeguard extensions, as a pure state machine.

Theory of operation (Das et al., "SWIM", 2002; Dadgar et al., "Lifeguard", 2018; hashicorp/memberlist).
This module holds one node's view of the mesh and the rules that change it; the parts it drives
each own their state in a module of their own:

- Failure detection (``probe.py``, ``Prober``): one peer probed per interval, directly and then
  through ``indirect_checks`` relays; a target nobody reached comes back here as an accusation.
- Suspicion (``suspicion.py``). A suspect has until its Lifeguard timeout to refute by gossiping
  ``alive`` with a higher incarnation; independent confirmations shorten the wait. Then it is dead.
  Another node's verdict is taken only on a suspicion this node vouches for; else the accused gets it.
- Incarnations. Only a node raises its own incarnation, and only to refute an accusation (or on
  restart). For the same node, news with a higher incarnation wins; at equal incarnation
  ``dead``/``left`` beats ``suspect`` beats ``alive``. Metadata changes do not touch the
  incarnation: they raise ``meta_version``, which orders ``alive`` messages at equal incarnation
  (at equal version too, a whole copy replaces one an earlier release stripped: ``restored_by``).
  Claims are cut to the bounds first (``bounds.py``, ``admission.py``): no view nears the maximum.
- Dissemination (``broadcast_queue.py``). Every change is queued once per node, piggybacked and
  gossiped in rounds until sent ``retransmit_limit(N)`` times; news of load only goes after the
  rest, as a delta once every member takes one (``load_news.py``, ``load_gate.py``).
- Anti-entropy. Every push-pull interval a full state exchange (in parts: ``exchange.py``) with one
  random live peer repairs what gossip missed; every reconnect interval one with a random dead member
  lets a healed partition merge back (``anti_entropy.py``). A remote ``dead`` row merges as a suspicion
  (memberlist's mergeState), or, for a node alive here at that incarnation (a stale verdict), goes to
  it to refute.
- Shared tables (``shared_tables.py``): deployments, API keys and the keyring ride along with gossip.
- Local health. A node that misses nacks or must refute raises its awareness score, which stretches
  its own probe interval and timeout (``awareness.py``).

The core never reads a clock, sleeps or touches a socket: ``handle`` and ``tick`` take ``now`` and
return effects (packets to send, membership changes) for the shell to carry out, and
``next_deadline`` says when ``tick`` must run next.
"""

from __future__ import annotations

import random

from .access import ApiKey
from .admission import Admission
from .anti_entropy import AntiEntropy
from .awareness import Awareness
from .broadcast_queue import Dissemination
from .config import MembershipConfig
from .deployment import DeploymentSpec
from .effects import Effect, IncarnationChanged, MemberChanged, Send
from .exchange import push_pull_parts
from .keyring_record import KeyringRecord
from .load_gate import LoadGate
from .load_news import Load, stamped
from .member import Member, PeerSet
from .metadata import NodeMeta
from .probe import Prober
from .records import Record
from .seeds import SeedRetry
from .shared_tables import SharedTables
from .stalls import StallWatch
from .suspicion import Suspicions
from .types import Address, NodeId, Status
from .view_versions import ViewVersions
from .wire import Ack, Alive, Dead, IndirectPing, MemberState, Message, Nack, Packet, Ping, PushPull, Suspect


class Membership:
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
        self.me = Member(node_id, addr, incarnation, Status.ALIVE, 0, stamped(meta), now)
        self.members: dict[NodeId, Member] = {node_id: self.me}
        self.versions = ViewVersions()  # what the shells' views and placement are cached against
        self.awareness = Awareness(config.awareness_max_multiplier)
        self.leaving = False
        self._admission = Admission(node_id, config.max_clock_offset_s)
        self.refused = self._admission.refused  # what the bounds cut or refused, by reason
        self._live = PeerSet()  # alive or suspect, never self
        # Dead or left, until reaped. Not a set: a set's order follows per-process string hashing.
        self._gone: dict[NodeId, None] = {}
        self._suspicions = Suspicions(config)
        self.gossip = Dissemination(config, node_id, addr, self.members, self._live, rng, now)  # shells read
        self.tables = SharedTables(node_id, self._admission, self.gossip.push)
        self._load = LoadGate(node_id, self.members, self.versions, self.gossip)
        self.load_news = self._load.counts  # load news sent and taken, by outcome (load_gate.COUNTS)
        self.deployments, self.keys = self.tables.deployments, self.tables.keys
        self._prober = Prober(
            config, node_id, addr, self.members, self._live, self.awareness, rng, now,
            send=self.gossip.send, suspect=self._on_suspect,
        )  # fmt: skip
        self._anti_entropy = AntiEntropy(
            config, self.members, self._live, self._gone, self.versions, rng, now
        )  # after the prober: the same draws of `rng` in the same order
        self._seed_retry = SeedRetry(seeds, config, now)
        self.stalls = StallWatch(config.probe_timeout_s, now)  # ``stalls.py``; shells count them
        self.gossip.push(self._alive_of_self())

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
        return [send for addr in addrs for send in self._exchange(addr, join=True)]

    def leave(self, now: float) -> list[Effect]:
        """Leave gracefully: tell peers we are `left`, stop probing and refuting."""
        if self.leaving:
            return []
        self.leaving = True
        self.me.status = Status.LEFT
        self.versions.member_changed()
        self.me.since = now
        self._prober.stop()
        self.gossip.push(Dead(self.node_id, self.me.incarnation, self.node_id))
        return self.gossip.round(2 * self.config.gossip_nodes)  # twice the fanout: our last word

    def leave_announced(self) -> bool:
        """True once our `left` message has been piggybacked its full count."""
        return not any(isinstance(m, Dead) and m.node == self.node_id for m in self.gossip.queue.queued())

    def update_meta(self, meta: NodeMeta) -> None:
        """Replace this node's metadata and gossip it (raises meta_version, not incarnation)."""
        meta = stamped(meta)
        if meta == self.me.meta:
            return
        beyond_load = self.versions.meta_changed(self.me.meta, meta)
        self.me.meta = meta
        self.me.meta_version += 1
        self.gossip.push(self._load.own(self.me, beyond_load), background=not beyond_load)

    def declare(self, name: str, spec: DeploymentSpec | None, wall_ms: int) -> list[Effect]:
        """Write a deployment record here (spec None removes it) and gossip it."""
        return self.tables.declare(name, spec, wall_ms)

    def merge_record(self, record: Record, wall_ms: int) -> list[Effect]:
        """Take a record (from the wire or the node's database) unless stamped too far past `wall_ms`."""
        return self.tables.merge_record(record, wall_ms)

    def clear_broadcasts(self) -> None:
        """Drop queued gossip; the simulator uses it to start from an already settled mesh."""
        self.gossip.clear()

    def handle(self, packet: Packet, now: float, wall_ms: int) -> list[Effect]:
        """Process one validated packet from the wire; `wall_ms`: the wall clock, to bound stamps."""
        if packet.sender == self.node_id:
            return []
        effects: list[Effect] = []
        for message in packet.messages:
            self._dispatch(message, packet, now, wall_ms, effects)
        held = self.members.get(packet.sender)
        if held is not None and held.status != Status.ALIVE and any(type(m) is Ping for m in packet.messages):
            # It probes us, so it runs: tell it, so it refutes now (our word may miss its address).
            news = Suspect(held.node, held.incarnation, self.node_id)
            effects.append(self._alone(packet.sender_addr, news))
        return effects

    def tick(self, now: float) -> list[Effect]:
        """Run every timer that is due."""
        effects: list[Effect] = []
        self._resume_after_stall(now)
        self._prober.tick(now, effects)
        for node in self._suspicions.due(now):
            self._on_dead(Dead(node, self.members[node].incarnation, self.node_id), now, effects)
        self.gossip.tick(now, effects)
        if not self.leaving:
            for addr in self._anti_entropy.due(now):
                effects.extend(self._exchange(addr))
            if self._seed_retry.due(now, alone=not self.has_peers()):
                effects.extend(self.join(self._seed_retry.seeds, now))
        return effects

    def _resume_after_stall(self, now: float) -> None:
        """After a stall, move the probe and suspicion timers by it (``stalls.py``)."""
        due = self._prober.next_deadline()
        if (suspicion_due := self._suspicions.next_deadline()) < due:
            due = suspicion_due
        if (stalled_s := self.stalls.stalled_s(now, due)) > 0:
            self._prober.postpone(stalled_s)
            self._suspicions.postpone(stalled_s)
            self.awareness.apply(1)  # Lifeguard: a slow node doubts itself

    def next_deadline(self) -> float:
        """When `tick` must next run."""
        # Called after every packet: plain comparisons, no temporary lists.
        best = min(
            self._prober.next_deadline(), self.gossip.next_deadline(), self._suspicions.next_deadline()
        )
        if not self.leaving:
            best = min(best, self._anti_entropy.next_deadline(), self._seed_retry.next_at)
        return best

    # -- receiving -------------------------------------------------------------------------

    def _dispatch(
        self, message: Message, packet: Packet, now: float, wall_ms: int, effects: list[Effect]
    ) -> None:
        if isinstance(message, Alive | Suspect | Dead | Load):
            message = self._admission.gossip(message, self.members.get(message.node))
        # Gossip first: it is most of what arrives.
        match message:
            case Alive():
                self._on_alive(message, now, effects)
            case Suspect():
                self._on_suspect(message, now, effects)
                self._correct_stale(message, packet.sender_addr, effects)
            case Dead():
                self._on_dead(message, now, effects)
                self._correct_stale(message, packet.sender_addr, effects)
            case Ping() | Ack() | Nack() | IndirectPing():
                self._prober.handle(message, packet.sender_addr, now, effects)
            case PushPull(reply_wanted, _join, states, records, keys, keyring):
                for state in states:
                    self._merge(state, packet.sender, now, effects)
                effects.extend(self.tables.take((*records, *keys, *([keyring] if keyring else [])), wall_ms))
                if reply_wanted and not self.leaving:
                    effects.extend(self._exchange(packet.sender_addr, reply_wanted=False))
            case Record() | ApiKey() | KeyringRecord():
                effects.extend(self.tables.merge(message, wall_ms))
            case Load():
                if (news := self._load.take(message)) is not None:
                    self.gossip.push(news, background=True)

    def _correct_stale(self, message: Suspect | Dead, sender_addr: Address, effects: list[Effect]) -> None:
        """Answer an outdated accusation with the newer `alive` we hold (see ``Member.newer_alive``)."""
        member = self.members.get(message.node)
        news = member.newer_alive(message.incarnation) if member is not None else None
        if news is not None:
            effects.append(self._alone(sender_addr, news))

    def _merge(self, state: MemberState, sender: NodeId, now: float, effects: list[Effect]) -> None:
        known = self.members.get(state.node)
        state = self._admission.row(state, known)
        if (
            known is not None
            and known.incarnation == state.incarnation
            and known.meta_version >= state.meta_version
            and known.status == state.status
            and not known.restored_by(state.incarnation, state.meta_version, state.meta)
        ):
            return  # the common case in a steady mesh: nothing new
        match state.status:
            case Status.ALIVE:
                alive = Alive(state.node, state.incarnation, state.addr, state.meta_version, state.meta)
                self._on_alive(alive, now, effects)
            case Status.LEFT:
                self._on_dead(Dead(state.node, state.incarnation, state.node), now, effects)
            case Status.SUSPECT | Status.DEAD:
                accusation = Suspect(state.node, state.incarnation, sender)
                stale = (Status.ALIVE, state.incarnation)
                if known and (known.status, known.incarnation) == stale and known.node != self.node_id:
                    effects.append(self._alone(known.addr, accusation))  # it refutes; we keep it
                else:
                    self._on_suspect(accusation, now, effects)

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
            self.versions.member_changed()
            self._load.saw(alive.meta)
            self._add_live(alive.node)
            self.gossip.push(alive)
            effects.append(MemberChanged(alive.node, None, Status.ALIVE))
            return
        newer = alive.incarnation > member.incarnation
        restored = member.restored_by(alive.incarnation, alive.meta_version, alive.meta)
        meta_only = (
            alive.incarnation == member.incarnation
            and (alive.meta_version > member.meta_version or restored)
            and not member.status.gone
        )
        if not (newer or meta_only):
            return
        beyond_load = self.versions.meta_changed(member.meta, alive.meta, moved=alive.addr != member.addr)
        member.addr = alive.addr
        member.incarnation = alive.incarnation
        member.meta_version = alive.meta_version
        member.meta = alive.meta
        self._load.saw(alive.meta)
        self.gossip.push(alive, background=meta_only and not beyond_load)  # load news: after the rest
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
            if self._suspicions.confirm(suspect.node, suspect.source):
                self.gossip.push(suspect)
            return
        member.incarnation = suspect.incarnation
        self._suspicions.start(suspect.node, suspect.source, self.live_count(), now)
        self.gossip.push(suspect)
        self._set_status(member, Status.SUSPECT, now, effects)

    def _on_dead(self, dead: Dead, now: float, effects: list[Effect]) -> None:
        member = self.members.get(dead.node)
        if member is None or dead.incarnation < member.incarnation or member.status.gone:
            return
        if dead.node == self.node_id:
            if not self.leaving:
                self._refute(dead.incarnation, effects)
            return
        if dead.source not in (dead.node, self.node_id) and not self._suspicions.vouches(dead.node, now):
            accusation = Suspect(member.node, dead.incarnation, dead.source)
            if member.status != Status.ALIVE:
                self._on_suspect(accusation, now, effects)
            effects.append(self._alone(member.addr, accusation))  # it refutes now if it runs
            return
        member.incarnation = dead.incarnation
        self.gossip.push(dead)
        self._set_status(member, Status.LEFT if dead.source == dead.node else Status.DEAD, now, effects)

    def _refute(self, accused_incarnation: int, effects: list[Effect]) -> None:
        self.me.incarnation = max(self.me.incarnation, accused_incarnation) + 1
        self.gossip.push(self._alive_of_self())
        effects.append(IncarnationChanged(self.me.incarnation))

    def _set_status(self, member: Member, status: Status, now: float, effects: list[Effect]) -> None:
        previous = member.status
        member.status = status
        member.since = now
        self.versions.member_changed()
        if status.gone:
            self._gone[member.node] = None
            self._live.discard(member.node)
            self._suspicions.discard(member.node)
            if status == Status.DEAD:
                self.gossip.declared_dead(member.node, now)
        else:
            self._gone.pop(member.node, None)
            self._add_live(member.node)
            self.gossip.revived(member.node)
            if status == Status.ALIVE:
                self._suspicions.discard(member.node)
        effects.append(MemberChanged(member.node, previous, status))

    def _add_live(self, node: NodeId) -> None:
        if node in self._live:
            return
        self._live.add(node)
        self._prober.admit(node)

    # -- helpers ---------------------------------------------------------------------------

    def _alive_of_self(self) -> Alive:
        me = self.me
        return Alive(me.node, me.incarnation, me.addr, me.meta_version, me.meta)

    def _exchange(self, addr: Address, *, reply_wanted: bool = True, join: bool = False) -> list[Send]:
        """Our full state (push-pull) for `addr`, in packets of half the wire's limit (``exchange.py``)."""
        states = tuple(member.state() for member in self.members.values())
        whole = PushPull(reply_wanted, join, states, *self.tables.snapshot())
        return [self._alone(addr, part) for part in push_pull_parts(whole, self.config.max_packet_bytes // 2)]

    def _alone(self, addr: Address, message: Message) -> Send:
        """A packet with `message` and nothing piggybacked (an urgent correction, or a full state)."""
        return Send(addr, Packet(self.node_id, self.me.addr, (message,)))
