"""``JobPeers``: a job message to one member, its call closed as soon as it is answered."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable

from meshnode.mesh.envelope import Call, Envelope, Reply
from meshnode.mesh.member import Member
from meshnode.mesh.metadata import NodeMeta
from meshnode.mesh.types import Address, NodeId, Status
from meshnode.serving.job_peers import JobPeers

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
