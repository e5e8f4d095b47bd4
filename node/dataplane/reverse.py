"""A node nobody can dial serves its replicas over links it opens to its relays (docs/edge.md).

For each relay its membership chose (``membership/relaying.py``), the node keeps one DEALER to the
relay's data port, as a member (CURVE, the key the relay gossiped), and says ``Attach`` on it each
time the connection is made: a reconnect gets a new connection id at the relay, which must learn
it before the next call. Calls that come down the link are served by the node's data-plane server
exactly as calls on its own port (``DataPlaneServer.open_channel``), and their answers go back up
the same link. ZeroMQ's heartbeats keep the link, and so the NAT's mapping of it, alive, and notice
a relay gone silent within seconds; libzmq reconnects by itself.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import zmq
from zmq.utils.monitor import parse_monitor_message

from ..mesh.envelope import Attach, encode_envelope
from ..mesh.member import Member
from ..mesh.types import NodeId
from ..trust.curve import CurveKeys
from .contexts import serving_context
from .frames import FrameReader
from .server import DataPlaneServer

log = logging.getLogger(__name__)

_HEARTBEAT_INTERVAL_MS = 1000
_HEARTBEAT_TIMEOUT_MS = 3000
_Z85_KEY_CHARS = 40


@dataclass(frozen=True)
class _Target:
    node: NodeId
    addr: str
    key: str


class _Link:
    def __init__(self, target: _Target, sock: zmq.Socket[bytes], reader: FrameReader, monitor: FrameReader):
        self.target = target
        self.sock = sock
        self.reader = reader
        self.monitor = monitor
        self.channel = b"relay " + target.node.encode()

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.sock.disable_monitor()
        self.monitor.close()
        self.reader.close()


class ReverseLinks:
    """This node's links to its relays' data ports, kept to what membership chose."""

    def __init__(
        self, me: NodeId, server: DataPlaneServer, client: Callable[[], CurveKeys], max_frame_bytes: int
    ) -> None:
        self._me = me
        self._server = server
        self._client = client
        self._max_frame_bytes = max_frame_bytes
        self._ctx = serving_context()
        self._links: dict[NodeId, _Link] = {}
        self.attaches = 0

    @property
    def relays(self) -> list[NodeId]:
        """The relays this node has a link to now."""
        return sorted(self._links)

    def sync(self, relays: Iterable[NodeId], members: Mapping[NodeId, Member]) -> None:
        """Open links to `relays` (as `members` describe them) that are missing; close the others."""
        wanted = {}
        for node in relays:
            member = members.get(node)
            if member is not None and member.meta.data and len(member.meta.data_key) == _Z85_KEY_CHARS:
                wanted[node] = _Target(node, member.meta.data, member.meta.data_key)
        for node, link in list(self._links.items()):
            if wanted.get(node) != link.target:  # no longer a relay, or restarted (a new port, key)
                self._drop(node)
        for node, target in wanted.items():
            if node not in self._links:
                self._open(target)

    def close(self) -> None:
        """Close every link."""
        for node in list(self._links):
            self._drop(node)
        self._ctx.term()

    def _open(self, target: _Target) -> None:
        client = self._client()
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IPV6, 1)
        sock.setsockopt(zmq.MAXMSGSIZE, self._max_frame_bytes)
        sock.setsockopt(zmq.HEARTBEAT_IVL, _HEARTBEAT_INTERVAL_MS)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, _HEARTBEAT_TIMEOUT_MS)
        sock.curve_serverkey = target.key.encode("ascii")
        sock.curve_publickey = client.public
        sock.curve_secretkey = client.secret
        monitor_sock = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        sock.connect(f"tcp://{target.addr}")
        channel = b"relay " + target.node.encode()
        reader = FrameReader(sock, lambda frames: self._server.on_channel_frames(channel, frames))
        monitor = FrameReader(monitor_sock, lambda frames: self._connected(target.node, frames))
        link = _Link(target, sock, reader, monitor)
        self._links[target.node] = link
        self._server.open_channel(link.channel, reader.send)
        log.info("data-plane link to relay %s at %s", target.node[:8], target.addr)

    def _connected(self, node: NodeId, frames: list[bytes]) -> None:
        parse_monitor_message(frames)
        link = self._links.get(node)
        if link is not None:
            # Each (re)connection is a new connection id at the relay: tell it which is ours.
            link.reader.send([encode_envelope(Attach(self._me))])
            self.attaches += 1

    def _drop(self, node: NodeId) -> None:
        link = self._links.pop(node)
        self._server.close_channel(link.channel)
        link.close()
