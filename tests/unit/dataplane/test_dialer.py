"""``Dialer`` on real TCP sockets (127.0.0.1): it waits for a peer that is not there yet, redials
after a drop, reports a refused handshake, and stops dialing once closed."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from meshnode.dataplane.dialer import Dialer
from meshnode.dataplane.sealed_stream import SealedListener, SealedStream, StreamLimits
from meshnode.trust.sealed import NodeKey, ServerKeys, announced_key

TOKEN = "the token of this test mesh, 32+ characters"
LIMITS = StreamLimits(max_frame_bytes=1024)
KEY = NodeKey.fresh()
RAW_KEY = announced_key(KEY.public)
assert RAW_KEY is not None


@dataclass
class Heard:
    opens: int = 0
    frames: list[bytes] = field(default_factory=list)
    drops: list[tuple[bool, str]] = field(default_factory=list)


def dialer(port: int, heard: Heard, token: str = TOKEN) -> Dialer:
    return Dialer(
        f"127.0.0.1:{port}",
        RAW_KEY,
        lambda: token,
        LIMITS,
        on_open=lambda: setattr(heard, "opens", heard.opens + 1),
        on_frame=heard.frames.append,
        on_drop=lambda opened, reason: heard.drops.append((opened, reason)),
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def listener(streams: list[SealedStream]) -> SealedListener:
    def echo(stream: SealedStream, payload: bytes) -> None:
        stream.send(payload)

    return SealedListener(ServerKeys(KEY.secret, [TOKEN]), LIMITS, echo, on_open=streams.append)


async def _until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


async def test_it_dials_until_the_peer_listens_then_redials_after_a_drop() -> None:
    port, heard, streams = free_port(), Heard(), []
    link = dialer(port, heard)
    assert link.send(b"too early") is not None  # nothing open: refused, not queued
    server = listener(streams)
    try:
        await server.listen("127.0.0.1", port)  # after a few refused connects
        await _until(lambda: heard.opens == 1)
        assert link.open and link.send(b"hello") is None
        await _until(lambda: heard.frames == [b"hello"])
        streams[0].close()  # the peer drops the link
        await _until(lambda: heard.opens == 2)
        assert heard.drops == [(True, "lost")]
        assert link.send(b"again") is None
        await _until(lambda: heard.frames == [b"hello", b"again"])
    finally:
        link.close()
        await server.close()
    assert not link.open


async def test_a_refused_handshake_is_reported_and_closing_stops_the_redials() -> None:
    streams: list[SealedStream] = []
    server = listener(streams)
    port = await server.listen("127.0.0.1", 0)
    heard = Heard()
    link = dialer(port, heard, token="another mesh's token, 32+ characters")
    try:
        await _until(lambda: len(heard.drops) >= 2)  # refused, and tried again
        assert all(not opened for opened, _ in heard.drops)
        assert heard.opens == 0 and not streams
        link.close()
        tries = server.refused.get("unknown_key", 0)
        await asyncio.sleep(0.5)  # several redial intervals: none may come
        assert server.refused.get("unknown_key", 0) == tries
    finally:
        link.close()
        await server.close()
