"""The real data-plane pair beyond the shared contract: what only the frames and peers' links show.

``PeerLinks`` and ``DataPlaneServer`` run in this event loop on 127.0.0.1, serving fake replicas
(``meshnode.testing``). Where a test needs frames no meshnode part would send, or to see the frames
themselves, a bare sealed link (a member's) stands in for the other end. The contract both the fake and the
real links keep is in ``test_links_conformance.py``; the real agents' defences against garbage on the
server's port are in ``tests/integration/dataplane/test_forwarding.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from zmq.utils import z85

from meshnode.dataplane.links import PeerLinks
from meshnode.dataplane.sealed_listener import SealedListener, connect
from meshnode.dataplane.sealed_stream import SealedStream, StreamLimits
from meshnode.dataplane.server import DataPlaneServer
from meshnode.mesh.envelope import (
    ACCEPT_BULK,
    Call,
    Cancel,
    Chunk,
    Envelope,
    Failure,
    Reply,
    decode_envelope,
    encode_envelope,
)
from meshnode.testing import JSON, FakeReplica, FakeReplicas, echoes, gated, make_call, peer_id, replies
from meshnode.trust.sealed import ClientHandshake, NodeKey, ServerKeys

from ..loop_turns import eventually

PEER = peer_id("n1")
MAX_FRAME_BYTES = 1 << 20
LIMITS = StreamLimits(max_frame_bytes=MAX_FRAME_BYTES)
TOKEN = "a test token of this mesh, long enough"
SERVER_KEYS = NodeKey.fresh()
KEY = SERVER_KEYS.public


class RawLink:
    """A bare sealed link of a member's, for frames no meshnode part would send."""

    def __init__(self) -> None:
        self.stream: SealedStream | None = None
        self._received: asyncio.Queue[bytes] = asyncio.Queue()

    def take(self, stream: SealedStream, frame: bytes) -> None:
        self.stream = stream
        self._received.put_nowait(frame)

    def send(self, frame: bytes) -> None:
        assert self.stream is not None
        error = self.stream.send(frame)
        assert error is None, error

    async def receive(self) -> bytes:
        async with asyncio.timeout(5.0):
            return await self._received.get()


@contextlib.asynccontextmanager
async def serving(replicas: FakeReplicas, **limits: int) -> AsyncIterator[tuple[DataPlaneServer, str]]:
    """A data-plane server on 127.0.0.1 serving `replicas`, and its address."""
    server = DataPlaneServer(
        "127.0.0.1",
        0,
        serve_local=replicas.serve_local,
        submit_local=replicas.submit_local,
        queue_of=replicas.queue_of,
        max_frame_bytes=MAX_FRAME_BYTES,
        max_in_flight_per_peer=limits.get("max_in_flight_per_peer", 64),
        chunk_bytes=limits.get("chunk_bytes", 4096),
        keys=SERVER_KEYS,
        tokens=[TOKEN],
    )
    addr = f"127.0.0.1:{server.bind()}"
    try:
        yield server, addr
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def links_out(max_in_flight_per_peer: int = 64, idle_s: float = 60.0) -> AsyncIterator[PeerLinks]:
    links = PeerLinks(
        token=TOKEN,
        max_frame_bytes=MAX_FRAME_BYTES,
        max_in_flight_per_peer=max_in_flight_per_peer,
        connect_timeout_s=5.0,
        idle_s=idle_s,
    )
    try:
        yield links
    finally:
        links.close()


@contextlib.asynccontextmanager
async def raw_dealer(addr: str) -> AsyncIterator[RawLink]:
    """A bare sealed link to `addr`, dialed as a member."""
    raw = RawLink()
    host, port = addr.rsplit(":", 1)
    dialing = ClientHandshake(TOKEN, z85.decode(KEY))
    raw.stream = await connect(host, int(port), dialing, LIMITS, raw.take)
    try:
        yield raw
    finally:
        raw.stream.close()


def held_or_echoed(tag: str) -> FakeReplica:
    """A replica that holds requests whose id starts with ``hold`` and answers the others at once."""

    async def answer(call: Call) -> AsyncIterator[Envelope]:
        if call.request_id.startswith("hold"):
            await asyncio.Event().wait()
        yield Reply(call.request_id, {"tag": tag}, JSON)

    return FakeReplica(answer, capacity=64)


async def settled(condition: Callable[[], bool], turns: int = 100) -> bool:
    """Whether `condition` holds within a few turns of the event loop (the server signals no change)."""
    for _ in range(turns):
        if condition():
            return True
        await asyncio.sleep(0)  # one turn of the loop, never a wait on the clock
    return condition()


async def answer_to(dealer: RawLink) -> Envelope:
    return decode_envelope(await dealer.receive(), max_bytes=MAX_FRAME_BYTES)


# -- the server ------------------------------------------------------------------------------------


async def test_the_server_sends_a_large_file_as_chunk_frames_then_a_reply_with_the_last_piece() -> None:
    data = bytes(range(256)) * 40  # 10,240 bytes: two full frames of 4,096 and the rest
    replicas = FakeReplicas({"png": FakeReplica(replies(data, "image/png"))})
    async with serving(replicas, chunk_bytes=4096) as (_, addr), raw_dealer(addr) as dealer:
        dealer.send(encode_envelope(make_call("png", request_id="f-1")))
        frames = [await answer_to(dealer) for _ in range(3)]
        # A stream's answer is not a file to join: it leaves as it is.
        dealer.send(encode_envelope(make_call("png", request_id="f-2", stream=True)))
        streamed = await answer_to(dealer)

    assert frames == [
        Chunk("f-1", 0, data[:4096]),
        Chunk("f-1", 1, data[4096:8192]),
        Reply("f-1", data[8192:], "image/png", 0),
    ]
    assert streamed == Reply("f-2", data, "image/png", 0)


async def test_links_join_a_large_file_unless_it_is_a_bulk_transfer_which_takes_a_link_of_its_own() -> None:
    data = bytes(range(256)) * 40
    replicas = FakeReplicas({"png": FakeReplica(replies(data, "image/png"))})
    async with serving(replicas, chunk_bytes=4096) as (_, addr), links_out() as links:
        joined = [m async for m in links.call(PEER, addr, KEY, make_call("png", request_id="j-1"))]
        assert links.open_links() == {"serving": 1, "bulk": 0, "worker": 0}
        call = make_call("png", request_id="p-1", accept=ACCEPT_BULK)
        pieces = [m async for m in links.call(PEER, addr, KEY, call)]
        assert links.open_links() == {"serving": 1, "bulk": 1, "worker": 0}  # never behind serving traffic

    assert joined == [Reply("j-1", data, "image/png", 0)]
    assert pieces == [
        Chunk("p-1", 0, data[:4096]),
        Chunk("p-1", 1, data[4096:8192]),
        Reply("p-1", data[8192:], "image/png", 0),
    ]


async def test_the_server_refuses_a_peer_over_its_limit_as_full_and_serves_other_peers() -> None:
    replica = held_or_echoed("n1")
    replicas = FakeReplicas({"echo": replica})
    async with (
        serving(replicas, max_in_flight_per_peer=2) as (server, addr),
        links_out() as busy,
        links_out() as other,
    ):
        held = [busy.call(PEER, addr, KEY, make_call("echo", request_id=f"hold-{i}")) for i in range(2)]
        waiting = [asyncio.create_task(anext(messages)) for messages in held]
        await replica.until(lambda: replica.in_flight == 2)
        assert server.running == 2

        refused = [
            message async for message in busy.call(PEER, addr, KEY, make_call("echo", request_id="r-3"))
        ]
        served = [
            message async for message in other.call(PEER, addr, KEY, make_call("echo", request_id="r-4"))
        ]

        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        await replica.until(lambda: replica.in_flight == 0)

    [failure] = refused
    assert isinstance(failure, Failure)
    assert (failure.kind, failure.retryable) == ("overloaded", True)
    assert "already runs 2 requests for that peer" in failure.message
    assert served == [Reply("r-4", {"tag": "n1"}, JSON, 2)]  # its queue: the two held ones


async def test_the_server_refuses_a_request_id_already_running_for_that_peer_and_cancel_stops_it() -> None:
    replica = held_or_echoed("n1")
    async with serving(FakeReplicas({"echo": replica})) as (server, addr), raw_dealer(addr) as dealer:
        call = encode_envelope(make_call("echo", request_id="hold-1"))
        dealer.send(call)
        await replica.until(lambda: replica.running("hold-1"))
        dealer.send(call)
        conflict = await answer_to(dealer)
        dealer.send(encode_envelope(Cancel("hold-1")))
        await replica.until(lambda: replica.cancelled == ["hold-1"])
        assert await settled(lambda: server.running == 0)

    assert conflict == Failure("hold-1", "conflict", "request id already running", False)


async def test_a_peers_link_that_closes_stops_its_requests_those_submitted_and_those_streaming() -> None:
    replica = held_or_echoed("n1")
    async with serving(FakeReplicas({"echo": replica})) as (server, addr):
        async with raw_dealer(addr) as dealer:
            dealer.send(encode_envelope(make_call("echo", request_id="hold-last")))  # wants one answer
            dealer.send(encode_envelope(make_call("echo", request_id="hold-stream", stream=True)))
            await replica.until(lambda: replica.running("hold-last") and replica.running("hold-stream"))
            assert server.running == 2
        # The link closed: neither answer has anywhere to go.
        await replica.until(lambda: sorted(replica.cancelled) == ["hold-last", "hold-stream"])
        assert await settled(lambda: server.running == 0)
        async with raw_dealer(addr) as dealer:  # the peer's limit counts nothing of them any more
            dealer.send(encode_envelope(make_call("echo", request_id="after")))
            assert await answer_to(dealer) == Reply("after", {"tag": "n1"}, JSON, 0)


async def test_a_failure_answering_a_submitted_request_answers_it_as_internal_and_serving_goes_on() -> None:
    replicas = FakeReplicas({"echo": FakeReplica(echoes("n1"), capacity=64)})
    failing = {"queue": True}

    def queue_of(name: str) -> int:
        if failing["queue"]:
            raise RuntimeError("a bug while answering")
        return replicas.queue_of(name)

    server = DataPlaneServer(
        "127.0.0.1", 0, serve_local=replicas.serve_local, submit_local=replicas.submit_local,
        queue_of=queue_of, max_frame_bytes=MAX_FRAME_BYTES, max_in_flight_per_peer=64,
        chunk_bytes=4096, keys=SERVER_KEYS, tokens=[TOKEN],
    )  # fmt: skip
    addr = f"127.0.0.1:{server.bind()}"
    try:
        async with raw_dealer(addr) as dealer:
            dealer.send(encode_envelope(make_call("echo", request_id="b-1")))
            broken = await answer_to(dealer)
            failing["queue"] = False
            dealer.send(encode_envelope(make_call("echo", {"n": 2}, request_id="b-2")))
            fine = await answer_to(dealer)
    finally:
        await server.close()

    assert broken == Failure("b-1", "internal", "the serving node failed (see its log)", False)
    assert fine == Reply("b-2", {"tag": "n1", "body": {"n": 2}}, JSON, 0)
    assert server.running == 0


# -- the links -------------------------------------------------------------------------------------


async def test_the_links_drop_and_count_bad_frames_from_a_peer_and_still_take_the_answer() -> None:
    peer = RawLink()  # the peer a member would reach: the key gossip announced
    listener = SealedListener(ServerKeys(SERVER_KEYS.secret, [TOKEN]), LIMITS, peer.take)
    port = await listener.listen("127.0.0.1", 0)
    call = make_call("echo", request_id="g-1")
    try:
        async with links_out() as links:
            messages = links.call(PEER, f"127.0.0.1:{port}", KEY, call)
            first = asyncio.create_task(anext(messages))
            frame = await peer.receive()
            assert decode_envelope(frame, max_bytes=MAX_FRAME_BYTES) == call
            for garbage in (
                b"\xc1\xc1",  # not msgpack
                encode_envelope(call)[:-3],  # cut short
                encode_envelope(call),  # a request, where answers belong
                encode_envelope(Reply("nobody-waits", 1, JSON)),  # for no request of ours
            ):
                peer.send(garbage)
            peer.send(encode_envelope(Reply("g-1", "ok", JSON, 0)))
            answer = await first
            await messages.aclose()
            dropped = dict(links.dropped)
    finally:
        await listener.close()

    assert answer == Reply("g-1", "ok", JSON, 0)
    assert dropped == {"malformed": 2, "unexpected": 1}  # an answer nobody waits for is no fault


async def test_a_peer_that_moved_to_another_address_is_reached_there() -> None:
    old = FakeReplicas({"echo": FakeReplica(echoes("old"))})
    new = FakeReplicas({"echo": FakeReplica(echoes("new"))})
    async with serving(old) as (_, old_addr), serving(new) as (_, new_addr), links_out() as links:
        before = [m async for m in links.call(PEER, old_addr, KEY, make_call("echo"))]
        after = [m async for m in links.call(PEER, new_addr, KEY, make_call("echo"))]

    assert [message.data["tag"] for message in before + after] == ["old", "new"]  # type: ignore[union-attr]


async def test_a_link_no_call_held_for_idle_s_is_closed_and_the_next_call_opens_it_again() -> None:
    gate = asyncio.Event()
    held = FakeReplicas({"held": FakeReplica(gated(gate, replies({"ok": True})))})
    other = FakeReplicas({"echo": FakeReplica(echoes("other"))})
    other_peer = peer_id("n2")
    async with (
        serving(held) as (_, held_addr),
        serving(other) as (_, other_addr),
        links_out(idle_s=1.0) as links,
    ):
        first = [m async for m in links.call(other_peer, other_addr, KEY, make_call("echo"))]
        holding = asyncio.create_task(_answers(links.call(PEER, held_addr, KEY, make_call("held"))))
        await eventually(lambda: len(held["held"].calls) == 1)
        assert links.open_links() == {"serving": 2, "bulk": 0, "worker": 0}

        # The idle one goes; the one a call holds stays, however long the call takes.
        await eventually(lambda: links.open_links()["serving"] == 1)
        gate.set()
        assert await holding == [Reply(held["held"].calls[0].request_id, {"ok": True}, JSON, 0)]
        await eventually(lambda: links.open_links()["serving"] == 0)  # idle once answered

        again = [m async for m in links.call(other_peer, other_addr, KEY, make_call("echo"))]
        assert links.open_links() == {"serving": 1, "bulk": 0, "worker": 0}

    assert [message.data["tag"] for message in first + again] == ["other", "other"]  # type: ignore[union-attr]


async def _answers(messages: AsyncIterator[Envelope]) -> list[Envelope]:
    return [message async for message in messages]


async def test_a_peer_that_left_answers_what_it_was_running_and_is_sent_nothing_new() -> None:
    gate = asyncio.Event()
    held = FakeReplicas({"held": FakeReplica(gated(gate, replies({"ok": True})))})
    async with serving(held) as (_, addr), links_out() as links:
        running = asyncio.create_task(links.final(PEER, addr, KEY, make_call("held", request_id="r-1")))
        await eventually(lambda: len(held["held"].calls) == 1)
        links.retire(PEER)  # it left the mesh, and drains
        refused = await links.final(PEER, addr, KEY, make_call("held"))
        gate.set()
        answered = await running
        await eventually(lambda: links.open_links() == {"serving": 0, "bulk": 0, "worker": 0})

    assert answered == Reply("r-1", {"ok": True}, JSON, 0)
    assert isinstance(refused, Failure) and refused.kind == "peer_unreachable" and refused.retryable
    assert "left the mesh" in refused.message
    assert len(held["held"].calls) == 1


async def test_a_peer_that_left_and_then_went_away_fails_what_it_had_not_answered_as_retryable() -> None:
    gate = asyncio.Event()
    held = FakeReplicas({"held": FakeReplica(gated(gate, replies({"ok": True})))})
    async with links_out() as links:
        async with serving(held) as (_, addr):
            running = asyncio.create_task(links.final(PEER, addr, KEY, make_call("held")))
            await eventually(lambda: len(held["held"].calls) == 1)
            links.retire(PEER)
        lost = await running  # the server closed: the peer is gone before answering
        await eventually(lambda: links.open_links()["serving"] == 0)  # and never redialed

    assert isinstance(lost, Failure) and lost.kind == "peer_lost" and lost.retryable
    assert "left the mesh" in lost.message
