"""CorkedTransport: what is written in one turn of the loop leaves in one write, and nothing is lost."""

from __future__ import annotations

import asyncio
import socket

from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.server import ServerState

from meshnode.http.corked import CorkedHttpToolsProtocol, CorkedTransport

from ..loop_turns import next_turn, until


class Recording(asyncio.Protocol):
    """The real transport's protocol on the other end of a socket pair: every byte that arrives."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = asyncio.Event()
        self.more = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.data.extend(data)
        self.more.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


async def pair() -> tuple[CorkedTransport, asyncio.Transport, Recording, list[bytes]]:
    """A corked transport over one end of a socket pair, the other end read by `Recording`; and the
    list of what the corked transport handed to the real one, write by write."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    real, _ = await loop.create_unix_connection(asyncio.Protocol, sock=ours)
    reader = Recording()
    await loop.create_unix_connection(lambda: reader, sock=theirs)
    writes: list[bytes] = []
    write = real.write

    def recording_write(data: bytes | bytearray | memoryview) -> None:
        writes.append(bytes(data))
        write(data)

    real.write = recording_write  # type: ignore[method-assign]
    return CorkedTransport(real, loop), real, reader, writes  # type: ignore[arg-type]


async def arrived(reader: Recording, size: int) -> bytes:
    async with asyncio.timeout(10):
        while len(reader.data) < size:
            reader.more.clear()
            await reader.more.wait()
    return bytes(reader.data)


async def test_writes_in_one_turn_leave_in_one_write_at_its_end() -> None:
    corked, _, reader, writes = await pair()
    corked.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    corked.write(memoryview(b"ok"))
    corked.write(b"")
    assert writes == []  # not yet: at the end of this turn
    assert corked.get_write_buffer_size() == 40
    await next_turn()
    assert writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
    corked.writelines([b"a", b"b"])
    await next_turn()
    assert writes[1:] == [b"ab"]
    assert await arrived(reader, 42) == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokab"
    corked.close()


async def test_close_sends_what_was_gathered_first() -> None:
    corked, _, reader, _ = await pair()
    corked.write(b"last words")
    corked.close()
    assert corked.is_closing()
    async with asyncio.timeout(10):
        await reader.closed.wait()
    assert bytes(reader.data) == b"last words"


async def test_abort_drops_what_was_gathered() -> None:
    corked, real, reader, writes = await pair()
    corked.write(b"never")
    corked.abort()
    async with asyncio.timeout(10):
        await reader.closed.wait()
    await next_turn()  # the turn's end comes and goes: nothing is written to a closed transport
    assert writes == [] and bytes(reader.data) == b"" and real.is_closing()


async def test_everything_else_is_the_real_transport_s() -> None:
    corked, real, _, _ = await pair()
    assert corked.get_extra_info("peername") == real.get_extra_info("peername")
    assert corked.get_extra_info("nothing", "default") == "default"
    corked.pause_reading()
    assert not real.is_reading() and not corked.is_reading()
    corked.resume_reading()
    assert real.is_reading()
    assert corked.get_protocol() is real.get_protocol()
    corked.close()


async def test_flush_writes_what_was_gathered_at_once_and_the_turn_s_end_adds_nothing() -> None:
    corked, _, reader, writes = await pair()
    corked.write(b"head ")
    corked.write(b"body")
    corked.flush()
    assert writes == [b"head body"] and corked.get_write_buffer_size() == 0
    await next_turn()
    assert writes == [b"head body"]
    assert await arrived(reader, 9) == b"head body"
    corked.close()


async def test_a_complete_answer_leaves_before_the_app_returns() -> None:
    """The answer is written when its last byte is sent, not at the end of the turn: the request's
    task ending, its metrics and the keep-alive timer run while the client reads it."""
    _, real, reader, writes = await pair()
    written_when_sent: list[list[bytes]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        assert writes == []  # the header waits for the body
        await send({"type": "http.response.body", "body": b"ok"})
        written_when_sent.append(list(writes))

    protocol = CorkedHttpToolsProtocol(Config(app, lifespan="off"), ServerState(), {})
    protocol.connection_made(real)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
    await until(lambda: bool(written_when_sent), "the app returned")
    ((answer,),) = written_when_sent  # header and body, in one write
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nok")
    assert await arrived(reader, len(answer)) == answer
    protocol.connection_lost(None)
    real.close()
