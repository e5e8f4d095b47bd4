"""Worker lanes: a peer's link handed to the worker of a replica, which answers its calls itself.

Everything real but the worker's core: ``PeerLinks`` dials the real ``DataPlaneServer`` on
127.0.0.1, which hands the link over a real ``SOCK_SEQPACKET`` pair (``HandedLinks``, the agent's
end) to a real ``WorkerLinks`` (the worker's end) in this same loop; a small fake core answers
its calls. The whole path, with real agents and workers, is in
``tests/integration/dataplane/test_worker_lanes.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from meshnode.dataplane.links import PeerLinks
from meshnode.dataplane.sealed_stream import SealedStream
from meshnode.dataplane.server import DataPlaneServer
from meshnode.errors import DeadlineExceeded
from meshnode.load import SpeedMeter
from meshnode.mesh.envelope import Call, Cancel, Envelope, Failure, Reply, decode_envelope, encode_envelope
from meshnode.mesh.worker_link import ask_for_worker, is_bound
from meshnode.serving.handed_links import HandedLinks
from meshnode.serving.worker_links import WorkerLinks
from meshnode.testing import JSON, FakeReplica, FakeReplicas, echoes, make_call
from meshnode.trust.sealed import NodeKey

from ..loop_turns import eventually
from .test_links_server import KEY, MAX_FRAME_BYTES, PEER, links_out, raw_dealer, serving


class FakeCore:
    """A worker's core: echoes each call with the tag ``worker``, or holds it when its body says so."""

    def __init__(self) -> None:
        self.links: WorkerLinks | None = None
        self.calls: list[Call] = []
        self.cancels: list[str] = []
        self.held: dict[str, Call] = {}
        self.to_agent: list[Envelope] = []

    def handle(self, message: Envelope) -> None:
        assert self.links is not None
        match message:
            case Call(rid, _, body):
                self.calls.append(message)
                if body.get("hold"):
                    self.held[rid] = message
                elif "file_bytes" in body:
                    self.links.send(Reply(rid, b"x" * body["file_bytes"], "image/png"))
                else:
                    self.links.send(Reply(rid, {"tag": "worker", "body": body}, JSON))
            case Cancel(rid):
                self.cancels.append(rid)
                if self.held.pop(rid, None) is not None:
                    self.links.send(Failure(rid, "cancelled", "cancelled by the caller", False))

    def release(self) -> None:
        assert self.links is not None
        for rid, call in list(self.held.items()):
            del self.held[rid]
            self.links.send(Reply(rid, {"tag": "worker", "body": call.body}, JSON))


class Node:
    """A serving node whose echo replica's worker takes links: the server, both ends of the handoff."""

    def __init__(
        self, server: DataPlaneServer, addr: str, handed: HandedLinks, core: FakeCore, speed: SpeedMeter
    ) -> None:
        self.server, self.addr, self.handed, self.core, self.speed = server, addr, handed, core, speed


@contextlib.asynccontextmanager
async def node(
    *, capacity: int = 8, slots: int = 1, hands: bool = True, **limits: int
) -> AsyncIterator[Node]:
    agent_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    speed = SpeedMeter()
    handed = HandedLinks(agent_end, speed, "echo")
    core = FakeCore()
    worker = WorkerLinks(worker_end, core.handle, core.to_agent.append, MAX_FRAME_BYTES)
    core.links = worker
    handed.start()
    worker.start()
    replicas = FakeReplicas({"echo": FakeReplica(echoes("agent"))})

    def hand_local(deployment: str, stream: SealedStream, max_in_flight: int, chunk_bytes: int) -> str | None:
        if deployment != "echo":
            return f"no replica of {deployment} here"
        limits = {"capacity": capacity, "slots": slots, "max_in_flight": max_in_flight}
        handed.hand(stream, **limits, chunk_bytes=chunk_bytes)
        return None

    try:
        async with serving(replicas, **limits) as (server, addr):
            server.hand_local = hand_local if hands else None
            yield Node(server, addr, handed, core, speed)
    finally:
        worker.close()
        handed.close()


async def final(links: PeerLinks, at: Node, body: dict[str, Any] | None = None, **call: Any) -> Envelope:
    return await links.final(PEER, at.addr, KEY, make_call("echo", body, **call))


async def lane_open(links: PeerLinks, at: Node) -> None:
    """Call until a call was answered by the worker: the lane is asked for by the first."""
    async with asyncio.timeout(10.0):
        while True:
            answer = await final(links, at)
            assert isinstance(answer, Reply)
            if answer.data["tag"] == "worker":  # type: ignore[index]
                return
            await asyncio.sleep(0.005)


def tag(answer: Envelope) -> str:
    assert isinstance(answer, Reply), answer
    return str(answer.data["tag"])  # type: ignore[index]


async def test_unary_calls_reach_the_worker_over_its_lane_once_the_peer_handed_it_over() -> None:
    async with node() as at, links_out() as links:
        first = await final(links, at)
        await lane_open(links, at)
        after = [await final(links, at, {"n": n}) for n in range(5)]
        assert at.server.handed == 1
        assert links.open_links()["worker"] == 1

    assert tag(first) == "agent"  # nothing waits for the lane: it is asked for meanwhile
    assert [tag(answer) for answer in after] == ["worker"] * 5
    assert [answer.data["body"] for answer in after] == [{"n": n} for n in range(5)]  # type: ignore[union-attr]
    assert all(answer.queue == 0 for answer in after)  # type: ignore[union-attr]


async def test_a_peer_that_hands_no_links_declines_and_is_not_asked_again_for_a_while() -> None:
    async with node(hands=False) as at, links_out() as links:
        answers = [await final(links, at) for _ in range(3)]
        await eventually(lambda: links.open_links()["worker"] == 0)
        more = [await final(links, at) for _ in range(5)]
        lanes_after = links.open_links()["worker"]

    assert [tag(answer) for answer in answers + more] == ["agent"] * 8
    assert lanes_after == 0
    assert at.server.handed == 0


async def test_a_lane_to_a_deployment_with_no_replica_there_is_declined() -> None:
    async with node() as at, links_out() as links:
        answer = await links.final(PEER, at.addr, KEY, make_call("missing"))
        await eventually(lambda: links.open_links()["worker"] == 0)

    assert isinstance(answer, Failure) and answer.retryable  # from the agent: no such replica
    assert at.server.handed == 0


async def test_the_worker_refuses_calls_past_its_capacity_as_overloaded_and_retryable() -> None:
    async with node(capacity=1) as at, links_out() as links:
        await lane_open(links, at)
        holding = asyncio.create_task(final(links, at, {"hold": True}))
        await eventually(lambda: len(at.core.held) == 1)
        refused = await final(links, at)
        at.core.release()
        answered = await holding

    assert isinstance(refused, Failure) and refused.kind == "overloaded" and refused.retryable
    assert "capacity 1" in refused.message
    assert tag(answered) == "worker"


async def test_a_request_id_already_held_is_refused_as_a_conflict() -> None:
    async with node() as at, links_out() as links:
        await lane_open(links, at)
        holding = asyncio.create_task(final(links, at, {"hold": True}, request_id="same"))
        await eventually(lambda: "same" in at.core.held)
        # Another router's request with the same id, on a lane of its own.
        async with links_out() as other:
            await lane_open(other, at)
            clash = await final(other, at, request_id="same")
        at.core.release()
        await holding

    assert isinstance(clash, Failure) and clash.kind == "conflict"


async def test_a_call_past_its_deadline_is_cancelled_in_the_worker() -> None:
    async with node() as at, links_out() as links:
        await lane_open(links, at)
        with pytest.raises(DeadlineExceeded):
            await final(links, at, {"hold": True}, request_id="slow", timeout_ms=200)
        await eventually(lambda: "slow" in at.core.cancels)
        await eventually(lambda: at.handed.in_flight == 0)


async def test_a_lane_that_drops_fails_its_calls_as_retryable_and_the_next_call_asks_anew() -> None:
    async with node() as at, links_out() as links:
        await lane_open(links, at)
        holding = asyncio.create_task(final(links, at, {"hold": True}, request_id="held"))
        await eventually(lambda: "held" in at.core.held)
        assert at.core.links is not None
        at.core.links.close()  # as a worker that exits: its links close
        lost = await holding
        await eventually(lambda: "held" in at.core.cancels)  # the core is told, as for any closed link
        after = await final(links, at)

    assert isinstance(lost, Failure) and lost.kind == "peer_lost" and lost.retryable
    assert tag(after) == "agent"  # the worker is gone: its handoff socket too, so it is declined


async def test_the_agent_hears_of_the_calls_on_handed_links() -> None:
    async with node() as at, links_out() as links:
        await lane_open(links, at)
        holding = asyncio.create_task(final(links, at, {"hold": True}, timeout_ms=30_000))
        await eventually(lambda: at.handed.in_flight == 1)
        loop = asyncio.get_running_loop()
        assert at.handed.oldest_deadline is not None
        assert loop.time() + 25 < at.handed.oldest_deadline < loop.time() + 31
        at.core.release()
        await holding
        await eventually(lambda: at.handed.in_flight == 0)

    assert at.speed.service_s is not None  # the worker's answers count in the replica's speed
    assert at.handed.oldest_deadline is None


async def test_draining_refuses_new_calls_and_closes_each_lane_once_its_calls_are_answered() -> None:
    async with node() as at, links_out() as links:
        await lane_open(links, at)
        holding = asyncio.create_task(final(links, at, {"hold": True}))
        await eventually(lambda: len(at.core.held) == 1)
        at.handed.drain()
        await eventually(lambda: at.core.links is not None and at.core.links.draining)
        refused = await final(links, at)
        at.core.release()
        answered = await holding
        await eventually(lambda: links.open_links()["worker"] == 0)
        after = await final(links, at)

    assert isinstance(refused, Failure) and refused.kind == "not_ready" and refused.retryable
    assert tag(answered) == "worker"
    assert tag(after) == "agent"


async def test_a_file_answer_over_the_chunk_size_comes_back_whole() -> None:
    async with node(chunk_bytes=4096) as at, links_out() as links:
        await lane_open(links, at)
        answer = await final(links, at, {"file_bytes": 10_000})

    assert isinstance(answer, Reply) and answer.data == b"x" * 10_000


async def test_a_frame_on_a_handed_link_that_is_not_a_request_closes_it() -> None:
    async with node() as at, raw_dealer(at.addr) as raw:
        raw.send(encode_envelope(ask_for_worker("echo")))
        assert is_bound(decode_envelope(await raw.receive(), max_bytes=MAX_FRAME_BYTES))
        raw.send(encode_envelope(Reply("nobody-asked", {"x": 1}, JSON)))
        stream = raw.stream
        assert stream is not None
        await eventually(lambda: stream.closed)


async def test_only_a_links_first_frame_may_ask_for_a_worker() -> None:
    async with node() as at, raw_dealer(at.addr) as raw:
        raw.send(encode_envelope(make_call("echo", request_id="first")))
        first = decode_envelope(await raw.receive(), max_bytes=MAX_FRAME_BYTES)
        raw.send(encode_envelope(ask_for_worker("echo")))
        raw.send(encode_envelope(make_call("echo", request_id="second")))
        second = decode_envelope(await raw.receive(), max_bytes=MAX_FRAME_BYTES)

    assert tag(first) == "agent" and tag(second) == "agent"
    assert at.server.handed == 0
    assert at.server.dropped == {"unexpected": 1}


async def test_frames_read_together_with_the_request_for_a_worker_go_to_the_worker() -> None:
    async with node() as at, raw_dealer(at.addr) as raw:
        # One turn of the loop: one write, so the serving node reads the three in one piece.
        raw.send(encode_envelope(ask_for_worker("echo")))
        raw.send(b"")  # a heartbeat, sealed like any frame
        raw.send(encode_envelope(make_call("echo", {"n": 1}, request_id="early")))
        bound = decode_envelope(await raw.receive(), max_bytes=MAX_FRAME_BYTES)
        answer = decode_envelope(await raw.receive(), max_bytes=MAX_FRAME_BYTES)

    assert is_bound(bound)
    assert isinstance(answer, Reply) and answer.request_id == "early" and tag(answer) == "worker"
    assert at.server.handed == 1


async def test_the_calls_on_a_lane_to_a_peer_that_restarted_fail_over_at_once() -> None:
    async with node() as at, links_out() as links:
        await lane_open(links, at)
        holding = asyncio.create_task(final(links, at, {"hold": True}, timeout_ms=30_000))
        await eventually(lambda: len(at.core.held) == 1)
        restarted = NodeKey.fresh().public  # gossip announces another key: the peer restarted
        refused = await links.final(PEER, at.addr, restarted, make_call("echo", timeout_ms=2_000))
        lost = await asyncio.wait_for(holding, 5.0)  # not its 30 s deadline

    assert isinstance(lost, Failure) and lost.kind == "peer_lost" and lost.retryable
    assert isinstance(refused, Failure) and refused.retryable  # no handshake with the old key's holder
