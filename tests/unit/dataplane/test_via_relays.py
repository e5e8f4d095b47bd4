"""Calls to a node nobody can dial: which relays, in which order, and waiting out a relay's move."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterable

from meshnode.dataplane.via_relays import RelayedCalls
from meshnode.mesh.envelope import Call, Envelope, Failure, Reply
from meshnode.mesh.member import Member
from meshnode.mesh.metadata import NodeMeta
from meshnode.mesh.types import Address, NodeId, Status

ME = NodeId("me")
EDGE = NodeId("edge")
CALL = Call("r1", "echo", {"text": "hi"}, None, False, "", 10_000)


def member(node: str, status: Status = Status.ALIVE, **meta: object) -> Member:
    wire: dict[str, object] = {"name": node, "data": f"{node}:9", "data_key": "k" * 40, **meta}
    return Member(NodeId(node), Address(f"{node}:8471"), 1, status, 1, NodeMeta.from_wire(wire), 0.0)


class View:
    def __init__(self, members: Iterable[Member]) -> None:
        self.by_id = {m.node: m for m in members}
        self.view_version = 1

    def members(self) -> Iterable[Member]:
        return self.by_id.values()

    def member(self, node: NodeId) -> Member | None:
        return self.by_id.get(node)

    def set(self, *members: Member) -> None:
        self.by_id.update({m.node: m for m in members})
        self.view_version += 1


class Links:
    """Relays in `passing` pass the call on; the others refuse it as having no link."""

    def __init__(self, passing: set[str]) -> None:
        self.passing = passing
        self.tried: list[tuple[str, str | None]] = []

    async def call(
        self, node: NodeId, addr: str, key: str, call: Call, *, to: NodeId | None = None
    ) -> AsyncGenerator[Envelope, None]:
        self.tried.append((node, to))
        if node in self.passing or to is None:
            yield Reply(call.request_id, {"via": node}, "application/json")
        else:
            yield Failure(call.request_id, "peer_unreachable", "that node has no link to this relay", True)

    def in_flight(self) -> dict[NodeId, int]:
        return {}

    def reported_queue(self, node: NodeId, deployment: str, now: float, max_age_s: float) -> int | None:
        return None


def edge(*relays: str) -> Member:
    return member("edge", reach="relayed", relays=list(relays))


async def answers(generator: AsyncGenerator[Envelope, None]) -> list[Envelope]:
    return [message async for message in generator]


def test_a_direct_node_is_called_on_its_own_link() -> None:
    links = Links(set())
    calls = RelayedCalls(View([member("b", reach="direct")]), links, ME, "me")
    assert calls.relays_of(NodeId("b")) is None
    [reply] = asyncio.run(answers(calls.call(NodeId("b"), "b:9", "k" * 40, CALL, [], wait=False)))
    assert isinstance(reply, Reply) and links.tried == [("b", None)]


def test_relays_are_this_node_first_then_alive_then_suspect_and_never_dead() -> None:
    view = View(
        [
            member("r1", Status.SUSPECT),
            member("r2"),
            member("r3", Status.DEAD),
            member("me"),
            edge("r1", "r2", "r3", "me"),
        ]
    )
    calls = RelayedCalls(view, Links(set()), ME, "me")
    assert [m.node for m in calls.relays_of(EDGE) or []] == ["me", "r2", "r1"]


def test_a_relay_that_cannot_pass_the_call_on_is_skipped_for_the_next() -> None:
    links = Links({"r2"})
    crossed: list[str] = []
    calls = RelayedCalls(View([member("r1"), member("r2"), edge("r1", "r2")]), links, ME, "me")
    [reply] = asyncio.run(answers(calls.call(EDGE, "edge:9", "k" * 40, CALL, crossed, wait=False)))
    assert isinstance(reply, Reply) and reply.data == {"via": "r2"}
    assert links.tried == [("r1", "edge"), ("r2", "edge")] and crossed == ["r2"]


def test_without_waiting_a_call_no_relay_passes_on_fails_retryably_at_once() -> None:
    calls = RelayedCalls(View([member("r1"), edge("r1")]), Links(set()), ME, "me")
    [failure] = asyncio.run(answers(calls.call(EDGE, "edge:9", "k" * 40, CALL, [], wait=False)))
    assert isinstance(failure, Failure) and failure.retryable


def test_waiting_a_call_goes_through_the_relay_the_node_moves_to() -> None:
    async def scenario() -> list[Envelope]:
        view = View([member("r1"), member("r2"), edge("r1")])
        links = Links({"r2"})
        calls = RelayedCalls(view, links, ME, "me")
        pending = asyncio.create_task(answers(calls.call(EDGE, "edge:9", "k" * 40, CALL, [], wait=True)))
        while not links.tried:  # until the call has found r1 unable, and waits
            await asyncio.sleep(0)
        assert not pending.done()
        view.set(edge("r2"))  # the edge took r2: gossip says so
        calls.view_changed()
        return await asyncio.wait_for(pending, 5)

    [reply] = asyncio.run(scenario())
    assert isinstance(reply, Reply) and reply.data == {"via": "r2"}


def test_a_new_relay_not_yet_linked_is_tried_again_until_it_is() -> None:
    async def scenario() -> tuple[list[Envelope], int]:
        links = Links(set())
        calls = RelayedCalls(View([member("r1"), edge("r1")]), links, ME, "me")
        pending = asyncio.create_task(answers(calls.call(EDGE, "edge:9", "k" * 40, CALL, [], wait=True)))
        while len(links.tried) < 2:  # r1 refused, and was tried again after _RETRY_S
            await asyncio.sleep(0.01)
        links.passing.add("r1")  # the edge's link reached r1, with no view change
        return await asyncio.wait_for(pending, 5), len(links.tried)

    [reply], tries = asyncio.run(scenario())
    assert isinstance(reply, Reply) and 2 <= tries <= 10
