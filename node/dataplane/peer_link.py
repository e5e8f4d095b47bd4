"""One outbound data-plane link: a CURVE DEALER to one peer, and the calls outstanding on it.

``PeerLinks`` (``links.py``) keeps one per peer and lane and carries calls over it. A link counts
its users (calls waiting for its connection or outstanding on it) and when it last had none, so
``PeerLinks`` can close the links nothing has used for a while (``forward_link_idle_s``): a mesh-wide
job listing or a finished pull must not leave a connection open to every peer for good.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from dataclasses import dataclass, field

import zmq

from ..mesh.envelope import Envelope, Failure
from ..mesh.types import NodeId
from ..trust.curve import CurveKeys
from .answers import Answers
from .frames import FrameReader

# ZeroMQ heartbeats: a peer silent this long (no FIN, e.g. a cut cable) counts as disconnected.
_HEARTBEAT_INTERVAL_MS = 1000
_HEARTBEAT_TIMEOUT_MS = 3000
_SEND_HIGH_WATER_MARK = 10_000
# A refused handshake is final: libzmq does not reconnect after one.
HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
_MONITORED_EVENTS = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | HANDSHAKE_FAILED


@dataclass
class PendingCall:
    """A call outstanding on a link: where its answers go."""

    deployment: str
    target: NodeId  # the node running it: the link's, or one behind it when the link is a relay
    # Answers in order; None when the deadline passed (one timer per request, not one per wait).
    queue: Answers[Envelope | None] = field(default_factory=Answers)
    counted: bool = False  # in PeerLinks' outstanding counts (until it ends or its link is forgotten)


@dataclass(frozen=True)
class QueueReport:
    """A peer's queue for a deployment as its last answer told it, without our own requests."""

    others: int
    at: float


class PeerLink:
    """The DEALER to one peer and the requests outstanding on it."""

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        node: NodeId,
        addr: str,
        server_key: bytes,
        client: CurveKeys,
        max_frame_bytes: int,
        bulk: bool,
        now: float,
    ) -> None:
        self.node = node
        self.bulk = bulk
        self.addr = addr
        self.server_key = server_key
        self.pending: dict[str, PendingCall] = {}
        self.sharing: collections.Counter[tuple[str, NodeId]] = collections.Counter()  # by (deployment, node)
        self.connected = False
        self.handshake = asyncio.Event()
        self.dropped = 0  # frames from this peer that failed validation
        self.users = 0  # calls holding the link: waiting for its connection, or outstanding on it
        self.idle_since = now  # loop time its last user let it go (or it was made)
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IPV6, 1)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # never queue for a peer we are not connected to
        sock.setsockopt(zmq.MAXMSGSIZE, max_frame_bytes)
        sock.setsockopt(zmq.SNDHWM, _SEND_HIGH_WATER_MARK)
        sock.setsockopt(zmq.HEARTBEAT_IVL, _HEARTBEAT_INTERVAL_MS)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, _HEARTBEAT_TIMEOUT_MS)
        # CURVE: we talk only to the key the peer announced in gossip, as a holder of the token.
        sock.curve_serverkey = server_key
        sock.curve_publickey = client.public
        sock.curve_secretkey = client.secret
        self.monitor = sock.get_monitor_socket(_MONITORED_EVENTS)
        sock.connect(f"tcp://{addr}")
        self.sock = sock
        self.reader: FrameReader | None = None
        self.monitor_reader: FrameReader | None = None

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

    def send(self, frames: list[bytes]) -> zmq.ZMQError | None:
        assert self.reader is not None
        return self.reader.send(frames)

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.sock.disable_monitor()
        for reader, sock in ((self.monitor_reader, self.monitor), (self.reader, self.sock)):
            if reader is not None:
                reader.close()
            else:
                sock.close(linger=0)


__all__ = ["HANDSHAKE_FAILED", "PeerLink", "PendingCall", "QueueReport"]
