"""Membership transport: datagram-like messaging over ZeroMQ.

SWIM wants UDP semantics: a send never blocks, and a message to an unreachable peer is simply
lost (the protocol's timeouts and retransmits deal with that). Over ZeroMQ that is one bound PULL
socket for everything we receive and one PUSH socket per peer for what we send, with a small
send high-water mark and non-blocking sends: when a peer is gone its queue fills and further
messages are dropped instead of piling up. ``LINGER=0`` means closing never waits on a dead peer.

Membership traffic has its own socket so that a large data-plane payload never delays a probe or
an ack. Oversized frames are cut by libzmq itself (``MAXMSGSIZE``) before they are allocated;
multi-frame messages are dropped here (the runner counts them).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import zmq
import zmq.asyncio

from ..addresses import bind_failure
from ..errors import ConfigError

log = logging.getLogger(__name__)

# Messages queued per peer while its connection is (re)established; past that, sends drop.
_SEND_HIGH_WATER = 64
# Reconnect quickly to a restarted peer, backing off to at most this while it stays down.
_RECONNECT_IVL_MS = 100
_RECONNECT_IVL_MAX_MS = 2000


def zmq_endpoint(addr: str) -> str:
    """ "host:port" (or "[v6]:port") as a ZeroMQ tcp:// endpoint."""
    host, _, port = addr.rpartition(":")
    if ":" in host.strip("[]"):
        host = f"[{host.strip('[]')}]"
    return f"tcp://{host}:{port}"


class MembershipTransport:
    """One PULL socket bound for receiving, one PUSH socket per peer for sending."""

    def __init__(self, host: str, port: int, *, max_message_bytes: int, max_peers: int = 1024) -> None:
        self._host = host
        self._port = port
        self._max_message_bytes = max_message_bytes
        self._max_peers = max_peers
        self._async_ctx = zmq.asyncio.Context()
        self._ctx = zmq.Context()
        self._pull: zmq.asyncio.Socket | None = None
        self._peers: OrderedDict[str, zmq.Socket[bytes]] = OrderedDict()
        self.sent = 0
        self.send_dropped = 0

    def bind(self) -> int:
        """Bind the receiving socket; return the port (useful when asked for port 0)."""
        pull = self._async_ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.LINGER, 0)
        pull.setsockopt(zmq.RCVHWM, 10_000)
        pull.setsockopt(zmq.MAXMSGSIZE, self._max_message_bytes)
        pull.setsockopt(zmq.IPV6, 1)
        port = bind_tcp(pull, self._host, self._port, "--mesh")
        self._pull = pull
        self._port = port
        return port

    async def recv(self) -> bytes | None:
        """The next single-frame message; None for a multi-frame one (the caller counts the drop)."""
        assert self._pull is not None, "bind() first"
        frames = await self._pull.recv_multipart(copy=True)
        if len(frames) != 1:
            return None
        return bytes(frames[0])

    def send(self, addr: str, data: bytes) -> bool:
        """Queue `data` for `addr` without blocking; False if it was dropped."""
        sock = self._peer(addr)
        try:
            sock.send(data, zmq.NOBLOCK)
        except zmq.Again:
            self.send_dropped += 1
            return False
        except zmq.ZMQError as exc:
            log.debug("send to %s failed: %s", addr, exc)
            self.send_dropped += 1
            return False
        self.sent += 1
        return True

    def forget(self, addr: str) -> None:
        """Close the socket to a peer we no longer talk to."""
        sock = self._peers.pop(addr, None)
        if sock is not None:
            sock.close(linger=0)

    def close(self) -> None:
        """Close every socket without waiting on unreachable peers."""
        for sock in self._peers.values():
            sock.close(linger=0)
        self._peers.clear()
        if self._pull is not None:
            self._pull.close(linger=0)
            self._pull = None
        self._ctx.term()
        self._async_ctx.term()

    def _peer(self, addr: str) -> zmq.Socket[bytes]:
        sock = self._peers.get(addr)
        if sock is not None:
            self._peers.move_to_end(addr)
            return sock
        sock = self._ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, _SEND_HIGH_WATER)
        sock.setsockopt(zmq.RECONNECT_IVL, _RECONNECT_IVL_MS)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, _RECONNECT_IVL_MAX_MS)
        sock.setsockopt(zmq.IPV6, 1)
        sock.connect(zmq_endpoint(addr))
        self._peers[addr] = sock
        if len(self._peers) > self._max_peers:
            # The least recently used peer is almost surely long dead.
            _, oldest = self._peers.popitem(last=False)
            oldest.close(linger=0)
        return sock


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
