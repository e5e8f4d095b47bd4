"""Routing never starves a ready replica: a speed it has not re-measured lately is not held against it.

A replica's speed is measured only from the requests it serves. A figure that kept it from getting
requests (one slow outlier measured on a busy machine) would otherwise never be corrected, and the
replica, ready and idle, would get nothing at any concurrency (bench/scale.py part a: p7 and p5 got
no request at c=1 nor c=32 after one such outlier).
"""

from __future__ import annotations

import collections
import random

from meshnode.mesh.member import Member
from meshnode.mesh.metadata import NodeMeta
from meshnode.mesh.route_candidates import candidates
from meshnode.mesh.routing import Locality, RouteRequest, ordered, rank
from meshnode.mesh.types import Address, NodeId, Status

ME = NodeId("entry")
HERE = Locality(ME)
REQUEST = RouteRequest("echo")
READY = {"state": "ready", "queue": 0, "slots": 16, "capacity": 80}


def peer(name: str, speed: dict[str, float], queue: int = 0) -> Member:
    """A member with a ready replica of echo and the speed it gossiped, as peers' metadata arrives."""
    meta = {"name": name, "data": f"{name}:9", "replicas": {"echo": {**READY, "queue": queue}}}
    wire = {**meta, "speeds": {"echo": speed}}
    return Member(NodeId(name), Address(f"{name}:8471"), 1, Status.ALIVE, 1, NodeMeta.from_wire(wire), 0.0)


def first_choices(members: list[Member], requests: int, seed: int) -> collections.Counter[str]:
    """Which replica goes first for each of `requests` requests sent one at a time (nothing in flight)."""
    rng = random.Random(seed)
    pool = candidates(members, "echo", ME)
    return collections.Counter(ordered(rank(pool, REQUEST, {}, rng, HERE))[0].name for _ in range(requests))


def test_a_speed_not_re_measured_over_its_window_reads_as_unmeasured() -> None:
    found = {
        c.name: c.service_s
        for c in candidates(
            [
                peer("fresh", {"service_ms": 95.0, "rps": 26.3}),
                peer("stale", {"service_ms": 95.0, "rps": 0.0}),
                peer("older-version", {"service_ms": 95.0}),  # no rate gossiped: taken as it is
            ],
            "echo",
            ME,
        )
    }
    assert found == {"fresh": 0.095, "stale": None, "older-version": 0.095}


def test_equally_fast_replicas_share_at_concurrency_one_after_one_slow_outlier() -> None:
    # Ten replicas of the same app on the same kind of node, all about 1 ms. p5 measured one slow
    # request (95 ms, the machine busy) and then, shunned for it, completed nothing for a window.
    members = [peer(f"p{i}", {"service_ms": 1.0 + i / 10, "rps": 40.0}) for i in range(1, 11) if i != 5]
    members.append(peer("p5", {"service_ms": 95.4, "rps": 0.0}))
    counts = first_choices(members, 5000, seed=11)
    assert set(counts) == {f"p{i}" for i in range(1, 11)}, counts
    assert all(350 <= n <= 650 for n in counts.values()), counts  # a fair share is 500


def test_a_replica_shunned_for_a_stale_outlier_takes_load_again_at_high_concurrency() -> None:
    # c=32 over ten replicas: the others hold about three requests each; p5, idle, must take its part.
    members = [peer(f"p{i}", {"service_ms": 1.0, "rps": 60.0}, queue=3) for i in range(1, 11) if i != 5]
    members.append(peer("p5", {"service_ms": 95.4, "rps": 0.0}))
    counts = first_choices(members, 2000, seed=5)
    assert counts["p5"] >= 2000 // 10, counts


def test_a_fresh_slow_measurement_still_counts() -> None:
    # Serving recently, a replica measured clearly slower still goes after the faster ones at rest:
    # only a figure the replica has not refreshed for a window stops counting.
    members = [peer(f"p{i}", {"service_ms": 1.0, "rps": 40.0}) for i in range(1, 4)]
    members.append(peer("slow", {"service_ms": 95.4, "rps": 2.0}))
    assert first_choices(members, 500, seed=3)["slow"] == 0
