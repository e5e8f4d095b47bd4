"""The data plane admits members only: CURVE keys from the token, checked at the handshake.

A real ``DataPlaneServer`` and real ``PeerLinks`` on 127.0.0.1 serving a fake replica; outsiders are
bare ZeroMQ DEALERs that know the address (and, worse, the server's public key).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import zmq

from meshnode.dataplane.links import PeerLinks
from meshnode.dataplane.server import DataPlaneServer
from meshnode.mesh.envelope import Failure, Reply, encode_envelope
from meshnode.testing import FakeReplica, FakeReplicas, echoes, make_call, peer_id
from meshnode.trust.curve import CurveKeys, client_keys, node_keys

TOKEN = "the token of this mesh, at least 32 chars"
OTHER = "the token of another mesh, 32 chars too!"
PEER = peer_id("n1")
MAX_FRAME_BYTES = 1 << 20
# How long an outsider waits for an answer that must never come.
SILENCE_S = 0.5


@contextlib.asynccontextmanager
async def serving(tokens: list[str]) -> AsyncIterator[tuple[DataPlaneServer, str, FakeReplica]]:
    replica = FakeReplica(echoes("n1"))
    server = DataPlaneServer(
        "127.0.0.1",
        0,
        serve_local=FakeReplicas({"echo": replica}).serve_local,
        queue_of=lambda deployment: 0,
        max_frame_bytes=MAX_FRAME_BYTES,
        max_in_flight_per_peer=8,
        chunk_bytes=4096,
        keys=node_keys(),
        tokens=tokens,
    )
    addr = f"127.0.0.1:{server.bind()}"
    try:
        yield server, addr, replica
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def links(token: str, connect_timeout_s: float = 5.0) -> AsyncIterator[PeerLinks]:
    made = PeerLinks(
        client=client_keys(token),
        max_frame_bytes=MAX_FRAME_BYTES,
        max_in_flight_per_peer=8,
        connect_timeout_s=connect_timeout_s,
        idle_s=60.0,
    )
    try:
        yield made
    finally:
        made.close()


async def outsider_gets(addr: str, client: CurveKeys | None, server_key: str) -> list[bytes] | None:
    """What a bare DEALER receives within SILENCE_S after sending a well-formed request."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if client is not None:
        sock.curve_serverkey = server_key.encode()
        sock.curve_publickey = client.public
        sock.curve_secretkey = client.secret
    sock.connect(f"tcp://{addr}")
    try:
        sock.send(encode_envelope(make_call("echo", request_id="outsider")))
        await asyncio.sleep(0)  # let the loop breathe; the poll below is the real wait
        got = await asyncio.to_thread(sock.poll, int(SILENCE_S * 1000))
        return sock.recv_multipart() if got else None
    finally:
        sock.close(linger=0)
        ctx.term()


async def test_a_member_holding_the_token_is_served() -> None:
    async with serving([TOKEN]) as (server, addr, _), links(TOKEN) as member:
        answer = [m async for m in member.call(PEER, addr, server.public_key, make_call("echo"))]
    assert isinstance(answer[-1], Reply)


@pytest.mark.parametrize("who", ["plain", "other token", "random keys"])
async def test_an_outsider_gets_nothing_and_runs_nothing(who: str) -> None:
    client = {"plain": None, "other token": client_keys(OTHER), "random keys": node_keys()}[who]
    async with serving([TOKEN]) as (server, addr, replica):
        assert await outsider_gets(addr, client, server.public_key) is None
        refused = server.client_check.refused
        received = server.received
    assert replica.calls == []
    assert received == 0  # not one frame of theirs reached the parser
    assert refused == (0 if client is None else 1)  # a plain socket never even gets to ZAP


async def test_a_link_to_a_key_other_than_the_announced_one_fails_fast_and_retryably() -> None:
    async with serving([TOKEN]) as (_, addr, replica), links(TOKEN) as member:
        impostor_key = node_keys().public.decode()  # gossip said this; the server holds another
        answer = [m async for m in member.call(PEER, addr, impostor_key, make_call("echo"))]
    assert len(answer) == 1 and isinstance(answer[0], Failure) and answer[0].retryable
    assert replica.calls == []


async def test_a_link_from_another_mesh_fails_fast_and_retryably() -> None:
    async with serving([TOKEN]) as (server, addr, _), links(OTHER) as stranger:
        answer = [m async for m in stranger.call(PEER, addr, server.public_key, make_call("echo"))]
    assert len(answer) == 1 and isinstance(answer[0], Failure) and answer[0].retryable
    assert server.client_check.refused >= 1


async def test_a_peer_without_an_announced_key_is_not_dialled() -> None:
    async with links(TOKEN) as member:
        answer = [m async for m in member.call(PEER, "127.0.0.1:1", "", make_call("echo"))]
    assert len(answer) == 1 and isinstance(answer[0], Failure) and "no data-plane key" in answer[0].message


async def test_a_rotation_admits_the_new_token_then_drops_the_old_one() -> None:
    async with serving([TOKEN]) as (server, addr, _):
        async with links(OTHER) as new:
            before = [m async for m in new.call(PEER, addr, server.public_key, make_call("echo"))]
        server.client_check.allow([TOKEN, OTHER])
        async with links(OTHER) as new:
            during = [m async for m in new.call(PEER, addr, server.public_key, make_call("echo"))]
        server.client_check.allow([OTHER])
        async with links(TOKEN) as old:
            after = [m async for m in old.call(PEER, addr, server.public_key, make_call("echo"))]
    assert isinstance(before[-1], Failure)
    assert isinstance(during[-1], Reply)
    assert isinstance(after[-1], Failure)
