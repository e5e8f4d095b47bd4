"""``Dialer`` on real TCP sockets (127.0.0.1): it waits for a peer that is not there yet, redials
after a drop, reports a refused handshake, and stops dialing once closed."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from meshnode.dataplane.dialer import Dialer
from meshnode.dataplane.sealed_listener import SealedListener
from meshnode.dataplane.sealed_stream import SealedStream, StreamLimits
from meshnode.trust.sealed import NodeKey, ServerKeys, announced_key

from ..loop_turns import MAX_TURNS, eventually, next_turn

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


async def test_it_dials_until_the_peer_listens_then_redials_after_a_drop() -> None:
    port, heard, streams = free_port(), Heard(), []
    link = dialer(port, heard)
    assert link.send(b"too early") is not None  # nothing open: refused, not queued
    server = listener(streams)
    try:
        await server.listen("127.0.0.1", port)  # after a few refused connects
        await eventually(lambda: heard.opens == 1)
        assert link.open and link.send(b"hello") is None
        await eventually(lambda: heard.frames == [b"hello"])
        streams[0].close()  # the peer drops the link
        await eventually(lambda: heard.opens == 2)
        assert heard.drops == [(True, "lost")]
        assert link.send(b"again") is None
        await eventually(lambda: heard.frames == [b"hello", b"again"])
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
        await eventually(lambda: len(heard.drops) >= 2)  # refused, and tried again
        assert all(not opened for opened, _ in heard.drops)
        assert heard.opens == 0 and not streams
        assert link.dialing  # redialing, with a backoff
        link.close()
        await eventually(lambda: not link.dialing)  # its timer cancelled, a dial under way ended
        for _ in range(MAX_TURNS):
            await next_turn()
            assert not link.dialing  # and nothing schedules another
    finally:
        link.close()
        await server.close()
