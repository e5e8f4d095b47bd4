"""The forwarder carries an affinity key to routing: one conversation, one replica, from any node.

Real ``Forwarder``s over ``meshnode.testing``'s fakes, as ``test_forward.py``: two entry nodes with
differently seeded draws see the same four peers, and every request of a key lands on the peer that
key prefers, until that peer refuses, when the next candidate serves it.
"""

from __future__ import annotations

from meshnode.dataplane.forward import Served
from meshnode.mesh.envelope import Reply
from meshnode.testing import FakeMesh, FakeReplica, echoes, fails, make_call

PEERS = ("n1", "n2", "n3", "n4")
KEYS = [f"user:{i}" for i in range(24)]


def mesh_of(seed: int) -> FakeMesh:
    """An entry node seeing PEERS, each with a replica of ``chat`` (two slots) echoing its name."""
    mesh = FakeMesh(f"entry{seed}", seed=seed)
    for name in PEERS:
        mesh.add_peer(name, {"chat": FakeReplica(echoes(name), slots=2)})
    return mesh


async def tag_of(served: Served) -> str:
    assert isinstance(served.first, Reply)
    async for _ in served.rest:  # drained, so the link and the replica finish
        pass
    return str(served.first.data["tag"])


async def test_every_request_of_a_key_reaches_the_same_replica_from_any_entry_node() -> None:
    entries = [mesh_of(seed).forwarder() for seed in range(3)]
    chosen: dict[str, str] = {}
    for key in KEYS:
        tags = {await tag_of(await forwarder.serve(make_call("chat"), affinity=key)) for forwarder in entries}
        tags |= {await tag_of(await entries[0].serve(make_call("chat"), affinity=key)) for _ in range(3)}
        assert len(tags) == 1, (key, tags)
        chosen[key] = tags.pop()
    assert len(set(chosen.values())) >= 3  # keys spread over the replicas, not one for all


async def test_a_refusing_preferred_replica_hands_the_request_to_the_next_candidate() -> None:
    mesh = mesh_of(0)
    forwarder = mesh.forwarder()
    key = KEYS[0]
    preferred = await tag_of(await forwarder.serve(make_call("chat"), affinity=key))
    mesh.peers[preferred].get("chat").answer = fails("overloaded", f"{preferred} is full")  # type: ignore[union-attr]

    served = await forwarder.serve(make_call("chat"), affinity=key)

    assert served.attempts == 2 and await tag_of(served) != preferred
    assert forwarder.counts["refused_overloaded"] == 1
