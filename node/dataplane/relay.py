"""A relay's data plane: calls for a node nobody can dial, passed on over that node's own link.

A node behind NAT (docs/edge.md) opens a connection to each of its relays' data ports and says
``Attach`` on it. A peer that wants one of its replicas sends the relay a ``RelayCall`` naming the
node; the relay sends it down the node's link under the caller's id (or, when another caller's call
through it already has that id, one made unique), and passes everything that comes back (chunks,
progress, the reply or failure) to the caller under the caller's id. A ``Cancel`` from the caller
follows the same way down. The relay never runs or reads the request: one hop more, nothing else.

What a caller relies on is what it relies on from any hop (``links.py``): a call that could not be
passed on (no link from that node here, the link gone) ends at once with a *retryable* failure, so
the caller tries another relay or replica; a link that drops while calls are outstanding ends each
with a retryable ``peer_lost`` (the caller knows whether output had started).

The table is owned by the data-plane server (``server.py``), which hands it every frame that
concerns it, and tells it when a link drops; ``send`` is the server's, addressed by link id.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from ..mesh.envelope import (
    Attach,
    Cancel,
    Chunk,
    Envelope,
    Failure,
    Progress,
    RelayCall,
    Reply,
    encode_envelope,
)

log = logging.getLogger(__name__)

# Sends a frame on a link; None when taken, else why not.
Send = Callable[[bytes, bytes], str | None]

# Nodes attached here at most (a relay serves the NATed nodes that chose it, a handful each).
_MAX_ATTACHED = 10_000


@dataclass(frozen=True)
class _Passed:
    caller: bytes  # the caller's connection
    caller_rid: str
    node: bytes  # the attached node's connection


class RelayTable:
    """Attached nodes' links, and the calls passed down them."""

    def __init__(self, send: Send, max_in_flight: int) -> None:
        self._send = send
        self._max_in_flight = max_in_flight
        self._links: dict[str, bytes] = {}  # node id -> its connection to this server
        self._passed: dict[str, _Passed] = {}  # our id -> whose call
        self._ours: dict[tuple[bytes, str], str] = {}  # (caller, caller's id) -> our id
        self._ids = itertools.count(1)
        self.passed_on = 0

    def attach(self, peer: bytes, message: Attach) -> None:
        """`peer` is the link of node `message.request_id` from now on (its newest connection)."""
        node = message.request_id
        old = self._links.get(node)
        if old is not None and old != peer:
            self.link_lost(old)  # its calls on the old connection cannot come back any more
        if node not in self._links and len(self._links) >= _MAX_ATTACHED:
            return
        self._links[node] = peer

    def attached(self) -> list[str]:
        """Ids of the nodes attached here."""
        return sorted(self._links)

    def pass_on(self, caller: bytes, message: RelayCall) -> None:
        """Send the call down its node's link, or refuse it (retryable) at once."""
        rid = message.request_id
        link = self._links.get(message.to)
        if link is None:
            self._tell(caller, Failure(rid, "peer_unreachable", "that node has no link to this relay", True))
            return
        if (caller, rid) in self._ours:
            self._tell(caller, Failure(rid, "conflict", "request id already running", False))
            return
        if sum(1 for passed in self._passed.values() if passed.caller == caller) >= self._max_in_flight:
            self._tell(caller, Failure(rid, "overloaded", "too many calls through this relay", True))
            return
        # The caller's id, so the node's logs and replicas see the request's own id; another if a
        # second caller through this relay chose the same one.
        ours = rid if rid not in self._passed else f"{rid[:100]}~{next(self._ids)}"
        error = self._send(link, encode_envelope(replace(message.call, request_id=ours)))
        if error is not None:
            self.link_lost(link)
            self._tell(
                caller, Failure(rid, "peer_unreachable", "that node's link to this relay is gone", True)
            )
            return
        self._passed[ours] = _Passed(caller, rid, link)
        self._ours[(caller, rid)] = ours
        self.passed_on += 1

    def answer(self, peer: bytes, message: Chunk | Reply | Failure | Progress) -> bool:
        """Pass an attached node's answer back to its caller; False if it was not one of ours."""
        passed = self._passed.get(message.request_id)
        if passed is None or passed.node != peer:
            return False
        if isinstance(message, Reply | Failure):
            self._end(message.request_id)
        self._tell(passed.caller, replace(message, request_id=passed.caller_rid))
        return True

    def cancel(self, caller: bytes, rid: str) -> bool:
        """The caller gave up on `rid`: cancel it down the link; False if it was not passed here."""
        ours = self._ours.get((caller, rid))
        if ours is None:
            return False
        passed = self._end(ours)
        self._send(passed.node, encode_envelope(Cancel(ours)))
        return True

    def link_lost(self, link: bytes) -> None:
        """A node's connection is gone: fail what is outstanding on it (retryable, as a lost peer)."""
        for node in [node for node, held in self._links.items() if held == link]:
            del self._links[node]
        for ours in [ours for ours, passed in self._passed.items() if passed.node == link]:
            passed = self._end(ours)
            lost = Failure(passed.caller_rid, "peer_lost", "the relayed node's link dropped", True)
            self._tell(passed.caller, lost)

    def _end(self, ours: str) -> _Passed:
        passed = self._passed.pop(ours)
        self._ours.pop((passed.caller, passed.caller_rid), None)
        return passed

    def _tell(self, caller: bytes, message: Envelope) -> None:
        error = self._send(caller, encode_envelope(message))
        if error is not None:
            log.debug("a relayed call's caller went away: %s", error)
