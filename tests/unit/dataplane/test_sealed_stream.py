"""Sealed links on real TCP sockets (127.0.0.1): frames both ways, strangers refused and counted,
silence noticed, and a peer that does not read never makes a node buffer without bound."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import zmq
from zmq.utils import z85

from meshnode.dataplane.sealed_listener import SealedListener, connect
from meshnode.dataplane.sealed_stream import SealedStream, StreamLimits
from meshnode.trust.sealed import ClientHandshake, ServerKeys

from ..loop_turns import eventually

TOKEN = "the token of this test mesh, 32+ characters"
LIMITS = StreamLimits(max_frame_bytes=256 * 1024)


@dataclass
class Node:
    """A listener answering sealed links, and what it heard."""

    listener: SealedListener
    port: int
    public: bytes
    heard: list[bytes] = field(default_factory=list)
    streams: list[SealedStream] = field(default_factory=list)

    def dial(self, token: str = TOKEN, key: bytes | None = None) -> ClientHandshake:
        return ClientHandshake(token, self.public if key is None else key)


async def _node(limits: StreamLimits = LIMITS, *, echo: bool = True, max_unopened: int = 256) -> Node:
    public, secret = zmq.curve_keypair()
    node: Node

    def on_frame(stream: SealedStream, payload: bytes) -> None:
        node.heard.append(payload)
        if echo:
            stream.send(payload)

    listener = SealedListener(
        ServerKeys(z85.decode(secret), [TOKEN]),
        limits,
        on_frame,
        on_open=lambda stream: node.streams.append(stream),
        max_unopened=max_unopened,
    )
    port = await listener.listen("127.0.0.1", 0)
    node = Node(listener, port, z85.decode(public))
    return node


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    made = await _node()
    yield made
    await made.listener.close()


async def test_frames_of_every_size_go_both_ways_in_order(node: Node) -> None:
    back: list[bytes] = []
    stream = await connect("127.0.0.1", node.port, node.dial(), LIMITS, lambda _s, p: back.append(p))
    sent = [os.urandom(size) for size in (1, 200, 70_000, LIMITS.max_frame_bytes, 3)]
    for payload in sent:
        assert stream.send(payload) is None
    await eventually(lambda: len(back) == len(sent))
    assert back == sent == node.heard
    over = stream.send(bytes(LIMITS.max_frame_bytes + 1))
    assert over is not None and "over the" in over
    stream.close()
    await eventually(lambda: not node.listener.streams)


async def test_a_client_with_another_token_is_refused_and_counted(node: Node) -> None:
    dialing = node.dial(token="another mesh's token, 32+ characters")
    with pytest.raises(ConnectionError):
        await connect("127.0.0.1", node.port, dialing, LIMITS, print)
    await eventually(lambda: node.listener.refused.get("unknown_key") == 1)
    assert not node.heard and not node.listener.streams


async def test_a_client_refuses_a_server_without_the_key_gossip_announced(node: Node) -> None:
    someone_else = z85.decode(zmq.curve_keypair()[0])
    with pytest.raises(ConnectionError, match="forged"):
        await connect("127.0.0.1", node.port, node.dial(key=someone_else), LIMITS, print)
    await eventually(lambda: sum(node.listener.refused.values()) == 1)
    assert not node.listener.streams


async def _raw(port: int, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    return reader, writer


async def test_bytes_that_are_not_frames_close_the_connection_unread(node: Node) -> None:
    reader, writer = await _raw(node.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, nothing answered
    writer.close()
    await eventually(lambda: node.listener.refused.get("frames") == 1)


async def test_a_connection_that_never_handshakes_is_closed() -> None:
    node = await _node(StreamLimits(max_frame_bytes=1024, handshake_timeout_s=0.2))
    try:
        reader, writer = await _raw(node.port, b"")
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        await eventually(lambda: node.listener.refused == {"handshake_timeout": 1})
    finally:
        await node.listener.close()


async def test_connections_past_the_unopened_limit_are_dropped_at_once() -> None:
    node = await _node(max_unopened=1)
    try:
        _, idle = await _raw(node.port, b"")  # holds the one handshake slot
        reader, writer = await _raw(node.port, b"")
        assert await asyncio.wait_for(reader.read(), 10) == b""
        await eventually(lambda: node.listener.refused.get("busy") == 1)
        idle.close()
        writer.close()
        await eventually(lambda: node.listener.refused.get("lost") == 1)
        # Its slot is free again: a member gets in.
        stream = await connect("127.0.0.1", node.port, node.dial(), LIMITS, print)
        stream.close()
    finally:
        await node.listener.close()


async def test_an_idle_link_stays_open_on_heartbeats() -> None:
    fast = StreamLimits(max_frame_bytes=1024, heartbeat_interval_s=0.05, heartbeat_timeout_s=0.15)
    node = await _node(fast)
    try:
        stream = await connect("127.0.0.1", node.port, node.dial(), fast, print)
        await eventually(lambda: stream.heartbeats >= 6 and node.streams[0].heartbeats >= 6)
        assert not stream.closed and not node.streams[0].closed  # many timeouts' worth of idleness
        assert stream.send(b"still there") is None
        await eventually(lambda: node.heard == [b"still there"])
    finally:
        await node.listener.close()


async def test_a_peer_that_falls_silent_is_noticed() -> None:
    # The server never speaks unprompted, as a frozen process would not: the client notices.
    node = await _node(StreamLimits(max_frame_bytes=1024, heartbeat_interval_s=3600))
    fast = StreamLimits(max_frame_bytes=1024, heartbeat_interval_s=0.05, heartbeat_timeout_s=0.15)
    try:
        closed: list[SealedStream] = []
        await connect("127.0.0.1", node.port, node.dial(), fast, print, on_close=closed.append)
        await eventually(lambda: bool(closed))
        assert closed[0].reason == "silent" and closed[0].opened
    finally:
        await node.listener.close()


async def test_a_peer_that_does_not_read_makes_send_refuse_not_buffer(node: Node) -> None:
    small = StreamLimits(max_frame_bytes=64 * 1024, max_buffered_bytes=1024 * 1024)
    stream = await connect("127.0.0.1", node.port, node.dial(), small, print)
    await eventually(lambda: bool(node.streams))
    node.streams[0].pause_reading()
    refusal = None
    for _ in range(10_000):  # kernel buffers fill first, then ours up to its bound
        refusal = stream.send(bytes(64 * 1024))
        if refusal is not None:
            break
        await asyncio.sleep(0)
    assert refusal == "the peer is not reading what was sent to it"
    stream.close()


async def test_frames_leave_at_the_turn_s_end_or_at_once_when_flushed(node: Node) -> None:
    stream = await connect("127.0.0.1", node.port, node.dial(), LIMITS, lambda _s, _p: None)
    transport = stream._transport  # corked: what it holds is what is not written yet
    assert transport is not None
    assert stream.send(b"first") is None
    held = transport.get_write_buffer_size()
    assert held > len(b"first")  # sealed, with its length: not written yet
    assert stream.send(b"second", flush=True) is None
    assert transport.get_write_buffer_size() == 0  # both written, in one go
    stream.send(b"third")
    stream.flush()
    assert transport.get_write_buffer_size() == 0
    await eventually(lambda: len(node.heard) == 3)
    assert node.heard == [b"first", b"second", b"third"]
    stream.close()
