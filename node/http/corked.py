"""HTTP connections whose writes in one turn of the event loop leave together, in one send.

uvicorn writes a response's status line and headers as soon as the app starts the response, and its
body in a second write: two ``send`` system calls per answer. On a TCP connection each one is the
costly kind (on loopback the kernel delivers the bytes to the reader inside the writer's call), and
a client gets the header in a packet of its own. ``CorkedHttpToolsProtocol`` is uvicorn's protocol
with its transport behind a ``CorkedTransport``, which gathers what is written during one turn of the
loop and sends it at the end of that turn in one write: the header and the body of an answer go
together, and a stream's pieces that are ready at once go together too. Nothing waits longer than
the rest of the current turn, and a complete answer not even that: it leaves as its last byte is
written (``on_response_complete``), so what remains of the turn (the request's task ending, its
metrics, the keep-alive timer) runs while the client reads it, off the request's latency. Callers
that know nothing more goes on a connection this turn ``flush`` too (the data plane's sealed links
do, for a link's only request).

Everything but writing goes straight to the real transport; closing sends what is gathered first,
aborting drops it (as the real transport's abort drops its buffer). A connection upgraded to
WebSocket keeps the corked transport, which its protocol uses as any other.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["CorkedHttpToolsProtocol", "CorkedTransport"]


class CorkedTransport(asyncio.Transport):
    """A transport whose writes in one turn of the loop are sent together at its end."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._gathered: list[bytes | bytearray | memoryview] = []
        self._gathered_bytes = 0  # their length, kept: senders ask it before every frame

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._gathered:
            self._loop.call_soon(self.flush)
        self._gathered.append(data)
        self._gathered_bytes += len(data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Send what was gathered now, not at the end of this turn: nothing more is coming soon."""
        gathered, self._gathered = self._gathered, []
        self._gathered_bytes = 0
        if gathered and not self._transport.is_closing():
            self._transport.write(gathered[0] if len(gathered) == 1 else b"".join(gathered))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._gathered = []
        self._gathered_bytes = 0
        self._transport.abort()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._gathered_bytes

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)


class CorkedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, writing through a ``CorkedTransport``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CorkedTransport(transport, self.loop))

    def on_response_complete(self) -> None:
        # An answer is whole: it leaves now, not at the end of the turn (see the module docstring).
        cast(CorkedTransport, self.transport).flush()
        super().on_response_complete()
