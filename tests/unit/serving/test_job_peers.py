"""``JobPeers``: a job message to one member, its call closed as soon as it is answered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterable

from meshnode.mesh.envelope import Call, Envelope, Failure, Reply
from meshnode.mesh.member import Member
from meshnode.mesh.metadata import NodeMeta
from meshnode.mesh.types import Address, NodeId, Status
from meshnode.serving.job_peers import ASK_AT_ONCE, JobPeers

PEER = NodeId("peer")


class View:
    def members(self) -> Iterable[Member]:
        meta = NodeMeta(name="peer", data="127.0.0.1:1", data_key="k" * 40)
        return [Member(PEER, Address("127.0.0.1:2"), 0, Status.ALIVE, 1, meta, since=0.0)]

    def member(self, node: NodeId) -> Member | None:
        return next((member for member in self.members() if member.node == node), None)


async def test_a_call_is_closed_when_ask_returns_not_when_it_is_collected() -> None:
    """The link counts a request outstanding until its call ends (routing reads those counts): a
    call left to the garbage collector would stay counted until it is collected."""
    closed: list[str] = []

    async def call_peer(node: NodeId, addr: str, key: str, call: Call) -> AsyncGenerator[Envelope, None]:
        try:
            yield Reply(call.request_id, {"records": []}, "application/json")
            yield Reply(call.request_id, {"never": "read"}, "application/json")
        finally:
            closed.append(call.request_id)

    peers = JobPeers(View(), call_peer)
    assert await peers.ask(PEER, {"op": "sync"}) == {"records": []}
    assert len(closed) == 1  # at once, not when the generator is collected


class Many:
    """A view of `count` live peers, each with a data plane."""

    roster_version = 1

    def __init__(self, count: int) -> None:
        self.rows = {
            node: Member(
                node,
                Address(f"10.0.0.{i}:2"),
                0,
                Status.ALIVE,
                1,
                NodeMeta(name=node, data="x:1", data_key="k" * 40),
                since=0.0,
            )
            for i, node in enumerate(NodeId(f"n{i:03d}") for i in range(count))
        }

    def members(self) -> Iterable[Member]:
        return self.rows.values()

    def member(self, node: NodeId) -> Member | None:
        return self.rows.get(node)


async def test_a_question_to_many_nodes_keeps_at_most_ask_at_once_in_flight_and_answers_in_order() -> None:
    """A listing asks every live node: at a thousand members, a thousand calls in one turn would open
    a thousand links at once."""
    in_flight, most = 0, 0

    async def call_peer(node: NodeId, addr: str, key: str, call: Call) -> AsyncGenerator[Envelope, None]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            for _ in range(3):
                await asyncio.sleep(0)  # the answer takes a few turns of the loop
            if node.endswith("7"):
                yield Failure(call.request_id, "unavailable", "busy", True)
            else:
                yield Reply(call.request_id, {"from": node}, "application/json")
        finally:
            in_flight -= 1

    view = Many(300)
    nodes = list(view.rows)
    answers = await JobPeers(view, call_peer).ask_each(nodes, {"op": "list"})
    assert most == ASK_AT_ONCE and in_flight == 0
    assert answers == [None if node.endswith("7") else {"from": node} for node in nodes]
    assert await JobPeers(view, call_peer).ask_each([], {"op": "list"}) == []
