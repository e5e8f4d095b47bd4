"""Making sealed links: dialing one (``connect``), and answering them on a port (``SealedListener``).

The link itself, its handshake, heartbeats and frames, is ``sealed_stream.py``'s ``SealedStream``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from ..trust.sealed import ClientHandshake, ServerKeys
from .sealed_stream import OnClose, OnFrame, OnOpen, SealedStream, StreamLimits

__all__ = ["SealedListener", "connect"]


def _ignore(_stream: SealedStream) -> None:
    pass


async def connect(
    host: str,
    port: int,
    dialing: ClientHandshake,
    limits: StreamLimits,
    on_frame: OnFrame,
    *,
    on_close: OnClose = _ignore,
) -> SealedStream:
    """Dial `host`:`port` and wait until the link is open; ConnectionError when it does not open."""
    loop = asyncio.get_running_loop()
    opened: asyncio.Future[None] = loop.create_future()

    def on_open(_stream: SealedStream) -> None:
        if not opened.done():
            opened.set_result(None)

    def closed(stream: SealedStream) -> None:
        if not opened.done():
            opened.set_exception(ConnectionError(f"the link to {host}:{port} did not open ({stream.reason})"))
        on_close(stream)

    stream = SealedStream(limits, on_frame, dialing=dialing, on_open=on_open, on_close=closed)
    await loop.create_connection(lambda: stream, host, port)
    try:
        await opened
    except asyncio.CancelledError:
        stream.close()
        raise
    return stream


class SealedListener:
    """Answers sealed links on one TCP port; counts what it refused, by reason."""

    def __init__(
        self,
        keys: ServerKeys,
        limits: StreamLimits,
        on_frame: OnFrame,
        *,
        on_open: OnOpen = _ignore,
        on_close: OnClose = _ignore,
        max_unopened: int = 256,
    ) -> None:
        self.keys = keys
        self._limits = limits
        self._on_frame = on_frame
        self._on_open = on_open
        self._on_close = on_close
        self._max_unopened = max_unopened  # connections still in their handshake, at most
        self._unopened = 0
        self._server: asyncio.Server | None = None
        self.streams: set[SealedStream] = set()  # open links
        self.refused: dict[str, int] = {}  # connections closed before they opened, by reason

    async def listen(self, host: str, port: int) -> int:
        """Start answering on `host`:`port`; return the bound port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._stream, host, port, reuse_address=True)
        return int(self._server.sockets[0].getsockname()[1])

    async def listen_on(self, sock: socket.socket) -> int:
        """Start answering on `sock`, bound and listening already; return its port."""
        self._server = await asyncio.get_running_loop().create_server(self._stream, sock=sock)
        return int(sock.getsockname()[1])

    async def close(self) -> None:
        """Stop answering and close every link."""
        if self._server is not None:
            self._server.close()
        for stream in list(self.streams):
            stream.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    def _stream(self) -> SealedStream:
        stream = SealedStream(
            self._limits,
            self._on_frame,
            answering=self.keys,
            on_open=self._opened,
            on_close=self._closed,
        )
        self._unopened += 1
        if self._unopened > self._max_unopened:
            stream.close("busy")  # its connection is dropped as soon as it is made
        return stream

    def _opened(self, stream: SealedStream) -> None:
        self._unopened -= 1
        self.streams.add(stream)
        self._on_open(stream)

    def _closed(self, stream: SealedStream) -> None:
        if stream.opened:
            self.streams.discard(stream)
        else:
            self._unopened -= 1
            self.refused[stream.reason] = self.refused.get(stream.reason, 0) + 1
        self._on_close(stream)
