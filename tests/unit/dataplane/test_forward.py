"""The forwarder's rules (``node/dataplane/forward.py``'s docstring), on fake peers in this process.

A real ``Forwarder`` routes over ``meshnode.testing``'s fakes: a view built from peer specs, peers'
replicas answering scripts behind ``FakeLinks``, and this node's own fake replicas. Which peer is
tried first is pinned by routing tiers (a hint, a loaded model, a full queue, a suspect node), so no
assertion leans on the seeded draw. Nothing sleeps: a test that must catch a request in flight
awaits a condition on the fakes.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from meshnode.dataplane.forward import Served
from meshnode.errors import Conflict, DeadlineExceeded, MeshnodeError, NotFound, NotReady, Overloaded
from meshnode.mesh.envelope import Call, Chunk, Envelope, Failure, Reply
from meshnode.mesh.replica_state import ReplicaState
from meshnode.mesh.types import Status
from meshnode.testing import (
    JSON,
    FakeMesh,
    FakeReplica,
    echoes,
    fails,
    gated,
    hangs,
    make_call,
    peer_id,
    refuses,
)

N1, N2 = peer_id("n1"), peer_id("n2")


async def rest_of(served: Served) -> list[Envelope]:
    """What followed the first envelope (draining it lets the link and the replica finish)."""
    return [message async for message in served.rest]


def two_peers(first: FakeReplica, second: FakeReplica | None = None) -> FakeMesh:
    """Peers n1 and n2 serving ``echo``: n1 with `first`, n2 with `second` or an echo of its tag."""
    mesh = FakeMesh()
    mesh.add_peer("n1", {"echo": first})
    mesh.add_peer("n2", {"echo": second or FakeReplica(echoes("n2"))})
    return mesh


def hinted(first: FakeReplica) -> FakeReplica:
    """`first`, holding the hint ``h``: a request hinted ``h`` tries it before any other."""
    first.hints = ("h",)
    return first


# -- the happy paths -----------------------------------------------------------------------------


async def test_a_request_for_a_deployment_elsewhere_goes_to_the_peer_that_has_it() -> None:
    mesh = FakeMesh()
    mesh.add_peer("n1", {"echo": FakeReplica(echoes("n1"))})
    forwarder = mesh.forwarder()

    served = await forwarder.serve(make_call("echo", {"x": 1}, request_id="r-1"))

    assert served.first == Reply("r-1", {"tag": "n1", "body": {"x": 1}}, JSON, queue=0)
    assert (served.route, served.attempts) == (("here", "n1"), 1)
    assert await rest_of(served) == []
    assert [(sent.node, sent.addr) for sent in mesh.links.sent] == [(N1, "n1.invalid:9")]
    assert forwarder.counts["served_peer"] == 1


async def test_its_own_replica_serves_without_a_hop_when_no_peer_is_better() -> None:
    mesh = FakeMesh()
    mesh.replicas.table["echo"] = FakeReplica(echoes("here"))
    mesh.add_peer("n1", {"echo": FakeReplica(echoes("n1"))})
    forwarder = mesh.forwarder()

    served = await forwarder.serve(make_call("echo"))

    assert served.route == ("here",)
    assert served.first.data["tag"] == "here"  # type: ignore[union-attr]
    assert await rest_of(served) == []
    assert mesh.links.sent == []
    assert forwarder.counts["served_local"] == 1


# -- routing order and retries -------------------------------------------------------------------


async def test_candidates_are_tried_in_routing_order_and_dead_peers_never() -> None:
    mesh = FakeMesh()
    crashing = fails("replica_crashed", "the worker exited")
    mesh.add_peer("hinted", {"echo": FakeReplica(crashing, hints=("h",))})
    mesh.add_peer("warm", {"echo": FakeReplica(crashing, models=("m",))})
    mesh.add_peer("plain", {"echo": FakeReplica(crashing)})
    mesh.add_peer("full", {"echo": FakeReplica(crashing, capacity=2)})
    mesh.add_peer("suspect", {"echo": FakeReplica(crashing)}, status=Status.SUSPECT)
    mesh.add_peer("dead", {"echo": FakeReplica(crashing)}, status=Status.DEAD)
    # The full one gossips a queue that fills its capacity.
    spec = mesh.view.spec("full")
    mesh.view.put(replace(spec, replicas={"echo": replace(spec.replicas["echo"], queue=2)}))
    call = make_call("echo", {"model": "m"}, timeout_ms=5_000)

    with pytest.raises(NotReady) as refused:
        await mesh.forwarder().serve(call, hint="h")

    order = ["hinted", "warm", "plain", "full", "suspect"]
    assert [sent.node for sent in mesh.links.sent] == [peer_id(name) for name in order]
    assert mesh.links.in_flight() == {}
    # Every attempt carries the same request with what is left of its deadline.
    timeouts = [sent.call.timeout_ms for sent in mesh.links.sent]
    assert all(sent.call.request_id == call.request_id for sent in mesh.links.sent)
    assert timeouts == sorted(timeouts, reverse=True) and timeouts[0] <= call.timeout_ms
    assert refused.value.status == 503 and refused.value.retry_after_s is not None
    assert "the worker exited" in refused.value.message


def answers_full(mesh: FakeMesh, first: FakeReplica) -> None:
    first.answer = fails("overloaded", "n1 is full")


def stopped_serving(mesh: FakeMesh, first: FakeReplica) -> None:
    first.state = ReplicaState.DRAINING  # gossip still says ready


def vanished(mesh: FakeMesh, first: FakeReplica) -> None:
    mesh.links.drop(N1)  # gossip still says alive


@pytest.mark.parametrize(
    ("refuse", "kind"),
    [(answers_full, "overloaded"), (stopped_serving, "not_ready"), (vanished, "peer_unreachable")],
)
async def test_a_retryable_refusal_before_any_output_moves_on_to_the_next_candidate(
    refuse: object, kind: str
) -> None:
    first = hinted(FakeReplica(echoes("n1")))
    mesh = two_peers(first)
    refuse(mesh, first)  # type: ignore[operator]
    forwarder = mesh.forwarder()

    served = await forwarder.serve(make_call("echo"), hint="h")

    assert (served.route, served.attempts) == (("here", "n2"), 2)
    assert served.first.data["tag"] == "n2"  # type: ignore[union-attr]
    assert await rest_of(served) == []
    assert forwarder.counts[f"refused_{kind}"] == 1


async def test_a_refusal_of_its_own_replica_moves_on_to_a_peer() -> None:
    mesh = FakeMesh()
    mesh.replicas.table["echo"] = FakeReplica(refuses(Overloaded("full here", retry_after_s=1.0)))
    mesh.add_peer("n1", {"echo": FakeReplica(echoes("n1"))})
    forwarder = mesh.forwarder()

    served = await forwarder.serve(make_call("echo"))

    assert (served.route, served.attempts) == (("here", "n1"), 2)
    assert forwarder.counts["refused_overloaded"] == 1
    assert await rest_of(served) == []


async def test_a_non_retryable_error_of_its_own_replica_is_the_answer() -> None:
    mesh = FakeMesh()
    mesh.replicas.table["echo"] = FakeReplica(refuses(Conflict("request id already in flight")))
    mesh.add_peer("n1", {"echo": FakeReplica(echoes("n1"))})

    with pytest.raises(Conflict):
        await mesh.forwarder().serve(make_call("echo"))
    assert mesh.links.sent == []


async def test_once_output_started_the_request_is_never_run_again() -> None:
    async def breaks_after_one_chunk(call: Call) -> AsyncIterator[Envelope]:
        yield Chunk(call.request_id, 0, "a")
        yield Failure(call.request_id, "replica_crashed", "the worker exited", True)

    mesh = two_peers(hinted(FakeReplica(breaks_after_one_chunk)))

    served = await mesh.forwarder().serve(make_call("echo", stream=True), hint="h")

    assert served.first == Chunk(served.first.request_id, 0, "a")
    assert (served.route, served.attempts) == (("here", "n1"), 1)
    rest = await rest_of(served)
    assert [type(message) for message in rest] == [Failure]  # the stream's end, passed on as it is
    assert mesh.links.sent_to(N2) == []


async def test_a_failure_that_is_not_retryable_is_the_answer_not_a_reason_to_retry() -> None:
    mesh = two_peers(hinted(FakeReplica(fails("predictor", "bad input", retryable=False))))

    served = await mesh.forwarder().serve(make_call("echo"), hint="h")

    assert isinstance(served.first, Failure) and served.first.kind == "predictor"
    assert (served.route, served.attempts) == (("here", "n1"), 1)
    assert await rest_of(served) == []
    assert mesh.links.sent_to(N2) == []


async def test_a_request_whose_node_died_before_answering_runs_again_elsewhere() -> None:
    first = hinted(FakeReplica(hangs()))
    mesh = two_peers(first)
    forwarder = mesh.forwarder()
    call = make_call("echo")

    serving = asyncio.create_task(forwarder.serve(call, hint="h"))
    await first.until(lambda: first.running(call.request_id))
    mesh.links.drop(N1)
    served = await serving

    assert (served.route, served.attempts) == (("here", "n2"), 2)
    assert await rest_of(served) == []
    assert forwarder.counts["refused_peer_lost"] == 1
    await first.until(lambda: call.request_id in first.cancelled)  # its work stopped with it


async def test_a_peer_that_never_answers_ends_the_request_at_its_deadline() -> None:
    first = hinted(FakeReplica(hangs()))
    mesh = two_peers(first)
    call = make_call("echo", timeout_ms=50)

    with pytest.raises(DeadlineExceeded):
        served = await mesh.forwarder().serve(call, hint="h")
        await rest_of(served)

    assert mesh.links.sent_to(N2) == []  # a deadline is not a refusal: nothing runs twice
    await first.until(lambda: call.request_id in first.cancelled)
    assert mesh.links.cancelled[N1] == 1


# -- when nothing can take it --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kinds", "error", "status"),
    [
        (("overloaded", "overloaded"), Overloaded, 429),
        (("not_ready", "replica_crashed"), NotReady, 503),
        (("replica_crashed", "overloaded"), Overloaded, 429),
    ],
)
async def test_when_every_candidate_refused_the_answer_is_429_if_any_was_full_else_503(
    kinds: tuple[str, str], error: type[MeshnodeError], status: int
) -> None:
    mesh = two_peers(
        hinted(FakeReplica(fails(kinds[0], f"n1: {kinds[0]}"))),
        FakeReplica(fails(kinds[1], f"n2: {kinds[1]}")),
    )
    forwarder = mesh.forwarder()

    with pytest.raises(error) as refused:
        await forwarder.serve(make_call("echo"), hint="h")

    assert refused.value.status == status
    assert refused.value.retry_after_s is not None and refused.value.retry_after_s >= 1.0
    assert f"n1: {kinds[0]}" in str(refused.value) and f"n2: {kinds[1]}" in str(refused.value)
    assert forwarder.counts["unserved_exhausted"] == 1


async def test_an_unknown_deployment_is_404_and_a_known_one_with_nothing_ready_is_503() -> None:
    mesh = FakeMesh()
    mesh.add_peer("n1", {"coming": FakeReplica(state=ReplicaState.STARTING)})
    mesh.add_peer("n2", {"gone": FakeReplica()}, status=Status.DEAD)
    mesh.replicas.table["loading"] = FakeReplica(state=ReplicaState.STARTING)
    forwarder = mesh.forwarder()

    with pytest.raises(NotFound):
        await forwarder.serve(make_call("nowhere"))
    with pytest.raises(NotFound):  # only a dead node had it
        await forwarder.serve(make_call("gone"))
    for known in ("coming", "loading"):  # starting on a peer, and here
        with pytest.raises(NotReady):
            await forwarder.serve(make_call(known))
    assert mesh.links.sent == []


async def test_with_nothing_ready_it_waits_for_a_cold_start_within_its_deadline() -> None:
    mesh = FakeMesh()
    starting = FakeReplica(echoes("n1"), state=ReplicaState.STARTING)
    mesh.add_peer("n1", {"echo": starting})
    waited: list[tuple[str, float]] = []

    async def cold_start(deployment: str, deadline: float) -> None:
        waited.append((deployment, deadline))
        starting.state = ReplicaState.READY
        mesh.gossip("n1")

    forwarder = mesh.forwarder(cold_start=cold_start)
    before = asyncio.get_running_loop().time()
    served = await forwarder.serve(make_call("echo", timeout_ms=5_000))

    assert served.route == ("here", "n1")
    assert await rest_of(served) == []
    [(deployment, deadline)] = waited
    assert deployment == "echo" and before + 4.5 < deadline <= asyncio.get_running_loop().time() + 5.0
    assert forwarder.counts["cold_start_waits"] == 1


async def test_a_cold_start_that_brings_no_replica_ends_in_503() -> None:
    mesh = FakeMesh()
    mesh.add_peer("n1", {"echo": FakeReplica(state=ReplicaState.STARTING)})

    async def nothing_came(deployment: str, deadline: float) -> None:
        return None

    with pytest.raises(NotReady):
        await mesh.forwarder(cold_start=nothing_came).serve(make_call("echo"))


# -- the in-flight correction --------------------------------------------------------------------


async def test_what_it_has_in_flight_to_a_peer_counts_on_top_of_that_peers_gossiped_queue() -> None:
    gate = asyncio.Event()
    first = FakeReplica(gated(gate, echoes("n1")), capacity=10)
    mesh = two_peers(first)  # equal in gossip: both queues 0
    held = [mesh.links.call(N1, "n1.invalid:9", "", make_call("echo")) for _ in range(2)]
    waiting = [asyncio.create_task(anext(call)) for call in held]
    await mesh.links.until(lambda: mesh.links.in_flight() == {N1: 2})

    for seed in range(10):  # whatever the draw, n1's two outstanding requests decide
        served = await mesh.forwarder(rng=random.Random(seed)).serve(make_call("echo"))
        assert served.route == ("here", "n2"), seed
        assert await rest_of(served) == []

    gate.set()
    for task, call in zip(waiting, held, strict=True):
        assert isinstance(await task, Reply)
        await call.aclose()


async def test_a_peers_queue_from_its_last_answer_overrides_its_gossiped_one() -> None:
    async def others_wait(call: Call) -> AsyncIterator[Envelope]:
        if call.request_id.startswith("other"):
            await asyncio.Event().wait()
        yield Reply(call.request_id, {"tag": "n1"}, JSON)

    busy = FakeReplica(others_wait, capacity=10)
    mesh = two_peers(busy)
    # Three requests of other routers hold n1's replica; gossip has not caught up (it says 0).
    others = [busy.call(make_call("echo", request_id=f"other-{i}")) for i in range(3)]
    holding = [asyncio.create_task(anext(call)) for call in others]
    await busy.until(lambda: busy.in_flight == 3)
    answer = [message async for message in mesh.links.call(N1, "n1.invalid:9", "", make_call("echo"))]
    assert answer == [Reply(answer[0].request_id, {"tag": "n1"}, JSON, queue=3)]

    for seed in range(10):
        served = await mesh.forwarder(rng=random.Random(seed)).serve(make_call("echo"))
        assert served.route == ("here", "n2"), seed
        assert await rest_of(served) == []

    for task, call in zip(holding, others, strict=True):
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await call.aclose()
