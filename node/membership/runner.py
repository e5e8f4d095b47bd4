"""The asyncio shell around the membership core: receive, handle, carry out, sleep until due.

It makes no protocol decisions. The receiver and a timer share the core (one event loop, so no
locks), and every packet passes ``relaying.py`` (which way to send it, the way back to its sender,
the link messages of nodes nobody can dial):

- the receiver opens each frame with the mesh's keyring (``trust/keyring.py``: a packet sealed by
  no key of this mesh is dropped unread), decodes it (``wire.decode``, which validates everything)
  and hands the packet to ``Membership.handle``; anything else is counted by reason and dropped;
- the timer calls ``Membership.tick`` and then sleeps until ``next_deadline``, or until woken
  because a packet or a local change made something due sooner.

Effects are carried out here: packets are encoded, sealed and sent, membership changes and deployment
records are passed on, a raised incarnation is persisted (off the event loop), and a changed view
is announced (``on_view``) so placement and requests waiting for a cold start look again.

The runner owns the core: the rest of the agent reads the view and makes its changes (metadata,
declarations, join and leave) through the runner's methods, which carry out what the core answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace

from ..mesh import wire
from ..mesh.access import ApiKey
from ..mesh.deployment import DeploymentSpec
from ..mesh.effects import (
    Effect,
    IncarnationChanged,
    KeyChanged,
    KeyringChanged,
    MemberChanged,
    RecordChanged,
    Send,
)
from ..mesh.keyring_record import KeyringRecord
from ..mesh.member import Member
from ..mesh.membership import Membership
from ..mesh.metadata import NodeMeta
from ..mesh.reachability import Reach
from ..mesh.records import Record
from ..mesh.types import Address, NodeId, Status
from ..mesh.wire import PushPull
from ..trust.keyring import Keyring, SealError
from .relaying import Relaying
from .transport import MembershipTransport

log = logging.getLogger(__name__)

# Statuses from which a member coming back alive may have a stale connection of ours behind it.
_BACK = frozenset({Status.SUSPECT, Status.DEAD, Status.LEFT})


class GossipRunner:
    """Runs one Membership core over a MembershipTransport."""

    def __init__(
        self,
        core: Membership,
        transport: MembershipTransport,
        mesh_id: str,
        keyring: Keyring,
        *,
        on_change: Callable[[MemberChanged], None],
        on_incarnation: Callable[[int], None],
        on_record: Callable[[Record], None] = lambda record: None,
        on_key: Callable[[ApiKey], None] = lambda key: None,
        on_keyring: Callable[[KeyringRecord], None] = lambda record: None,
        on_view: Callable[[], None] = lambda: None,
    ) -> None:
        self.core = core
        self.transport = transport
        self.mesh_id = mesh_id
        # Replaced whole when the mesh's tokens change (rotation); never mutated in place.
        self.keyring = keyring
        self._on_change = on_change
        self._on_incarnation = on_incarnation
        self._on_record = on_record
        self._on_key = on_key
        self._on_keyring = on_keyring
        self._on_view = on_view
        self._seen_view = core.versions.view
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.received = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.dropped: Counter[str] = Counter()
        # For /metrics: members this node saw change into each status (suspicions, deaths, joins),
        # and the suspicions of itself it refuted.
        self.changes: Counter[str] = Counter()
        self.refutations = 0
        # Addresses of members we hold dead (``_renew_connections``).
        self._dead_addrs: set[Address] = set()
        self._stopped = False
        self.relaying = Relaying(
            core.config,
            core.node_id,
            core.me.addr,
            transport,
            seal=lambda packet: self.keyring.seal(wire.encode(packet, self.mesh_id)),
            members=lambda: self.core.members,
            roster_version=lambda: self.core.versions.roster,
            rng=core.rng,
            now=0.0,  # its first dial check is due at the first tick
            on_reach=self._reach_changed,
            count=self._count_drop,
        )

    def start(self) -> None:
        """Start receiving and the timer."""
        self.core.stalls.begin(self.now())  # the core was made a while ago (``mesh/stalls.py``)
        self.transport.start(self._receive, lambda addr: self.relaying.connected(addr, self.now()))
        self._tasks = [asyncio.create_task(self._tick_forever(), name="gossip-tick")]

    async def stop(self) -> None:
        """Stop the timer and ignore what still arrives (the transport is closed by its owner)."""
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def now(self) -> float:
        """The core's clock: the event loop's monotonic time."""
        return asyncio.get_running_loop().time()

    def carry_out(self, effects: Iterable[Effect]) -> None:
        """Perform the core's effects, then let the timer recompute its deadline."""
        effects = list(effects)
        self._renew_connections(effects)
        for effect in effects:
            match effect:
                case Send(addr, packet):
                    data = self.keyring.seal(wire.encode(packet, self.mesh_id))
                    if self.relaying.deliver(addr, data, self.now()):
                        self.bytes_out += len(data)
                case MemberChanged() as change:
                    self.changes[change.current.value] += 1
                    self._on_change(change)
                case IncarnationChanged(incarnation):
                    self.refutations += 1  # only a refutation raises it (membership._refute)
                    self._on_incarnation(incarnation)
                case RecordChanged(record):
                    self._on_record(record)
                case KeyChanged(key):
                    self._on_key(key)
                case KeyringChanged(ring):
                    self._on_keyring(ring)
        if self.core.versions.view != self._seen_view:
            # Members or their metadata changed (a replica became ready somewhere): tell waiters.
            self._seen_view = self.core.versions.view
            self._on_view()
        self._wake.set()

    def wake(self) -> None:
        """Something local changed (metadata, a join): re-run the timer now."""
        self._wake.set()

    # -- the view, read ------------------------------------------------------------------------

    def members(self) -> Iterable[Member]:
        """Every member this node knows, itself included, in any state."""
        return self.core.members.values()

    def member(self, node: NodeId) -> Member | None:
        """One member, or None when unknown."""
        return self.core.members.get(node)

    @property
    def view_version(self) -> int:
        """Bumped whenever a member or its metadata changes."""
        return self.core.versions.view

    @property
    def roster_version(self) -> int:
        """Bumped when a member comes, goes, moves, changes status, or changes more than its load."""
        return self.core.versions.roster

    @property
    def leaving(self) -> bool:
        """Whether this node has started to leave."""
        return self.core.leaving

    def has_peers(self) -> bool:
        """Whether any other member is alive or suspect."""
        return self.core.has_peers()

    def record(self, name: str) -> Record | None:
        """The winning deployment record of `name`, tombstone or not."""
        return self.core.deployments.get(name)

    def live_records(self) -> list[Record]:
        """Every declared deployment (no tombstones)."""
        return self.core.deployments.live()

    # -- changes -------------------------------------------------------------------------------

    def publish_meta(self, meta: NodeMeta) -> None:
        """Gossip this node's new metadata."""
        self.core.update_meta(meta)
        self.wake()

    def join(self, addrs: Iterable[Address]) -> None:
        """Contact `addrs` to join (or rejoin) the mesh through them."""
        if not self.core.leaving:
            self.carry_out(self.core.join(list(addrs), self.now()))

    def leave(self) -> None:
        """Announce that this node leaves."""
        self.carry_out(self.core.leave(self.now()))

    def declare(self, name: str, spec: DeploymentSpec | None, wall_ms: int) -> Record | None:
        """Declare, change or (spec None) remove a deployment mesh-wide; the winning record after."""
        self.carry_out(self.core.declare(name, spec, wall_ms))
        return self.core.deployments.get(name)

    def merge_record(self, record: Record) -> None:
        """Take a record as if gossiped (restored from disk, or a pinned replica's declaration)."""
        self.carry_out(self.core.merge_record(record, int(time.time() * 1000)))

    def key(self, key_id: str) -> ApiKey | None:
        """The API key with this id, revoked or not (what the HTTP gate asks on every request)."""
        return self.core.keys.get(key_id)

    def all_keys(self) -> list[ApiKey]:
        """Every API key, revoked ones included."""
        return self.core.keys.all()

    def merge_key(self, key: ApiKey) -> None:
        """Take an API key made or revoked here, or restored from disk, and gossip it if new."""
        self.carry_out(self.core.tables.merge_key(key))

    def keyring_record(self) -> KeyringRecord | None:
        """The mesh's tokens as the last rotation step wrote them (None before any)."""
        return self.core.tables.keyring

    def write_keyring(self, tokens: tuple[str, ...]) -> None:
        """A rotation step: the tokens every node should hold, primary first, gossiped mesh-wide."""
        self.carry_out(self.core.tables.write_keyring(tokens, int(time.time() * 1000)))

    def merge_keyring(self, record: KeyringRecord) -> None:
        """Take a keyring record restored from disk (gossiped on if it is news)."""
        self.carry_out(self.core.tables.merge_keyring(record, int(time.time() * 1000)))

    def expire_records(self, wall_ms: int, tombstone_ttl_s: float) -> list[str]:
        """Forget tombstones older than the TTL; the names forgotten."""
        return self.core.deployments.expire(wall_ms, tombstone_ttl_s)

    def _renew_connections(self, effects: list[Effect]) -> None:
        """Drop our connection to a peer where an old one would stall what these effects send.

        This is about TCP under ZeroMQ, not the protocol. A member back from suspicion or the dead
        (a restart, a healed partition) may sit behind a connection of ours that waits out ZeroMQ's
        reconnect backoff (up to 2 s): our answers would wait, and the member be suspected again. A
        full-state exchange with a dead member (a reconnect attempt, or the answer to one) would
        queue behind data a partition left unacknowledged, which TCP retransmits with exponential
        backoff (after a 30 s cut the next try can be 20 s away): it goes on a new connection, so a
        healed network is used at once.
        """
        for effect in effects:
            match effect:
                case MemberChanged(node, previous, status):
                    member = self.core.members.get(node)
                    if member is None:
                        continue
                    if status == Status.DEAD:
                        self._dead_addrs.add(member.addr)
                    else:
                        self._dead_addrs.discard(member.addr)
                    if status == Status.ALIVE and previous in _BACK:
                        self.relaying.forget(member.addr)
                case Send(addr, packet) if addr in self._dead_addrs:
                    if any(isinstance(message, PushPull) for message in packet.messages):
                        self.relaying.forget(addr)

    def _receive(self, route: bytes, data: bytes | None) -> None:
        """One message from the transport, on the connection `route`: open, decode, hand on."""
        if self._stopped:
            return
        if data is None:
            self.dropped["multipart"] += 1
            return
        config = self.core.config
        self.bytes_in += len(data)
        try:
            # Opened before anything decodes it: a non-member's bytes reach no parser.
            plain = self.keyring.open(data)
        except SealError as exc:
            self.dropped[exc.reason] += 1
            return
        try:
            packet = wire.decode(
                plain, self.mesh_id, max_bytes=config.max_packet_bytes, max_members=config.max_members
            )
        except wire.WireError as exc:
            self.dropped[exc.reason] += 1
            log.debug("dropped a membership packet: %s", exc)
            return
        self.received += 1
        try:
            now = self.now()
            for_core = self.relaying.receive(route, packet, now)
            if for_core is not None:
                self.carry_out(self.core.handle(for_core, now, int(time.time() * 1000)))
        except Exception:
            # A core bug must not take the agent down; the packet is lost like a datagram.
            self.dropped["error"] += 1
            log.exception("membership core failed on a packet from %s", packet.sender_addr)

    def _count_drop(self, reason: str) -> None:
        self.dropped[reason] += 1

    def _reach_changed(self, reach: Reach, relays: tuple[NodeId, ...]) -> None:
        """Gossip how peers reach this node (``relaying.py`` learned it)."""
        self.core.update_meta(replace(self.core.me.meta, reach=reach.value, relays=relays))
        self.wake()

    async def _tick_forever(self) -> None:
        while True:
            self._wake.clear()
            try:
                self.relaying.tick(self.now())
                self.carry_out(self.core.tick(self.now()))
            except Exception:
                log.exception("membership tick failed")
                await asyncio.sleep(0.1)  # a core bug must not spin the CPU
            self._wake.clear()
            # Capped so a core with nothing due (a leaving node) still re-checks now and then.
            deadline = min(self.core.next_deadline(), self.relaying.next_deadline())
            delay = min(max(0.0, deadline - self.now()), 1.0)
            if delay > 0:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
                # arrives just as the event is set, and then stop() waits forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
            else:
                await asyncio.sleep(0)
