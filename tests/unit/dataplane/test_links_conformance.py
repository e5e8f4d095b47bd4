"""One contract, two implementations: ``FakeLinks`` and the real ``PeerLinks`` + ``DataPlaneServer``.

Each test plays one scenario of the data plane's contract (``node/dataplane/links.py``'s docstring)
and checks one expected outcome on both sides:

- ``fake``: ``meshnode.testing.FakeLinks``, the peer's replicas served in this process;
- ``real``: ``PeerLinks`` talking ZeroMQ over 127.0.0.1 to a ``DataPlaneServer`` in this event
  loop, whose ``serve_local`` and ``queue_of`` are the same fake replicas.

If the fake drifts from the real pair (envelope fields, the queue an answer reports, joining files,
cancelling, limits, deadlines), the same assertion fails on one side only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol

import pytest

from meshnode.dataplane.forward import Links
from meshnode.dataplane.links import PeerLinks
from meshnode.dataplane.server import DataPlaneServer
from meshnode.errors import DeadlineExceeded
from meshnode.mesh.envelope import Call, Chunk, Envelope, Failure, Reply
from meshnode.testing import (
    JSON,
    STREAM,
    FakeLinks,
    FakeReplica,
    FakeReplicas,
    echoes,
    fails,
    hangs,
    make_call,
    peer_id,
    replies,
    streams,
)
from meshnode.trust.sealed import NodeKey

PEER = peer_id("n1")
MAX_FRAME_BYTES = 1 << 20
LINK_LIMIT = 2  # requests outstanding per peer before the links refuse (max_in_flight_per_peer)
CHUNK_BYTES = 4096  # the real server splits larger files into frames of this size
TOKEN = "a test token of this mesh, long enough"


class Side(Protocol):
    """Links to one peer, `PEER` at `addr`, whose replicas are `replicas`."""

    links: Links
    addr: str
    key: str  # the peer's data-plane key, as gossip would announce it
    replicas: FakeReplicas

    async def call_unreachable(self, call: Call) -> list[Envelope]:
        """Send `call` to a peer nobody serves."""
        ...

    async def vanish(self) -> None:
        """The peer goes away without a word (killed, or its cable cut)."""
        ...

    def forget(self, reason: str) -> None:
        """The failure detector declared the peer dead: the links forget it."""
        ...


class FakeSide:
    def __init__(self, replicas: FakeReplicas) -> None:
        self.replicas = replicas
        self.addr = "n1.invalid:9"
        self.key = NodeKey.fresh().public
        self.fake = FakeLinks({PEER: replicas}, max_in_flight_per_peer=LINK_LIMIT)
        self.links: Links = self.fake

    async def call_unreachable(self, call: Call) -> list[Envelope]:
        return [
            message async for message in self.fake.call(peer_id("nobody"), "nobody.invalid:9", self.key, call)
        ]

    async def vanish(self) -> None:
        self.fake.drop(PEER)

    def forget(self, reason: str) -> None:
        self.fake.forget(PEER, reason)

    async def close(self) -> None:
        self.fake.close()


class RealSide:
    def __init__(self, replicas: FakeReplicas) -> None:
        self.replicas = replicas
        self.server = DataPlaneServer(
            "127.0.0.1",
            0,
            serve_local=replicas.serve_local,
            submit_local=replicas.submit_local,
            queue_of=replicas.queue_of,
            max_frame_bytes=MAX_FRAME_BYTES,
            max_in_flight_per_peer=64,
            chunk_bytes=CHUNK_BYTES,
            keys=NodeKey.fresh(),
            tokens=[TOKEN],
        )
        self.addr = f"127.0.0.1:{self.server.bind()}"
        self.key = self.server.public_key
        self.peer_links = PeerLinks(
            token=TOKEN,
            max_frame_bytes=MAX_FRAME_BYTES,
            max_in_flight_per_peer=LINK_LIMIT,
            connect_timeout_s=5.0,
            idle_s=60.0,
        )
        self.links: Links = self.peer_links
        self._server_closed = False

    async def call_unreachable(self, call: Call) -> list[Envelope]:
        links = PeerLinks(
            token=TOKEN,
            max_frame_bytes=MAX_FRAME_BYTES,
            max_in_flight_per_peer=4,
            connect_timeout_s=0.2,
            idle_s=60.0,
        )
        try:  # nothing listens on port 1
            return [message async for message in links.call(peer_id("nobody"), "127.0.0.1:1", self.key, call)]
        finally:
            links.close()

    async def vanish(self) -> None:
        self._server_closed = True
        await self.server.close()

    def forget(self, reason: str) -> None:
        self.peer_links.forget(PEER, reason)

    async def close(self) -> None:
        self.peer_links.close()
        if not self._server_closed:
            await self.server.close()


@pytest.fixture(params=["fake", "real"])
async def side(request: pytest.FixtureRequest) -> AsyncIterator[FakeSide | RealSide]:
    replicas = FakeReplicas({"echo": FakeReplica(echoes("n1"), capacity=8)})
    made = FakeSide(replicas) if request.param == "fake" else RealSide(replicas)
    try:
        yield made
    finally:
        await made.close()


async def transcript(side: Side, call: Call) -> list[Envelope]:
    return [message async for message in side.links.call(PEER, side.addr, side.key, call)]


async def test_a_request_gets_its_answer_with_the_replicas_other_requests(side: Side) -> None:
    call = make_call("echo", {"x": [1, 2]}, request_id="r-1")

    assert await transcript(side, call) == [Reply("r-1", {"tag": "n1", "body": {"x": [1, 2]}}, JSON, 0)]
    assert side.links.in_flight() == {}
    assert side.replicas["echo"].calls == [call]


async def test_a_stream_arrives_chunk_by_chunk_as_the_replica_produces_it(side: Side) -> None:
    gate = asyncio.Event()

    async def two_parts(call: Call) -> AsyncIterator[Envelope]:
        yield Chunk(call.request_id, 0, {"i": 0})
        await gate.wait()
        yield Chunk(call.request_id, 1, {"i": 1})
        yield Reply(call.request_id, None, STREAM)

    side.replicas["echo"].answer = two_parts
    messages = side.links.call(PEER, side.addr, side.key, make_call("echo", request_id="s-1", stream=True))

    assert await anext(messages) == Chunk("s-1", 0, {"i": 0})  # before the replica went on
    gate.set()
    assert [message async for message in messages] == [
        Chunk("s-1", 1, {"i": 1}),
        Reply("s-1", None, STREAM, 0),
    ]


async def test_a_large_file_arrives_whole(side: Side) -> None:
    """Split into frames on the wire and joined again, with the replica's queue still on it."""
    image = bytes(range(256)) * 400  # 100 KB: 25 frames on the real data plane
    side.replicas["echo"].answer = replies(image, "image/png")
    answer = await transcript(side, make_call("echo", request_id="f-1"))

    assert answer == [Reply("f-1", image, "image/png", 0)]


async def test_a_stream_of_bytes_keeps_its_chunks(side: Side) -> None:
    side.replicas["echo"].answer = streams(b"ab", b"cd")

    assert await transcript(side, make_call("echo", request_id="b-1", stream=True)) == [
        Chunk("b-1", 0, b"ab"),
        Chunk("b-1", 1, b"cd"),
        Reply("b-1", None, STREAM, 0),
    ]


async def test_refusals_and_failures_of_the_serving_side_come_back_as_failures(side: Side) -> None:
    replica = side.replicas["echo"]
    missing = await transcript(side, make_call("other", request_id="m-1"))
    replica.answer = fails("predictor", "bad input", retryable=False)
    failed = await transcript(side, make_call("echo", request_id="p-1"))

    async def crashes(call: Call) -> AsyncIterator[Envelope]:
        raise RuntimeError("a bug in the serving node")
        yield  # pragma: no cover

    replica.answer = crashes
    crashed = await transcript(side, make_call("echo", request_id="c-1"))

    assert missing == [Failure("m-1", "not_ready", "no replica of other here", True, 0)]
    assert failed == [Failure("p-1", "predictor", "bad input", False, 0)]
    assert crashed == [Failure("c-1", "internal", "the serving node failed (see its log)", False, 0)]


async def test_a_caller_that_stops_early_cancels_the_work_on_the_peer(side: Side) -> None:
    async def one_chunk_then_forever(call: Call) -> AsyncIterator[Envelope]:
        yield Chunk(call.request_id, 0, "first")
        await asyncio.Event().wait()
        yield Reply(call.request_id, None, STREAM)

    replica = side.replicas["echo"]
    replica.answer = one_chunk_then_forever
    messages = side.links.call(PEER, side.addr, side.key, make_call("echo", request_id="x-1", stream=True))
    assert await anext(messages) == Chunk("x-1", 0, "first")

    await messages.aclose()

    await replica.until(lambda: replica.cancelled == ["x-1"])
    assert side.links.in_flight() == {} and replica.in_flight == 0


async def test_past_its_deadline_a_call_raises_and_the_work_on_the_peer_stops(side: Side) -> None:
    replica = side.replicas["echo"]
    replica.answer = hangs()

    with pytest.raises(DeadlineExceeded):
        await transcript(side, make_call("echo", request_id="d-1", timeout_ms=100))

    await replica.until(lambda: replica.cancelled == ["d-1"])
    assert side.links.in_flight() == {}


async def test_too_many_requests_outstanding_at_a_peer_are_refused_before_sending(side: Side) -> None:
    replica = side.replicas["echo"]
    replica.answer = hangs()
    held = [side.links.call(PEER, side.addr, side.key, make_call("echo")) for _ in range(LINK_LIMIT)]
    waiting = [asyncio.create_task(anext(messages)) for messages in held]
    await replica.until(lambda: replica.in_flight == LINK_LIMIT)

    [refusal] = await transcript(side, make_call("echo", request_id="o-1"))

    assert isinstance(refusal, Failure)
    assert (refusal.kind, refusal.retryable) == ("peer_unreachable", True)
    assert f"{LINK_LIMIT} requests already outstanding" in refusal.message
    assert side.links.in_flight() == {PEER: LINK_LIMIT}
    assert len(replica.calls) == LINK_LIMIT  # the refused one never reached the peer
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    await replica.until(lambda: replica.in_flight == 0)


async def test_a_peers_answer_reports_the_requests_of_other_routers(side: Side) -> None:
    async def others_wait(call: Call) -> AsyncIterator[Envelope]:
        if call.request_id != "q-1":
            await asyncio.Event().wait()
        yield Reply(call.request_id, "done", JSON)

    replica = side.replicas["echo"]
    replica.answer = others_wait
    # Two requests of other routers run there, and one more of ours.
    others = [replica.call(make_call("echo", request_id=f"other-{i}")) for i in range(2)]
    ours = side.links.call(PEER, side.addr, side.key, make_call("echo", request_id="ours-1"))
    waiting = [asyncio.create_task(anext(messages)) for messages in [*others, ours]]
    await replica.until(lambda: replica.in_flight == 3)

    # The replica had 3 others; one of them was ours, so other routers hold 2.
    assert await transcript(side, make_call("echo", request_id="q-1")) == [Reply("q-1", "done", JSON, 3)]
    now = asyncio.get_running_loop().time()
    assert side.links.reported_queue(PEER, "echo", now, 5.0) == 2
    assert side.links.reported_queue(PEER, "echo", now + 10.0, 5.0) is None  # too old to believe
    assert side.links.reported_queue(PEER, "other", now, 5.0) is None  # never heard
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


async def test_a_peer_nobody_serves_is_refused_as_retryable(side: Side) -> None:
    [refusal] = await side.call_unreachable(make_call("echo", request_id="u-1"))

    assert isinstance(refusal, Failure)
    assert (refusal.request_id, refusal.kind, refusal.retryable) == ("u-1", "peer_unreachable", True)


async def test_a_peer_that_vanishes_fails_what_was_outstanding_there_as_retryable(side: Side) -> None:
    replica = side.replicas["echo"]
    replica.answer = hangs()
    messages = side.links.call(PEER, side.addr, side.key, make_call("echo", request_id="v-1"))
    waiting = asyncio.create_task(anext(messages))
    await replica.until(lambda: replica.running("v-1"))

    await side.vanish()

    assert await waiting == Failure("v-1", "peer_lost", f"the connection to {side.addr} dropped", True)
    await replica.until(lambda: replica.cancelled == ["v-1"])  # its work stopped with it
    await messages.aclose()
    assert side.links.in_flight() == {}


async def test_forgetting_a_peer_fails_its_outstanding_requests_as_retryable_and_its_reports(
    side: Side,
) -> None:
    replica = side.replicas["echo"]
    assert len(await transcript(side, make_call("echo"))) == 1
    now = asyncio.get_running_loop().time()
    assert side.links.reported_queue(PEER, "echo", now, 5.0) == 0
    replica.answer = hangs()
    messages = side.links.call(PEER, side.addr, side.key, make_call("echo", request_id="h-1"))
    waiting = asyncio.create_task(anext(messages))
    await replica.until(lambda: replica.running("h-1"))

    side.forget("n1 is dead")

    assert side.links.in_flight() == {}
    assert await waiting == Failure("h-1", "peer_lost", "n1 is dead; the request may run elsewhere", True)
    assert side.links.reported_queue(PEER, "echo", now, 5.0) is None
    await messages.aclose()


# -- a call that wants only its last answer (``final``): no stream, the same contract --------------


async def last(side: Side, call: Call) -> Envelope:
    return await side.links.final(PEER, side.addr, side.key, call)


async def test_the_last_answer_comes_alone_with_the_replicas_other_requests_on_a_new_link_or_an_open_one(
    side: Side,
) -> None:
    image = bytes(range(256)) * 400  # 100 KB: 25 frames on the real data plane, joined again

    first = await last(side, make_call("echo", {"x": 1}, request_id="l-1"))  # the link is made for it
    again = await last(side, make_call("echo", {"x": 2}, request_id="l-2"))  # the link is open
    side.replicas["echo"].answer = replies(image, "image/png")
    file = await last(side, make_call("echo", request_id="l-3"))

    assert first == Reply("l-1", {"tag": "n1", "body": {"x": 1}}, JSON, 0)
    assert again == Reply("l-2", {"tag": "n1", "body": {"x": 2}}, JSON, 0)
    assert file == Reply("l-3", image, "image/png", 0)
    assert side.links.in_flight() == {}


async def test_past_its_deadline_the_last_answer_raises_and_the_work_on_the_peer_stops(side: Side) -> None:
    await last(side, make_call("echo"))  # the link is open
    replica = side.replicas["echo"]
    replica.answer = hangs()

    with pytest.raises(DeadlineExceeded):
        await last(side, make_call("echo", request_id="d-2", timeout_ms=100))

    await replica.until(lambda: replica.cancelled == ["d-2"])
    assert side.links.in_flight() == {}


async def awaited_on_an_open_link(side: Side, rid: str) -> tuple[FakeReplica, asyncio.Task[Envelope]]:
    """A last answer awaited (in a task) for request `rid`, which the replica holds, on an open link."""
    await last(side, make_call("echo"))
    replica = side.replicas["echo"]
    replica.answer = hangs()
    waiting = asyncio.create_task(last(side, make_call("echo", request_id=rid)))
    await replica.until(lambda: replica.running(rid))
    return replica, waiting


async def test_a_caller_that_stops_waiting_for_the_last_answer_cancels_the_work_on_the_peer(
    side: Side,
) -> None:
    replica, waiting = await awaited_on_an_open_link(side, "x-2")

    waiting.cancel()

    await replica.until(lambda: replica.cancelled == ["x-2"])
    assert side.links.in_flight() == {}


async def test_a_peer_that_vanishes_ends_a_last_answer_awaited_there_as_a_retryable_failure(
    side: Side,
) -> None:
    replica, waiting = await awaited_on_an_open_link(side, "v-2")

    await side.vanish()

    assert await waiting == Failure("v-2", "peer_lost", f"the connection to {side.addr} dropped", True)
    await replica.until(lambda: replica.cancelled == ["v-2"])
    assert side.links.in_flight() == {}
