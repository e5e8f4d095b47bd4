"""A seeded discrete-event simulator that drives the production membership core.

Shipped in the package (STYLE.md point 4) so tests, benchmarks and users can run a thousand nodes in
seconds. Vocabulary follows turmoil: ``drop`` (random loss), ``delay`` (latency range),
``partition``/``repair``, ``crash`` and ``hold`` (a paused process). Time is a float in seconds on the
simulator's own clock; the same seed replays the same run event for event, so a failing test prints
its seed and that seed reproduces it.

With ``encode=True`` every packet goes through ``wire.encode``/``wire.decode`` as on the real network
(slower; the conformance tests use it). By default packets are handed over as objects.

Every node reads the same wall clock, ``wall_ms()``: ``wall_epoch_ms`` plus the simulated time, which
the cores need to bound record stamps (``bounds.py``). ``inject`` hands a node any packet, sender
forged or not, as a buggy or compromised member would send it.

Speed: the event loop is the inner loop of every large test, so it avoids per-event function calls
and repeated lookups where that costs no clarity; ``bench/simulation.py`` measures it. Everything
a run does goes through the same calls to the cores in the same order, so the seed alone decides it.
"""

from __future__ import annotations

import gc
import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from . import wire
from .config import MembershipConfig
from .deployment import DeploymentSpec
from .effects import Effect, MemberChanged, Send
from .membership import Membership
from .metadata import NodeMeta
from .types import Address, NodeId, Status

_NEVER = float("inf")


@dataclass
class SimNode:
    """One simulated agent: its core and what the network does to it."""

    core: Membership
    crashed: bool = False
    held_until: float = 0.0
    held_packets: list[wire.Packet | bytes] = field(default_factory=list)  # in its socket, unread
    wake_at: float = float("inf")
    group: int = 0  # partition group; packets only flow within a group


@dataclass(frozen=True)
class Change:
    """A status change seen by one observer at a simulated time."""

    time: float
    observer: NodeId
    node: NodeId
    status: Status


@dataclass
class Simulation:
    """Many membership cores on one seeded event loop."""

    config: MembershipConfig
    seed: int
    delay_s: tuple[float, float] = (0.0002, 0.002)
    drop: float = 0.0
    encode: bool = False
    mesh_id: str = "sim"
    now: float = 0.0
    # What the nodes' wall clocks read at simulated time 0, in milliseconds since the epoch.
    wall_epoch_ms: int = 1_700_000_000_000
    nodes: dict[NodeId, SimNode] = field(default_factory=dict)
    on_change: Callable[[Change], None] | None = None
    delivered: int = 0
    dropped: int = 0
    # Packets that failed to decode (``encode=True``): dropped, as the shell drops them.
    malformed: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._events: list[tuple[float, int, NodeId, wire.Packet | bytes | None]] = []
        self._counter = 0
        self._by_addr: dict[Address, NodeId] = {}

    # -- building a mesh -------------------------------------------------------------------

    def add_node(self, *, seeds: Iterable[NodeId] = (), name: str | None = None) -> NodeId:
        """Start a node that joins through `seeds` (node ids of running nodes)."""
        index = len(self.nodes)
        node_id = NodeId(f"n{index:05d}")
        addr = Address(f"sim-{index}:7946")
        seed_addrs = tuple(self.nodes[s].core.me.addr for s in seeds)
        core = Membership(
            self.config,
            node_id,
            addr,
            NodeMeta(name=name or node_id, mesh=addr),
            rng=random.Random(self.rng.random()),
            now=self.now,
            seeds=seed_addrs,
        )
        self.nodes[node_id] = SimNode(core)
        self._by_addr[addr] = node_id
        self._schedule_wake(node_id)
        return node_id

    def bootstrap(self, count: int) -> list[NodeId]:
        """Create `count` nodes that already know each other as alive (a settled mesh)."""
        # count**2 member rows appear at once and none of them is garbage: with the cyclic collector
        # on, it rescans the growing heap again and again (at 1000 nodes, 5 of the 8 seconds).
        collecting = gc.isenabled()
        gc.disable()
        try:
            ids = [self.add_node() for _ in range(count)]
            states = tuple(self.nodes[n].core.me.state() for n in ids)
            for node_id in ids:
                sender = ids[0] if node_id != ids[0] else ids[1]
                packet = wire.Packet(
                    sender, self.nodes[sender].core.me.addr, (wire.PushPull(False, False, states),)
                )
                effects = self.nodes[node_id].core.handle(packet, self.now, self.wall_ms())
                if self.on_change is not None:
                    changes: list[Effect] = [e for e in effects if not isinstance(e, Send)]
                    self._carry_out(node_id, self.nodes[node_id], changes)
            for node_id in ids:
                self.nodes[node_id].core.clear_broadcasts()
                self._schedule_wake(node_id)
        finally:
            if collecting:
                gc.enable()
        return ids

    # -- faults ----------------------------------------------------------------------------

    def crash(self, node_id: NodeId) -> None:
        """SIGKILL: the node stops sending and receiving for good."""
        self.nodes[node_id].crashed = True

    def hold(self, node_id: NodeId, duration_s: float) -> None:
        """SIGSTOP for a while: packets to it wait in its socket and its timers wait. When it
        resumes, its due timers run before it reads them, as an event loop's do."""
        node = self.nodes[node_id]
        node.held_until = node.wake_at = self.now + duration_s
        self._counter += 1
        heapq.heappush(self._events, (node.wake_at, self._counter, node_id, None))

    def leave(self, node_id: NodeId) -> None:
        """Graceful leave (SIGTERM)."""
        node = self.nodes[node_id]
        self._carry_out(node_id, node, node.core.leave(self.now))
        self._schedule_wake(node_id)

    def declare(self, node_id: NodeId, name: str, spec: DeploymentSpec | None, wall_ms: int) -> None:
        """A deployment declared (spec None: removed) on `node_id`, as ``PUT /v1/deployments`` does."""
        node = self.nodes[node_id]
        self._carry_out(node_id, node, node.core.declare(name, spec, wall_ms))
        self._schedule_wake(node_id)

    def update_meta(self, node_id: NodeId, meta: NodeMeta) -> None:
        """`node_id` describes itself anew (load, replicas, models), as the agent's sampler does."""
        self.nodes[node_id].core.update_meta(meta)
        self._schedule_wake(node_id)

    def inject(self, node_id: NodeId, packet: wire.Packet, delay_s: float = 0.0) -> None:
        """Deliver `packet` to `node_id` after `delay_s`, whoever it claims to come from.

        Only with ``encode=True`` does it pass the wire's checks, as a real packet would.
        """
        payload: wire.Packet | bytes = wire.encode(packet, self.mesh_id) if self.encode else packet
        self._counter += 1
        heapq.heappush(self._events, (self.now + delay_s, self._counter, node_id, payload))

    def partition(self, groups: Iterable[Iterable[NodeId]]) -> None:
        """Split the network: packets only flow between nodes in the same group."""
        for index, group in enumerate(groups, start=1):
            for node_id in group:
                self.nodes[node_id].group = index

    def repair(self) -> None:
        """Heal every partition."""
        for node in self.nodes.values():
            node.group = 0

    # -- running ---------------------------------------------------------------------------

    def run_for(self, duration_s: float) -> None:
        """Advance the simulated clock by `duration_s`."""
        self.run_until(lambda: False, self.now + duration_s)

    def run_until(self, done: Callable[[], bool], deadline: float, *, check_every_s: float = 0.01) -> bool:
        """Run events until `done()` holds or `deadline`; `done` is checked every `check_every_s`."""
        events = self._events
        nodes = self.nodes
        pop = heapq.heappop
        next_check = self.now
        while events and events[0][0] <= deadline:
            if events[0][0] >= next_check:
                self.now = next_check
                if done():
                    return True
                next_check = events[0][0] + check_every_s
            time, _, node_id, packet = pop(events)
            self.now = time
            node = nodes[node_id]
            if node.crashed:
                if packet is not None:
                    self.dropped += 1
            elif packet is not None:
                self._deliver(node_id, node, packet)
            elif time == node.wake_at:  # else a stale wake, superseded by an earlier one
                self._wake(node_id, node)
        self.now = max(self.now, deadline)
        return done()

    def wall_ms(self) -> int:
        """The nodes' wall clock now, in milliseconds since the epoch."""
        return self.wall_epoch_ms + int(self.now * 1000)

    def live(self) -> list[NodeId]:
        """Nodes neither crashed nor left."""
        return [n for n, node in self.nodes.items() if not node.crashed and not node.core.leaving]

    def status_in_view(self, observer: NodeId, node: NodeId) -> Status | None:
        """How `observer` sees `node` right now."""
        member = self.nodes[observer].core.members.get(node)
        return member.status if member is not None else None

    # -- internals -------------------------------------------------------------------------

    # An event is (time, counter, node id, packet): a packet to deliver, or None to wake the node.
    # The counter keeps events of equal time in the order they were scheduled.

    def _schedule_wake(self, node_id: NodeId, node: SimNode | None = None) -> None:
        if node is None:
            node = self.nodes[node_id]
        if node.crashed:
            return
        now = self.now
        deadline = node.core.next_deadline()
        if deadline < now:
            deadline = now
        if deadline < node.held_until:
            deadline = node.held_until
        if deadline < node.wake_at or node.wake_at <= now:
            node.wake_at = deadline
            self._counter += 1
            heapq.heappush(self._events, (deadline, self._counter, node_id, None))

    def _wake(self, node_id: NodeId, node: SimNode) -> None:
        node.wake_at = _NEVER
        if self.now >= node.held_until:
            self._carry_out(node_id, node, node.core.tick(self.now))
            unread, node.held_packets = node.held_packets, []
            for packet in unread:
                self._deliver(node_id, node, packet)
        self._schedule_wake(node_id, node)

    def _deliver(self, node_id: NodeId, node: SimNode, packet: wire.Packet | bytes) -> None:
        if self.now < node.held_until:
            node.held_packets.append(packet)
            return
        if isinstance(packet, bytes):
            try:
                packet = wire.decode(
                    packet,
                    self.mesh_id,
                    max_bytes=self.config.max_packet_bytes,
                    max_members=self.config.max_members,
                )
            except wire.WireError:
                self.malformed += 1
                return
        self.delivered += 1
        self._carry_out(node_id, node, node.core.handle(packet, self.now, self.wall_ms()))
        self._schedule_wake(node_id, node)

    def _carry_out(self, node_id: NodeId, sender: SimNode, effects: list[Effect]) -> None:
        if not effects:
            return
        nodes = self.nodes
        random_unit = self.rng.random
        low, high = self.delay_s
        for effect in effects:
            if isinstance(effect, Send):
                target_id = self._by_addr.get(effect.addr)
                if target_id is None:
                    continue
                if sender.group != nodes[target_id].group or random_unit() < self.drop:
                    self.dropped += 1
                    continue
                payload: wire.Packet | bytes = effect.packet
                if self.encode:
                    payload = wire.encode(effect.packet, self.mesh_id)
                # random.uniform(low, high), written out to save a call per packet.
                arrival = self.now + (low + (high - low) * random_unit())
                self._counter += 1
                heapq.heappush(self._events, (arrival, self._counter, target_id, payload))
            elif isinstance(effect, MemberChanged) and self.on_change is not None:
                self.on_change(Change(self.now, node_id, effect.node, effect.current))
