"""Seeded random gossiped views for the tests that compare the indexed path with the plain walk."""

from __future__ import annotations

import random

from meshnode.mesh.member import Member
from meshnode.mesh.metadata import NodeMeta
from meshnode.mesh.replica_state import ReplicaEntry, ReplicaState
from meshnode.mesh.replica_view import LocalReplica, cannot_run_here
from meshnode.mesh.types import Address, NodeId, Status

ME = NodeId("me")
STATUSES = (Status.ALIVE, Status.ALIVE, Status.ALIVE, Status.SUSPECT, Status.DEAD, Status.LEFT)
# Gossiped waits as peers may send them: counts, and values a node must not count.
WAITS: tuple[object, ...] = (1, 2, 5, 0, -3, True, "7", None)


def random_entry(rng: random.Random) -> ReplicaEntry:
    """A replica in any state, pinned or not, failing or not, with some queue."""
    state = rng.choice(list(ReplicaState))
    error = rng.choice(["", "setup failed: ImportError", cannot_run_here("not in --app-dir")])
    return ReplicaEntry(
        state,
        pinned=rng.random() < 0.2,
        error=error if state is ReplicaState.FAILED or rng.random() < 0.2 else "",
        queue=rng.randrange(6),
        setup_failures=rng.choice((0, 0, 0, 1, 2)),
    )


def random_members(rng: random.Random, count: int, names: list[str]) -> list[Member]:
    """`count` members (this node among them), each gossiping replicas of a few of `names`."""
    nodes = [ME, *(NodeId(f"n{index:03d}") for index in range(count - 1))]
    rng.shuffle(nodes)
    members = []
    for node in nodes:
        held = rng.sample(names, k=min(len(names), rng.choice((0, 0, 1, 2, 3))))
        waits = rng.sample(names, k=min(len(names), rng.choice((0, 0, 0, 1, 2))))
        meta = NodeMeta(
            # Names collide now and then: a view sorted by name must keep the members' order.
            name=f"host-{rng.randrange(count)}",
            data=f"{node}:9",
            device={"kind": "cpu", "cores": rng.choice((2, 8, 16)), "memory": 16_000_000_000},
            zone=rng.choice(("a", "b")),
            replicas={name: random_entry(rng) for name in held},
            waiting={name: rng.choice(WAITS) for name in waits},
        )
        status = Status.ALIVE if node == ME else rng.choice(STATUSES)
        members.append(Member(node, Address(f"{node}:8471"), 1, status, 1, meta, 0.0))
    return members


def random_local(rng: random.Random) -> LocalReplica | None:
    """This node's own replica as decisions see it, or None."""
    if rng.random() < 0.5:
        return None
    return LocalReplica(rng.choice(list(ReplicaState)), pinned=rng.random() < 0.3, in_flight=rng.randrange(4))
