"""``PullPeers.ask``: a model message to one member, its call closed as soon as it is answered."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest

from meshnode.mesh.envelope import Call, Chunk, Envelope, Reply
from meshnode.mesh.types import NodeId
from meshnode.models.pull_peers import PullPeers
from tests.unit.serving.test_job_peers import PEER, View


@pytest.mark.parametrize("bulk", [False, True])
async def test_a_call_is_closed_when_ask_returns_not_when_it_is_collected(bulk: bool) -> None:
    """The link counts a request outstanding until its call ends (routing reads those counts): a
    call left to the garbage collector would stay counted until it is collected."""
    closed: list[str] = []

    async def call_peer(node: NodeId, addr: str, key: str, call: Call) -> AsyncGenerator[Envelope, None]:
        try:
            yield Chunk(call.request_id, 0, b"first piece")
            yield Reply(call.request_id, b"last piece", "application/octet-stream")
            yield Reply(call.request_id, b"never read", "application/octet-stream")
        finally:
            closed.append(call.request_id)

    peers = PullPeers(NodeId("me"), View(), call_peer, None)  # type: ignore[arg-type]
    answer = await peers.ask(PEER, {"op": "chunk"}, 1000, bulk=bulk)
    assert answer == ([b"first piece", b"last piece"] if bulk else b"last piece")
    assert len(closed) == 1  # at once, not when the generator is collected
