"""Reaching a node that nobody can dial: whether peers can, which relays, and which way to send.

Theory of operation (issue 15; docs/edge.md). A laptop behind a home router can open connections
to the mesh, but no peer can open one to it. Three decisions make it a member like any other:

- **Whether peers can dial this node** (``DialCheck``). The node asks a few peers (``DialMe``) to
  open a connection to the address it advertises and answer on it (``Dialed``). An answer that
  arrives on a connection a peer opened proves it: the node is ``direct``. No answer within
  ``dial_check_timeout_s``: ``relayed``. The check runs again every ``dial_recheck_s``; a direct
  node turns relayed only after two unanswered checks in a row (one lost packet, or three asked
  peers that happened to be unable, must not move it), an undecided one after the first.
- **Which relays** (``choose_relays``). A relayed node keeps outbound links to ``relay_count``
  peers that are themselves direct and alive in its view, picked by weighted rendezvous hashing
  (the weight 1 / measured round-trip time, so near peers are preferred but the choice stays
  spread over the mesh and the same for the same inputs), keeping the current ones while they
  stay eligible so links are not churned. Its metadata names them.
- **Which way to send** (``path_to``). One connection per pair of members: to a node that opened
  a connection to us, alive in our view, when we have none of our own to it, send on its
  connection (libzmq holds ~28 KiB per connection end, and at 1,000 members a connection each way
  per pair cost the agent ~28 KiB per member; docs/benchmarks.md). Otherwise, to a direct node
  (or one not known to be relayed, with no connection of its own to us): dial its address, as
  always. To any other node that has a connection to us on which it sent lately (its relays
  always have one): send on that connection. Otherwise to a relayed node: through every relay
  alive in our view, each of which passes the packet on over its link. Sending through all of
  them costs a copy per relay and buys this: a relay's death never silences its node, so it is
  never suspected for it.

Like the rest of the core nothing here reads a clock or touches a socket: ``now`` comes in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from .config import MembershipConfig
from .placement import score
from .types import Address, NodeId

__all__ = [
    "Candidate",
    "DialCheck",
    "Direct",
    "OverRoute",
    "Path",
    "Reach",
    "ThroughRelays",
    "choose_relays",
    "path_to",
]

# The round-trip time assumed for a peer not yet measured: a far one, so measured near peers win.
_UNMEASURED_RTT_S = 0.1
# Round-trip times below this count as this (loopback and same-rack peers are all "near").
_RTT_FLOOR_S = 0.001
# Nonces of recent checks whose late answers still count.
_RECENT_NONCES = 4


class Reach(StrEnum):
    """How peers reach a node, as its metadata says (``NodeMeta.reach``)."""

    UNKNOWN = ""
    DIRECT = "direct"
    RELAYED = "relayed"


class DialCheck:
    """This node's own reach, learned by asking peers to dial it."""

    def __init__(self, config: MembershipConfig, now: float) -> None:
        self._config = config
        self.reach = Reach.UNKNOWN
        self._next_at = now
        self._deadline: float | None = None
        self._nonces: list[int] = []
        self._misses = 0

    def due(self, now: float) -> bool:
        """Whether to ask peers now (no check in flight, and its time has come)."""
        return self._deadline is None and now >= self._next_at

    def asked(self, nonce: int, peers: int, now: float) -> None:
        """`peers` were asked to dial with `nonce` (none: try again after the timeout)."""
        if peers == 0:
            self._next_at = now + self._config.dial_check_timeout_s
            return
        self._nonces = [*self._nonces, nonce][-_RECENT_NONCES:]
        self._deadline = now + self._config.dial_check_timeout_s

    def dialed(self, nonce: int, now: float) -> bool:
        """A peer's ``Dialed(nonce)`` arrived on a connection it opened; True if the reach changed."""
        if nonce not in self._nonces:
            return False  # not ours, or far too late: proves nothing about this address now
        if self._deadline is None and self.reach == Reach.DIRECT:
            return False  # another asked peer's answer to a check already answered
        self._deadline = None
        self._misses = 0
        self._next_at = now + self._config.dial_recheck_s
        changed = self.reach != Reach.DIRECT
        self.reach = Reach.DIRECT
        return changed

    def tick(self, now: float) -> bool:
        """End a check nobody answered in time; True if the reach changed."""
        if self._deadline is None or now < self._deadline:
            return False
        self._deadline = None
        self._misses += 1
        self._next_at = now + self._config.dial_recheck_s
        if self.reach == Reach.DIRECT and self._misses < 2:
            self._next_at = now  # check again at once before believing it
            return False
        changed = self.reach != Reach.RELAYED
        self.reach = Reach.RELAYED
        return changed

    def next_deadline(self) -> float:
        """When ``tick`` or ``due`` next has something to say."""
        return self._next_at if self._deadline is None else self._deadline


@dataclass(frozen=True)
class Candidate:
    """A peer that could relay for this node: direct, alive, and how near."""

    node: NodeId
    rtt_s: float | None


def choose_relays(
    me: NodeId, current: Iterable[NodeId], candidates: Iterable[Candidate], count: int
) -> tuple[NodeId, ...]:
    """The relays to keep: current ones still eligible, then the best-ranked others, `count` in all."""
    eligible = {candidate.node: candidate for candidate in candidates if candidate.node != me}
    kept = [node for node in dict.fromkeys(current) if node in eligible][:count]

    def rank(candidate: Candidate) -> float:
        rtt_s = _UNMEASURED_RTT_S if candidate.rtt_s is None else max(candidate.rtt_s, _RTT_FLOOR_S)
        return score(f"relay\0{me}", candidate.node, 1.0 / rtt_s)

    others = sorted((c for node, c in eligible.items() if node not in kept), key=rank, reverse=True)
    return tuple(kept + [c.node for c in others[: max(0, count - len(kept))]])


@dataclass(frozen=True)
class Direct:
    """Dial the address (or use the connection already dialed to it)."""

    addr: Address


@dataclass(frozen=True)
class OverRoute:
    """Send on the connection the node opened to us (its transport id)."""

    route: bytes


@dataclass(frozen=True)
class ThroughRelays:
    """Wrap the packet for `node` and send it to each relay address."""

    node: NodeId
    relays: tuple[Address, ...]


Path = Direct | OverRoute | ThroughRelays


def path_to(
    addr: Address,
    node: NodeId | None,
    reach: str,
    route: bytes | None,
    relay_addrs: Mapping[NodeId, Address],
    *,
    opened: bytes | None = None,
    alive: bool = False,
    dialing: bool = False,
) -> Path:
    """How to send a packet to `addr` (member `node`, None if unknown, with its gossiped `reach`).

    `route`: the connection the node sent on lately, if any; `relay_addrs`: its relays that are
    alive in this node's view, other than this node; `opened`: the last connection the node opened
    to us, however long ago it sent on it; `alive`: the node is alive in our view; `dialing`: we
    have a connection of our own to `addr`.
    """
    if opened is not None and alive and not dialing and reach != Reach.RELAYED:
        # Answered on the connection it opened, which the kernel closes when it dies (a restart,
        # a cut): the send then fails and the next one dials. A relayed node's old connection may
        # hang on a NAT mapping that expired, so it goes by the rules below.
        return OverRoute(opened)
    if reach == Reach.DIRECT:
        return Direct(addr)
    if route is not None:
        return OverRoute(route)
    if reach == Reach.RELAYED and node is not None and relay_addrs:
        return ThroughRelays(node, tuple(relay_addrs.values()))
    return Direct(addr)
