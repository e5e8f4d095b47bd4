"""Leaderless placement at scale: 1000 simulated nodes gossip 100 deployments and place them alike.

The production membership core carries the deployment records (``mesh/records.py``) on the seeded
simulator; placement (``mesh/placement.py``) then runs on each node's own view. Every assertion
message carries the seed, which reproduces the run.
"""

from __future__ import annotations

import os
import random

import pytest

from meshnode.mesh.config import MembershipConfig
from meshnode.mesh.deployment import DeploymentSpec
from meshnode.mesh.placement import HostNode, Requirements, plan
from meshnode.mesh.simulation import Simulation
from meshnode.mesh.types import NodeId, Status

N = int(os.environ.get("MESHNODE_SIM_N", "1000"))
SEED = int(os.environ.get("MESHNODE_SIM_SEED", "20261121"))
DEPLOYMENTS = 100
REPLICAS = 3
# Placement is computed on this many nodes' views (every node's would take minutes in Python).
OBSERVERS = 12
ANY = Requirements()


def placement_seen_by(sim: Simulation, observer: NodeId) -> dict[str, tuple[NodeId, ...]]:
    """Every declared deployment's hosts, computed from `observer`'s own view and table."""
    core = sim.nodes[observer].core
    live = [HostNode(m.node) for m in core.members.values() if m.status in (Status.ALIVE, Status.SUSPECT)]
    table = core.deployments.live()
    return {
        record.name: plan(record.name, record.spec.min_replicas if record.spec else 0, live, ANY).hosts
        for record in table
    }


def tables_agree(sim: Simulation, nodes: list[NodeId], count: int) -> bool:
    first = sim.nodes[nodes[0]].core.deployments.records
    return all(
        len(sim.nodes[n].core.deployments.live()) == count and sim.nodes[n].core.deployments.records == first
        for n in nodes
    )


@pytest.fixture(scope="module")
def declared() -> Simulation:
    """N settled nodes; 100 deployments declared on random nodes and gossiped everywhere."""
    sim = Simulation(MembershipConfig.local(), seed=SEED)
    ids = sim.bootstrap(N)
    sim.run_for(1.0)
    rng = random.Random(SEED)
    spec = DeploymentSpec("apps/echo.py:Echo", min_replicas=REPLICAS, max_replicas=REPLICAS)
    for index in range(DEPLOYMENTS):
        sim.declare(rng.choice(ids), f"model-{index:03d}", spec, wall_ms=1_700_000_000_000 + index)
    converged = sim.run_until(lambda: tables_agree(sim, ids, DEPLOYMENTS), sim.now + 120, check_every_s=1.0)
    assert converged, f"seed {SEED}: the deployment tables did not converge in 120 simulated s"
    return sim


def test_every_node_holds_the_same_table_and_computes_the_same_placement(declared: Simulation) -> None:
    sim = declared
    observers = random.Random(SEED).sample(sim.live(), OBSERVERS)
    seen = [placement_seen_by(sim, observer) for observer in observers]
    assert len(seen[0]) == DEPLOYMENTS
    assert all(placement == seen[0] for placement in seen), f"seed {SEED}: placements differ"
    counts: dict[NodeId, int] = {}
    for hosts in seen[0].values():
        assert len(hosts) == REPLICAS
        for node in hosts:
            counts[node] = counts.get(node, 0) + 1
    # Spread: no node hosts a lot more than its share (300 replicas over 1000 nodes).
    assert max(counts.values()) <= 4, f"seed {SEED}: {max(counts.values())} replicas on one node"


def test_a_join_moves_only_replicas_to_the_newcomer_and_few_of_them(declared: Simulation) -> None:
    sim = declared
    observer = sim.live()[0]
    before = placement_seen_by(sim, observer)
    newcomer = sim.add_node(seeds=[observer])
    joined = sim.run_until(
        lambda: (
            sim.status_in_view(observer, newcomer) == Status.ALIVE
            and len(sim.nodes[newcomer].core.deployments.live()) == DEPLOYMENTS
        ),
        sim.now + 60,
        check_every_s=0.5,
    )
    assert joined, f"seed {SEED}: the newcomer did not join with the table"
    after = placement_seen_by(sim, observer)
    assert placement_seen_by(sim, newcomer) == after, f"seed {SEED}: the newcomer places differently"
    moved = [(name, set(after[name]) - set(before[name])) for name in after]
    gained = [node for _, nodes in moved for node in nodes]
    ideal = DEPLOYMENTS * REPLICAS / (len(sim.live()))
    assert set(gained) <= {newcomer}, f"seed {SEED}: replicas moved between old nodes: {moved}"
    assert len(gained) <= max(3, 1.5 * ideal), f"seed {SEED}: {len(gained)} moved, ideal {ideal:.2f}"


def test_a_crash_hands_only_that_nodes_replicas_to_the_next_in_rank(declared: Simulation) -> None:
    sim = declared
    observer = sim.live()[1]
    before = placement_seen_by(sim, observer)
    victim = next(iter(before["model-000"]))
    hosted = {name for name, hosts in before.items() if victim in hosts}
    sim.crash(victim)
    dead = sim.run_until(
        lambda: sim.status_in_view(observer, victim) == Status.DEAD, sim.now + 30, check_every_s=0.1
    )
    assert dead, f"seed {SEED}: the crash was not detected"
    after = placement_seen_by(sim, observer)
    changed = {name for name in after if after[name] != before[name]}
    assert changed == hosted, f"seed {SEED}: {sorted(changed ^ hosted)} changed unexpectedly"
    for name in hosted:
        kept = [node for node in before[name] if node != victim]
        assert list(after[name][: len(kept)]) == kept or set(kept) <= set(after[name])
        assert victim not in after[name] and len(after[name]) == REPLICAS
