"""The shell of reachability (``mesh/reachability.py``): routes, dial checks, relays, links.

It sits between the runner and the transport. Every packet the runner sends goes through
``deliver``, which asks ``path_to`` which way (dial the address, the connection the node opened to
us, or through its relays wrapped in ``Relayed``) and does it. Every packet received goes through
``receive`` first, which notes the connection it came on as the way back to its sender, and takes
out the link messages (``mesh/relay_wire.py``), which it handles here: answering ``DialMe`` by
dialing, learning from ``Dialed`` that this node can be dialed, passing ``Relayed`` packets on over
their node's link. ``tick`` runs this node's own side: the dial check, and when nobody can dial
it, its relays (chosen by ``choose_relays``) and the hellos that keep their links and NAT
mappings alive. What it decides about this node is published in its metadata (``reach``,
``relays``) through ``on_reach``.

A route is only as trustworthy as the packet that made it: one sealed by the mesh's key (anything
else was dropped before it got here). A member could claim another's address and take its
replies for a while; members are trusted with more than that already (docs/security.md).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..mesh.config import MembershipConfig
from ..mesh.member import Member
from ..mesh.reachability import (
    Candidate,
    DialCheck,
    Direct,
    OverRoute,
    Reach,
    ThroughRelays,
    choose_relays,
    path_to,
)
from ..mesh.relay_wire import Dialed, DialMe, LinkHello, Relayed
from ..mesh.types import Address, NodeId, Status
from ..mesh.wire import Message, Packet
from .transport import MembershipTransport, dialed_by_peer

log = logging.getLogger(__name__)

# A node answers one DialMe per asker per this long (a member cannot make it dial in a loop).
_DIAL_ANSWER_GAP_S = 1.0
_MAX_ROUTES = 20_000
# Connections a member opened to us that are remembered as ways to it, newest first.
_OPENED_PER_MEMBER = 4


@dataclass
class _Route:
    route: bytes
    seen: float


class Relaying:
    """Routes to members and this node's reachability, relays and links."""

    def __init__(
        self,
        config: MembershipConfig,
        me: NodeId,
        my_addr: Address,
        transport: MembershipTransport,
        *,
        seal: Callable[[Packet], bytes],
        members: Callable[[], Mapping[NodeId, Member]],
        roster_version: Callable[[], int],
        rng: random.Random,
        now: float,
        on_reach: Callable[[Reach, tuple[NodeId, ...]], None],
        count: Callable[[str], None],
    ) -> None:
        self._config = config
        self._me = me
        self._my_addr = my_addr
        self._transport = transport
        self._seal = seal
        self._members = members
        self._roster_version = roster_version
        self._rng = rng
        self._on_reach = on_reach
        self._count = count
        self.check = DialCheck(config, now)
        self.relays: tuple[NodeId, ...] = ()
        self._next_hello_at = now
        self._by_node: dict[NodeId, _Route] = {}
        self._by_addr: dict[Address, _Route] = {}
        # Per member, the connections it opened to us that it sent on, newest first: the way to it
        # while we have none of our own (one connection per pair, ``path_to``), whatever their age.
        # A few, not one: its answer to our dial check comes on a connection it closes soon after,
        # and the one before is still there to answer on.
        self._opened: dict[NodeId, list[bytes]] = {}
        # Connections dialed only to answer a dial check, by address: closed once the check is
        # over when the asker has a connection of its own to us, so the pair keeps one.
        self._answer_dials: dict[Address, float] = {}
        self._answered: dict[NodeId, float] = {}
        self._addrs: dict[Address, Member] = {}
        self._addrs_version = -1

    @property
    def reach(self) -> Reach:
        """This node's reach as learned so far."""
        return self.check.reach

    # -- sending ---------------------------------------------------------------------------

    def deliver(self, addr: Address, data: bytes, now: float) -> bool:
        """Send sealed `data` to the member at `addr` the way ``path_to`` says; False if dropped."""
        member = self._member_at(addr)
        node = member.node if member is not None else None
        route = self._route(node, addr, now)
        relay_addrs = self._relay_addrs(member) if member is not None else {}
        match path_to(
            addr,
            node,
            member.meta.reach if member is not None else "",
            route,
            relay_addrs,
            opened=self._opened[node][0] if node in self._opened else None,
            alive=member is not None and member.status == Status.ALIVE,
            dialing=self._transport.dialing(addr),
        ):
            case Direct(addr):
                return self._transport.send(addr, data)
            case OverRoute(route):
                self._stop_dialing(member)
                if self._transport.send_route(route, data):
                    return True
                self._drop_route(node, addr, route)  # its connection is gone: next time, another way
                return self.deliver(addr, data, now)
            case ThroughRelays(node, relays):
                self._stop_dialing(member)
                wrapped = self._seal(Packet(self._me, self._my_addr, (Relayed(node, data),)))
                sent = [self._transport.send(relay, wrapped) for relay in relays]
                return any(sent)

    def forget(self, addr: Address) -> None:
        """Close our connection to `addr`, and stop answering its node on the connection it opened
        unless its last packet came on that one: the next packet goes on a connection known to
        work, not one a partition may have left hanging (a member back alive)."""
        self._transport.forget(addr)
        member = self._member_at(addr)
        if member is not None:
            last = self._by_node.get(member.node)
            if last is not None and last.route in self._opened.get(member.node, ()):
                self._opened[member.node] = [last.route]
            else:
                self._opened.pop(member.node, None)

    def _stop_dialing(self, member: Member | None) -> None:
        """Drop a connection of ours to a relayed node's address: it would only retry in the void."""
        if member is not None and member.meta.reach == Reach.RELAYED:
            self._transport.forget(member.addr)

    # -- receiving -------------------------------------------------------------------------

    def receive(self, route: bytes, packet: Packet, now: float) -> Packet | None:
        """Note `route` as the way back to the sender; handle link messages; what is left for the core."""
        if packet.sender != self._me:
            self._note(packet.sender, packet.sender_addr, route, now)
        rest: list[Message] = []
        for message in packet.messages:
            match message:
                case LinkHello():
                    pass  # the route is noted: that is all a hello asks
                case DialMe(nonce):
                    self._answer_dial(packet.sender, packet.sender_addr, nonce, now)
                case Dialed(nonce):
                    log.debug(
                        "dialed by %s (check %d, its connection: %s)",
                        packet.sender_addr,
                        nonce,
                        dialed_by_peer(route),
                    )
                    if dialed_by_peer(route) and self.check.dialed(nonce, now):
                        self._reach_changed(now)
                case Relayed(to, data):
                    self._pass_on(to, data, now)
                case _:
                    rest.append(message)
        if not rest:
            return None
        return (
            packet
            if len(rest) == len(packet.messages)
            else Packet(packet.sender, packet.sender_addr, tuple(rest))
        )

    def connected(self, addr: str, now: float) -> None:
        """Our connection to `addr` (re)connected: if it is a relay's, say hello on it at once."""
        if self.check.reach == Reach.RELAYED and any(self._addr_of(relay) == addr for relay in self.relays):
            self._transport.send(addr, self._seal(Packet(self._me, self._my_addr, (LinkHello(),))))

    # -- this node's side ------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """The dial check, relay choice and hellos due at `now`."""
        if self.check.tick(now):
            self._reach_changed(now)
        if self.check.due(now):
            self._ask_to_dial(now)
        if self.check.reach == Reach.RELAYED:
            self._keep_relays(now)
            if now >= self._next_hello_at:
                self._next_hello_at = now + self._config.relay_keepalive_s
                hello = self._seal(Packet(self._me, self._my_addr, (LinkHello(),)))
                for relay in self.relays:
                    addr = self._addr_of(relay)
                    if addr is not None:
                        self._transport.send(addr, hello)
        if len(self._by_node) + len(self._by_addr) + len(self._opened) > _MAX_ROUTES:
            self._expire_routes(now)
        for addr in [addr for addr, at in self._answer_dials.items() if now >= at]:
            del self._answer_dials[addr]
            member = self._member_at(addr)
            if member is not None and member.node in self._opened:
                self._transport.forget(addr)

    def next_deadline(self) -> float:
        """When ``tick`` next has something to do."""
        deadline = self.check.next_deadline()
        if self.check.reach == Reach.RELAYED:
            deadline = min(deadline, self._next_hello_at)
        return min(deadline, *self._answer_dials.values()) if self._answer_dials else deadline

    def _ask_to_dial(self, now: float) -> None:
        # Peers only (no seeds): a node joining through a seed knows it a round trip later.
        peers = [
            m.addr
            for m in self._members().values()
            if m.node != self._me and m.status in (Status.ALIVE, Status.SUSPECT)
        ]
        asked = self._rng.sample(peers, min(len(peers), self._config.dial_check_peers))
        nonce = self._rng.getrandbits(62)
        request = self._seal(Packet(self._me, self._my_addr, (DialMe(nonce),)))
        for addr in asked:
            self.deliver(addr, request, now)  # a peer nobody can dial is still asked, and answers
        log.debug("asked %s to dial %s (check %d)", ", ".join(asked) or "nobody", self._my_addr, nonce)
        self.check.asked(nonce, len(asked), now)

    def _keep_relays(self, now: float) -> None:
        members = self._members()
        candidates = [
            Candidate(m.node, m.rtt_s)
            for m in members.values()
            if m.status == Status.ALIVE and m.meta.reach == Reach.DIRECT
        ]
        relays = choose_relays(self._me, self.relays, candidates, self._config.relay_count)
        if relays != self.relays:
            log.info("relays now: %s", ", ".join(self._name(node) for node in relays) or "none")
            self.relays = relays
            self._next_hello_at = now  # say hello to the new ones at once
            self._on_reach(self.check.reach, relays)

    def _reach_changed(self, now: float) -> None:
        reach = self.check.reach
        if reach == Reach.RELAYED:
            log.warning(
                "no peer could dial this node at %s: it is reached through relays (docs/edge.md)",
                self._my_addr,
            )
            self._keep_relays(now)
        else:
            log.info("peers can dial this node at %s", self._my_addr)
            self.relays = ()
        self._on_reach(reach, self.relays)

    # -- the relay's and answerer's side -------------------------------------------------------

    def _answer_dial(self, sender: NodeId, addr: Address, nonce: int, now: float) -> None:
        if now - self._answered.get(sender, -_DIAL_ANSWER_GAP_S) < _DIAL_ANSWER_GAP_S:
            self._count("dial_rate_limited")
            return
        if len(self._answered) > _MAX_ROUTES:
            self._answered.clear()
        self._answered[sender] = now
        # Dialed on our own connection to the address it advertises: what it wants to know is
        # whether that connection can be made (one already made proves it as well).
        if not self._transport.dialing(addr) and len(self._answer_dials) < _MAX_ROUTES:
            self._answer_dials[addr] = now + self._config.dial_check_timeout_s
        self._transport.send(addr, self._seal(Packet(self._me, self._my_addr, (Dialed(nonce),))))

    def _pass_on(self, to: NodeId, data: bytes, now: float) -> None:
        if to == self._me:
            self._count("relayed_to_self")
            return
        found = self._by_node.get(to)
        if found is None or now - found.seen > self._config.route_idle_s:
            self._count("relay_no_link")
            return
        if not self._transport.send_route(found.route, data):
            self._by_node.pop(to, None)
            self._count("relay_link_gone")

    # -- routes and members ------------------------------------------------------------------

    def _note(self, node: NodeId, addr: Address, route: bytes, now: float) -> None:
        found = self._by_node.get(node)
        if found is not None and found.route == route:
            found.seen = now
        else:
            self._by_node[node] = found = _Route(route, now)
        self._by_addr[addr] = found
        if dialed_by_peer(route):
            opened = self._opened.setdefault(node, [])
            if not opened or opened[0] != route:
                if route in opened:
                    opened.remove(route)
                opened.insert(0, route)
                del opened[_OPENED_PER_MEMBER:]

    def _route(self, node: NodeId | None, addr: Address, now: float) -> bytes | None:
        found = self._by_node.get(node) if node is not None else self._by_addr.get(addr)
        if found is None or now - found.seen > self._config.route_idle_s:
            return None
        return found.route

    def _drop_route(self, node: NodeId | None, addr: Address, route: bytes) -> None:
        if node is not None:
            self._by_node.pop(node, None)
            opened = self._opened.get(node, [])
            if route in opened:
                opened.remove(route)
                if not opened:
                    del self._opened[node]
        self._by_addr.pop(addr, None)

    def _expire_routes(self, now: float) -> None:
        idle_s = self._config.route_idle_s
        self._by_node = {k: r for k, r in self._by_node.items() if now - r.seen <= idle_s}
        self._by_addr = {k: r for k, r in self._by_addr.items() if now - r.seen <= idle_s}
        members = self._members()
        self._opened = {node: route for node, route in self._opened.items() if node in members}

    def _member_at(self, addr: Address) -> Member | None:
        version = self._roster_version()
        if version != self._addrs_version:  # members joined, left or moved since
            self._addrs = {m.addr: m for m in self._members().values()}
            self._addrs_version = version
        return self._addrs.get(addr)

    def _relay_addrs(self, member: Member) -> dict[NodeId, Address]:
        members = self._members()
        found = {}
        for relay in member.meta.relays:
            other = members.get(NodeId(relay))
            if other is not None and other.node != self._me and not other.status.gone:
                found[other.node] = other.addr
        return found

    def _addr_of(self, node: NodeId) -> Address | None:
        member = self._members().get(node)
        return member.addr if member is not None else None

    def _name(self, node: NodeId) -> str:
        member = self._members().get(node)
        return (member.meta.name if member is not None else "") or node[:8]
