"""The agent's link to one replica's worker: frames over a socket pair, each one length-prefixed.

For every worker it starts, the agent makes a socket pair (``socket.socketpair``), keeps one end and
passes the other to the worker as an inherited descriptor (``--link-fd``). Nothing else can reach
the link: it has no name on the file system and no port, so no other process can connect to a
replica or speak for one. Each end is read by a ``FramePipe`` on its process's event loop.

- A frame is a 4-byte little-endian length, then that many bytes: one envelope (mesh/envelope.py).
- A length over ``max_frame_bytes`` closes the link before any of the frame is held in memory, as
  ZeroMQ's ``MAXMSGSIZE`` did before. A worker whose link closes exits (``EXIT_AGENT_GONE``) and the
  agent's supervisor starts a fresh one; an agent that dies closes its end, which ends its workers.
- Small frames are read many at a time into one buffer; a frame larger than the buffer is read
  straight into a buffer of its own size, so an image crosses with no copy beyond the kernel's.
- Sending never blocks: frames sent in one turn of the event loop leave together at its end, and
  what the socket cannot take yet waits in the transport (the agent's admission bounds what it
  sends, ``mesh/queueing.py``; a worker sends only answers).

Why not ZeroMQ here (as between nodes until issue 19): each ZeroMQ send wakes libzmq's I/O thread,
which then wakes the reader's I/O thread, so a message between two processes took four thread
wake-ups where a socket pair takes one. Measured on one busy core (a round trip of a 200-byte
message, both processes pinned): 84 µs of CPU with ZeroMQ over ``ipc://`` against 24 µs here, one
request at a time; 28 µs against 10 µs with 32 in flight. Between nodes the data plane went the same
way later, on sealed links (``dataplane/sealed_stream.py``): the encryption, reconnection and
heartbeats a parent and its child do not need.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable
from typing import cast

__all__ = ["FramePipe", "LinkClosed", "open_pipe"]

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<I")
# Small frames are read into this buffer many at a time, one read per wake-up under load.
_READ_BUFFER_BYTES = 256 * 1024
# Less room than this at the buffer's end, and the unread bytes move to its front before a read.
_MIN_READ_BYTES = 64 * 1024


class LinkClosed(ConnectionError):
    """The link is closed: the process at its other end is gone or is being replaced."""


class FramePipe(asyncio.BufferedProtocol):
    """One end of a link: hands every frame that arrives to `on_frame`, sends frames with ``send``."""

    def __init__(
        self,
        on_frame: Callable[[bytes | bytearray], None],
        on_lost: Callable[[], None],
        max_frame_bytes: int,
    ) -> None:
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._max_frame_bytes = max_frame_bytes
        self._buffer = bytearray(_READ_BUFFER_BYTES)
        self._view = memoryview(self._buffer)
        self._start = 0  # the first byte not handed on yet
        self._end = 0  # the end of the bytes read
        self._large: bytearray | None = None  # a frame over the buffer's size, read in place
        self._filled = 0
        self._transport: asyncio.Transport | None = None
        self._outgoing: list[bytes] = []  # headers and frames sent in this turn of the loop
        self._loop = asyncio.get_running_loop()  # made on the loop that reads it (open_pipe)

    @property
    def closed(self) -> bool:
        """Whether this end can no longer send."""
        return self._transport is None or self._transport.is_closing()

    def send(self, frame: bytes) -> LinkClosed | None:
        """Queue one frame to the other end; the error, instead of raising, when the link is closed.

        Frames sent in one turn of the event loop leave together at its end, in one write: under
        load that is one system call and one wake-up of the other process for many frames.
        """
        transport = self._transport
        if transport is None or transport.is_closing():
            return LinkClosed("the link to the other process is closed")
        if not self._outgoing:
            self._loop.call_soon(self._flush)
        self._outgoing.append(_HEADER.pack(len(frame)))
        self._outgoing.append(frame)
        return None

    def _flush(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if self._transport is not None and not self._transport.is_closing():
            self._transport.writelines(outgoing)

    def close(self) -> None:
        """Close this end (what is not sent yet is dropped; the other end sees the link close)."""
        if self._transport is not None:
            self._transport.abort()

    # -- asyncio's side ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio's, only alike.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._on_lost()

    def eof_received(self) -> bool:
        return False  # the other end is gone: close ours too

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._large is not None:
            return memoryview(self._large)[self._filled :]
        if len(self._buffer) - self._end < _MIN_READ_BYTES and self._start > 0:
            unread = self._end - self._start
            self._buffer[:unread] = self._view[self._start : self._end]
            self._start, self._end = 0, unread
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        if self._large is not None:
            self._filled += nbytes
            if self._filled == len(self._large):
                frame, self._large = self._large, None
                self._on_frame(frame)
            return
        self._end += nbytes
        self._hand_on()

    def _hand_on(self) -> None:
        """Hand on every whole frame in the buffer; start reading a large one into its own."""
        view, start, end = self._view, self._start, self._end
        while end - start >= _HEADER.size and not self.closed:
            (size,) = _HEADER.unpack_from(view, start)
            if size > self._max_frame_bytes:
                limit = self._max_frame_bytes
                log.warning("a frame of %d bytes is over the %d byte limit; closing the link", size, limit)
                self.close()
                return
            body = start + _HEADER.size
            if end - body >= size:
                start = body + size
                self._on_frame(bytes(view[body:start]))
            elif body + size > len(self._buffer):
                # It would not fit even at the buffer's front: read the rest straight into its own.
                self._large = bytearray(size)
                self._large[: end - body] = view[body:end]
                self._filled = end - body
                start = end
                break
            else:
                break
        if start == end:
            start = end = 0
        self._start, self._end = start, end


async def open_pipe(
    sock: socket.socket,
    on_frame: Callable[[bytes | bytearray], None],
    on_lost: Callable[[], None],
    max_frame_bytes: int,
) -> FramePipe:
    """A ``FramePipe`` reading and writing `sock` (one end of a socket pair) on the running loop."""
    pipe = FramePipe(on_frame, on_lost, max_frame_bytes)
    await asyncio.get_running_loop().create_unix_connection(lambda: pipe, sock=sock)
    return pipe
