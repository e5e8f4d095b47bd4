"""EventStream: chunks pass unchanged, a ``: keep-alive`` comment fills each quiet spell, and nothing
is sent before the response starts or after it ends (no sockets: a list plays the server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.types import Message

from meshnode.http.sse import KEEPALIVE, EventStream

SCOPE = {"type": "http", "asgi": {"spec_version": "2.3"}, "method": "GET", "path": "/"}
EVERY_S = 0.05


class Wire:
    """The server side: every message sent, and a receive that waits until told the client left."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.gone = asyncio.Event()

    async def send(self, message: Message) -> None:
        self.messages.append(message)

    async def receive(self) -> Message:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.messages if m["type"] == "http.response.body"]


async def pieces(*gaps_s: float) -> AsyncIterator[bytes]:
    yield b"data: 0\n\n"
    for index, gap_s in enumerate(gaps_s, 1):
        await asyncio.sleep(gap_s)
        yield f"data: {index}\n\n".encode()


async def test_a_quiet_spell_gets_comments_between_the_chunks_in_order() -> None:
    wire = Wire()
    began = asyncio.get_running_loop().time()
    await EventStream(pieces(EVERY_S * 5, 0.0), keepalive_s=EVERY_S)({**SCOPE}, wire.receive, wire.send)
    took_s = asyncio.get_running_loop().time() - began
    bodies = wire.bodies()
    assert wire.messages[0]["type"] == "http.response.start"
    assert dict(wire.messages[0]["headers"])[b"content-type"].startswith(b"text/event-stream")
    data = [body for body in bodies if body != KEEPALIVE]
    assert data == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n", b""], "the data, in order, then the end"
    assert bodies[0] == b"data: 0\n\n" and bodies[-1] == b""
    # The quiet spell of 5 intervals gets comments; a loaded machine stretches it (and may fit one
    # between the last two chunks), never makes them come more often than the interval.
    quiet = bodies[1 : bodies.index(b"data: 1\n\n")]
    assert len(quiet) >= 2 and set(quiet) == {KEEPALIVE}, bodies
    assert bodies.count(KEEPALIVE) <= took_s / EVERY_S + 1, (bodies, took_s)


async def test_a_busy_stream_gets_no_comment_and_none_follow_its_end() -> None:
    wire = Wire()
    await EventStream(pieces(*[EVERY_S / 5] * 10), keepalive_s=EVERY_S)({**SCOPE}, wire.receive, wire.send)
    sent = len(wire.messages)
    assert KEEPALIVE not in wire.bodies()
    await asyncio.sleep(EVERY_S * 3)
    assert len(wire.messages) == sent, "nothing after the body's end"


async def test_a_client_that_leaves_stops_the_stream_and_its_timer() -> None:
    wire = Wire()
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        try:
            yield b"data: first\n\n"
            await asyncio.sleep(3600)
            yield b"never"
        finally:
            closed.set()

    stream = EventStream(endless(), keepalive_s=EVERY_S)
    response = asyncio.ensure_future(stream({**SCOPE}, wire.receive, wire.send))
    while wire.bodies().count(KEEPALIVE) < 2:
        await asyncio.sleep(EVERY_S / 5)
    wire.gone.set()
    await asyncio.wait_for(response, 5)
    await asyncio.wait_for(closed.wait(), 5)
    sent = len(wire.messages)
    await asyncio.sleep(EVERY_S * 3)
    assert len(wire.messages) == sent, "no comment after the client left"
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def test_a_send_stuck_on_a_slow_client_is_not_interleaved_with_a_comment() -> None:
    wire = Wire()
    release = asyncio.Event()
    inside = 0

    async def slow_send(message: Message) -> None:
        nonlocal inside
        inside += 1
        assert inside == 1, "two sends at once"
        if message.get("body") == b"data: 1\n\n":
            await release.wait()  # the client stopped reading for a while
        wire.messages.append(message)
        inside -= 1

    task = asyncio.ensure_future(
        EventStream(pieces(0.0, EVERY_S * 4), keepalive_s=EVERY_S)({**SCOPE}, wire.receive, slow_send)
    )
    await asyncio.sleep(EVERY_S * 4)
    release.set()
    await asyncio.wait_for(task, 5)
    assert wire.bodies()[:2] == [b"data: 0\n\n", b"data: 1\n\n"]
