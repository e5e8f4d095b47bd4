"""A plain ZeroMQ socket driven by the event loop, without a future per message.

pyzmq's asyncio sockets wrap every send and receive in a future and re-arm their poller after each
one; on the data plane's hot path, when it was ZeroMQ, that bookkeeping cost about as much as the
rest of the hop (a DEALER-ROUTER round trip: 110-170 µs p50 through ``zmq.asyncio``, 67-72 µs this
way, both ends on one core). ``FrameReader`` instead registers the socket's file descriptor with the
loop and, when it fires, takes every message that is ready and hands each to a callback. The
gossip socket is read this way (``membership/transport.py``); the data plane now runs on sealed
links (``sealed_stream.py``).

ZeroMQ's descriptor is edge-triggered and only means "look at ``ZMQ_EVENTS``", and any operation on
the socket, a send included, may consume that edge. So every send goes through ``send``, which
schedules another look, and a look drains until ``EVENTS`` says nothing is left, or until it has
taken ``DRAIN_BYTES`` or ``DRAIN_MESSAGES``: then it schedules the next look behind whatever else the
loop has ready. A burst of large frames (a model pull's chunks, an image) thus never holds the loop
for more than one large frame's worth of messages, and an HTTP request that arrived meanwhile
is served between them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

import zmq

__all__ = ["DRAIN_BYTES", "DRAIN_MESSAGES", "FrameReader"]

# What one look takes before it yields the loop: 256 KiB (one frame of a large answer, at the
# default ``forward_chunk_bytes``) is well under a millisecond of copying and decoding here; 256 small
# messages are ~2-3 ms of handling, more than one look finds at once under load.
DRAIN_BYTES = 256 * 1024
DRAIN_MESSAGES = 256

# pyzmq's constants are enums; plain ints keep enum arithmetic off the per-message path.
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_NOBLOCK = int(zmq.NOBLOCK)


class FrameReader:
    """Calls `on_frames` with every message `sock` receives; sends without blocking."""

    def __init__(
        self, sock: zmq.Socket[bytes], on_frames: Callable[[list[bytes]], None], *, copy: bool = True
    ) -> None:
        self._sock = sock
        self._on_frames = on_frames
        # Without `copy`, frames come as ZeroMQ's own buffers (``zmq.Frame``: ``len`` and the buffer
        # protocol, all that decoding needs), one copy fewer per frame: for a bulk link's large
        # frames. Small ones are cheaper copied (a ``Frame`` costs more to make than a short copy).
        self._copy = copy
        self._loop = asyncio.get_running_loop()
        self._fd = int(sock.getsockopt(zmq.FD))
        self._look_scheduled = False
        self._loop.add_reader(self._fd, self._drain)
        self._look_soon()  # messages may have arrived before the descriptor was registered

    def send(self, frames: list[bytes]) -> zmq.ZMQError | None:
        """Send at once; the error if ZeroMQ could not take it now (no connection, queue full)."""
        try:
            self._sock.send_multipart(frames, _NOBLOCK)
        except zmq.ZMQError as exc:
            return exc
        finally:
            self._look_soon()
        return None

    def close(self) -> None:
        """Stop watching and close the socket."""
        if not self._sock.closed:
            self._loop.remove_reader(self._fd)
            self._sock.close(linger=0)

    def _look_soon(self) -> None:
        if not self._look_scheduled:
            self._look_scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._look_scheduled = False
        sock = self._sock
        taken = messages = 0
        while not sock.closed and int(sock.getsockopt(_EVENTS)) & _POLLIN:
            if taken >= DRAIN_BYTES or messages >= DRAIN_MESSAGES:
                self._look_soon()  # the rest after what else is ready: the edge will not fire again
                return
            try:
                frames = sock.recv_multipart(_NOBLOCK, copy=self._copy)
            except zmq.Again:
                return
            messages += 1
            taken += sum(map(len, frames))
            # Frames stand in for bytes where they are read: their length and their buffer.
            self._on_frames(cast(list[bytes], frames))
