"""One outbound data-plane link: a sealed link to one peer (``dialer.py``), and the calls outstanding on it.

``PeerLinks`` (``links.py``) keeps one per peer and lane and carries calls over it. A link counts
its users (calls waiting for its connection or outstanding on it) and when it last had none, so
``PeerLinks`` can close the links nothing has used for a while (``forward_link_idle_s``): a mesh-wide
job listing or a finished pull must not leave a connection open to every peer for good.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol, TypeVar

from ..mesh.envelope import Failure
from ..mesh.types import NodeId
from .answers import Sink
from .dialer import Dialer
from .sealed_stream import StreamLimits

K = TypeVar("K")


@dataclass
class PendingCall:
    """A call outstanding on a link: where its answers go."""

    deployment: str
    target: NodeId  # the node running it: the link's, or one behind it when the link is a relay
    # Answers in order (or only the last, ``LastAnswer``); None when the deadline passed (one timer
    # per request, not one per wait).
    queue: Sink
    counted: bool = False  # in PeerLinks' outstanding counts (until it ends or its link is forgotten)


@dataclass(frozen=True)
class QueueReport:
    """A peer's queue for a deployment as its last answer told it, without our own requests."""

    others: int
    at: float


class PeerLink:
    """The sealed link to one peer and the requests outstanding on it."""

    def __init__(
        self,
        node: NodeId,
        addr: str,
        server_key: str,
        raw_key: bytes,
        token: Callable[[], str],
        limits: StreamLimits,
        bulk: bool,
        now: float,
        events: LinkEvents,
        bind: str | None = None,
    ) -> None:
        self.node = node
        self.bind = bind  # a worker lane's deployment (``worker_lanes.py``); None: the peer's agent
        self.bulk = bulk
        self.addr = addr
        self.server_key = server_key  # as gossip announced it: a restarted peer announces another
        self.pending: dict[str, PendingCall] = {}
        self.sharing: collections.Counter[tuple[str, NodeId]] = collections.Counter()  # by (deployment, node)
        self.connected = False
        self.handshake = asyncio.Event()
        self.dropped = 0  # frames from this peer that failed validation
        self.users = 0  # calls holding the link: waiting for its connection, or outstanding on it
        self.retired = False  # its peer left the mesh: no call starts on it (``PeerLinks.retire``)
        self.idle_since = now  # loop time its last user let it go (or it was made)
        self.dialer = Dialer(
            addr,
            raw_key,
            token,
            limits,
            on_open=lambda: events.link_opened(self),
            on_frame=lambda payload: events.link_frame(self, payload),
            on_drop=lambda opened, reason: events.link_dropped(self, opened, reason),
        )

    @property
    def closed(self) -> bool:
        """Closed for good (forgotten or idle): nothing more can be sent on it."""
        return self.dialer.closed

    def hold(self) -> None:
        """A call starts using the link: it is not idle until every such call releases it."""
        self.users += 1

    def release(self, now: float) -> None:
        """A call is done with the link (loop time `now`)."""
        self.users -= 1
        if not self.users:
            self.idle_since = now

    def idle_until(self, idle_s: float) -> float | None:
        """When the link will have been idle `idle_s` (loop time), or None while a call holds it."""
        return None if self.users else self.idle_since + idle_s

    def add(self, rid: str, pending: PendingCall) -> None:
        self.pending[rid] = pending
        self.sharing[(pending.deployment, pending.target)] += 1

    def remove(self, rid: str) -> None:
        if (pending := self.pending.pop(rid, None)) is not None:
            key = (pending.deployment, pending.target)
            self.sharing[key] -= 1
            if not self.sharing[key]:
                del self.sharing[key]  # no key outlives its requests

    def fail_all(self, kind: str, message: str) -> None:
        for rid, pending in self.pending.items():
            pending.queue.put_nowait(Failure(rid, kind, message, True))

    async def refusal(self, max_in_flight: int, deadline: float, connect_timeout_s: float) -> str | None:
        """Why a call cannot be sent on this link now (waiting up to `connect_timeout_s`, never
        past `deadline`, for it to open), or None when it can."""
        if self.retired:
            return f"{self.addr} left the mesh"
        if len(self.pending) >= max_in_flight:
            return f"{len(self.pending)} requests already outstanding at {self.addr}"
        if self.connected:
            return None
        if self.handshake.is_set():
            return f"the connection to {self.addr} dropped"
        wait_until = min(deadline, asyncio.get_running_loop().time() + connect_timeout_s)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(wait_until):
                await self.handshake.wait()
        return None if self.connected else f"no connection to {self.addr} within {connect_timeout_s:g} s"

    def send(self, payload: bytes, *, flush: bool = False) -> str | None:
        """Send one envelope (``SealedStream.send``); None when taken, else why not."""
        return self.dialer.send(payload, flush=flush)

    def close(self) -> None:
        self.dialer.close()


class Outstanding:
    """Calls outstanding per node running them, kept as they start and end: routing reads it on
    every request, so it is never counted from the links' pending tables (O(requests) each)."""

    def __init__(self) -> None:
        self._counts: dict[NodeId, int] = {}
        self.view: Mapping[NodeId, int] = MappingProxyType(self._counts)  # read-only, live

    def count(self, pending: PendingCall) -> None:
        pending.counted = True
        self._counts[pending.target] = self._counts.get(pending.target, 0) + 1

    def uncount(self, pending: PendingCall) -> None:
        """`pending` is outstanding no more (once: a second call changes nothing)."""
        if not pending.counted:
            return
        pending.counted = False
        left = self._counts[pending.target] - 1
        if left:
            self._counts[pending.target] = left
        else:
            del self._counts[pending.target]


def close_idle(table: dict[K, PeerLink], now: float, idle_s: float) -> float:
    """Close and remove the links of `table` no call has held for `idle_s`; when the next one will
    have been (loop time; infinity when none is left)."""
    next_at = math.inf
    for key, link in list(table.items()):
        until = link.idle_until(idle_s)
        if until is not None and until <= now:
            del table[key]  # nothing pending on it: nothing to fail
            link.close()
        else:
            next_at = min(next_at, until if until is not None else now + idle_s)
    return next_at


class LinkEvents(Protocol):
    """What a link tells its owner (``PeerLinks``)."""

    def link_opened(self, link: PeerLink) -> None:
        """Its handshake completed (the first time, or after a reconnect)."""
        ...

    def link_frame(self, link: PeerLink, payload: bytes) -> None:
        """An envelope arrived on it."""
        ...

    def link_dropped(self, link: PeerLink, opened: bool, reason: str) -> None:
        """It dropped (`opened`), or a connection closed in its handshake (refused)."""
        ...


__all__ = ["LinkEvents", "Outstanding", "PeerLink", "PendingCall", "QueueReport", "close_idle"]
