"""Membership transport: datagram-like messaging over one ZeroMQ ROUTER socket.

SWIM wants UDP semantics: a send never blocks, and a message to an unreachable peer is simply
lost (the protocol's timeouts and retransmits deal with that). Here that is one ROUTER socket that
is both bound (peers' connections to us) and connected out (ours to each peer we send to, named
``@host:port`` with ``CONNECT_ROUTING_ID``), with a small per-connection high-water mark and
non-blocking sends: when a peer is gone its queue fills and further messages are dropped instead of
piling up. ``LINGER=0`` means closing never waits on a dead peer.

Why a ROUTER and not a PULL to receive: every connection works both ways, so a node can be
answered on the connection it opened (``send_route``) where nobody can open one to it, a laptop
behind NAT (``relaying.py``, docs/edge.md). Each message arrives with its connection's id: ours
start with ``@``; a peer's connection to us gets an id from libzmq, which is how a node tells an
answer on a connection a peer opened (it can be dialed) from one on its own. The kernel closes a
connection whose peer went silent (a NAT that forgot it, a cut cable): within 3 s of unacknowledged
data (TCP_USER_TIMEOUT), or after its keepalives go unanswered when idle; connections of ours come
back by themselves; ``on_connected`` says when one (re)connects.

Membership traffic has its own socket so that a large data-plane payload never delays a probe or
an ack. Oversized frames are cut by libzmq itself (``MAXMSGSIZE``) before they are allocated;
multi-frame messages are handed on as ``None`` (the runner counts them).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from ..addresses import bind_failure
from ..dataplane.frames import FrameReader
from ..errors import ConfigError

log = logging.getLogger(__name__)

# Messages queued per connection while it is (re)established; past that, sends drop.
_SEND_HIGH_WATER = 64
# Reconnect quickly to a restarted peer, backing off to at most this while it stays down.
_RECONNECT_IVL_MS = 100
_RECONNECT_IVL_MAX_MS = 2000
# A connection whose data stays unacknowledged this long is closed (a peer or NAT mapping gone, a
# cut cable) and comes back by itself. The kernel watches it (TCP_USER_TIMEOUT): nothing wakes us.
_UNACKED_TIMEOUT_MS = 3000
# An idle connection is probed by the kernel's keepalives after this long, every interval after,
# and closed after that many go unanswered: ~16 s to find a dead idle one, which no send waits on
# (a send finds it within _UNACKED_TIMEOUT_MS). Keepalives also refresh NAT mappings when idle.
_KEEPALIVE_IDLE_S = 10
_KEEPALIVE_INTERVAL_S = 2
_KEEPALIVE_COUNT = 3
_OURS = b"@"

# (connection id, the message or None for a multi-frame one)
OnMessage = Callable[[bytes, bytes | None], None]


def zmq_endpoint(addr: str) -> str:
    """ "host:port" (or "[v6]:port") as a ZeroMQ tcp:// endpoint."""
    host, _, port = addr.rpartition(":")
    if ":" in host.strip("[]"):
        host = f"[{host.strip('[]')}]"
    return f"tcp://{host}:{port}"


def dialed_by_peer(route: bytes) -> bool:
    """Whether a message came on a connection a peer opened to us (not one of ours)."""
    return not route.startswith(_OURS)


class MembershipTransport:
    """One ROUTER socket, bound for peers' connections and connected out to each peer we send to."""

    def __init__(self, host: str, port: int, *, max_message_bytes: int, max_peers: int = 1024) -> None:
        self._host = host
        self._port = port
        self._max_message_bytes = max_message_bytes
        self._max_peers = max_peers
        self._ctx = zmq.Context()
        self._sock: zmq.Socket[bytes] | None = None
        self._reader: FrameReader | None = None
        self._monitor: FrameReader | None = None
        # Our connections: address -> (endpoint, connection id), least recently used first. Each
        # connect gets an id never used before: one being torn down may still hold the last.
        self._peers: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self._addr_of_endpoint: dict[str, str] = {}
        self._connects = 0
        self.sent = 0
        self.send_dropped = 0

    def bind(self) -> int:
        """Bind the socket; return the port (useful when asked for port 0)."""
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 10_000)
        sock.setsockopt(zmq.SNDHWM, _SEND_HIGH_WATER)
        sock.setsockopt(zmq.MAXMSGSIZE, self._max_message_bytes)
        sock.setsockopt(zmq.IPV6, 1)
        # A send to a connection that is gone fails (and is counted) instead of vanishing.
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.RECONNECT_IVL, _RECONNECT_IVL_MS)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, _RECONNECT_IVL_MAX_MS)
        # Dead connections are the kernel's to find, not ZeroMQ heartbeats': at 1,000 members a
        # node holds ~2,000 membership connections, and a heartbeat a second on each kept its
        # I/O thread at 5-8 % of a core while idle (docs/benchmarks.md, "Scale of one agent").
        sock.setsockopt(zmq.TCP_MAXRT, _UNACKED_TIMEOUT_MS)
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, _KEEPALIVE_IDLE_S)
        sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, _KEEPALIVE_INTERVAL_S)
        sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, _KEEPALIVE_COUNT)
        port = bind_tcp(sock, self._host, self._port, "--mesh")
        self._sock = sock
        self._port = port
        return port

    def start(self, on_message: OnMessage, on_connected: Callable[[str], None] = lambda addr: None) -> None:
        """Hand every message to `on_message`, and each (re)connection of ours to `on_connected`.

        Needs the running event loop. Messages are taken as soon as the loop runs.
        """
        assert self._sock is not None, "bind() first"

        def frames_in(frames: list[bytes]) -> None:
            on_message(frames[0], frames[1] if len(frames) == 2 else None)

        def event(frames: list[bytes]) -> None:
            message = parse_monitor_message(frames)
            addr = self._addr_of_endpoint.get(str(message.get("endpoint", b""), "utf-8", "replace"))
            if addr is not None:
                on_connected(addr)

        self._reader = FrameReader(self._sock, frames_in)
        monitor = self._sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self._monitor = FrameReader(monitor, event)

    def send(self, addr: str, data: bytes) -> bool:
        """Queue `data` for `addr` on our connection to it without blocking; False if dropped."""
        return self._send(self._peer(addr), data, addr)

    def send_route(self, route: bytes, data: bytes) -> bool:
        """Send on the connection `route` (as a message arrived on); False if it is gone or full."""
        return self._send(route, data, "a peer's connection")

    def dialing(self, addr: str) -> bool:
        """Whether we have a connection of our own to `addr` (made, or being made)."""
        return addr in self._peers

    def forget(self, addr: str) -> None:
        """Close our connection to a peer we no longer talk to."""
        peer = self._peers.pop(addr, None)
        if peer is not None:
            self._addr_of_endpoint.pop(peer[0], None)
            self._disconnect(peer[0])

    def close(self) -> None:
        """Close the socket without waiting on unreachable peers."""
        if self._sock is not None:
            self._sock.disable_monitor()
        for reader in (self._monitor, self._reader):
            if reader is not None:
                reader.close()
        if self._sock is not None and not self._sock.closed:
            self._sock.close(linger=0)
        self._sock = None
        self._peers.clear()
        self._ctx.term()

    def _send(self, route: bytes, data: bytes, where: str) -> bool:
        assert self._sock is not None, "bind() first"
        error = (
            self._reader.send([route, data])
            if self._reader is not None
            else _send_now(self._sock, [route, data])
        )
        if error is not None:
            log.debug("send to %s failed: %s", where, error)
            self.send_dropped += 1
            return False
        self.sent += 1
        return True

    def _peer(self, addr: str) -> bytes:
        """Our connection's id for `addr`, connecting first if there is none."""
        peer = self._peers.get(addr)
        if peer is not None:
            self._peers.move_to_end(addr)
            return peer[1]
        assert self._sock is not None, "bind() first"
        endpoint = zmq_endpoint(addr)
        self._connects += 1
        route = b"%s%d %s" % (_OURS, self._connects, addr.encode())
        self._sock.setsockopt(zmq.CONNECT_ROUTING_ID, route)
        try:
            self._sock.connect(endpoint)
        except zmq.ZMQError as exc:  # an address libzmq cannot parse or resolve
            log.debug("cannot connect to %s: %s", addr, exc)
            return route  # the send then fails as unroutable, and is counted
        self._peers[addr] = (endpoint, route)
        self._addr_of_endpoint[endpoint] = addr
        if len(self._peers) > self._max_peers:
            # The least recently used peer is almost surely long dead.
            _, (old_endpoint, _) = self._peers.popitem(last=False)
            self._addr_of_endpoint.pop(old_endpoint, None)
            self._disconnect(old_endpoint)
        return route

    def _disconnect(self, endpoint: str) -> None:
        if self._sock is None:
            return
        try:
            self._sock.disconnect(endpoint)
        except zmq.ZMQError as exc:  # never connected (still resolving), or already gone
            log.debug("disconnect from %s: %s", endpoint, exc)


def _send_now(sock: zmq.Socket[bytes], frames: list[bytes]) -> zmq.ZMQError | None:
    try:
        sock.send_multipart(frames, zmq.NOBLOCK)
    except zmq.ZMQError as exc:
        return exc
    return None


def bind_tcp(sock: zmq.Socket[Any], host: str, port: int, flag: str) -> int:
    """Bind `sock` on host:port (port 0: a free one) and return the port; ConfigError naming `flag` if not."""
    try:
        if port == 0:
            return int(sock.bind_to_random_port(f"tcp://{_bind_host(host)}"))
        sock.bind(f"tcp://{_bind_host(host)}:{port}")
    except zmq.ZMQError as exc:
        sock.close(linger=0)
        raise ConfigError(bind_failure(flag, host, port, exc.errno, exc.strerror)) from exc
    return port


def _bind_host(host: str) -> str:
    if host in ("0.0.0.0", "", "*"):
        return "*"
    if ":" in host:
        return f"[{host}]"
    return host
