"""Large metadata in a mesh: its updates reach every node by gossip, and its full state reaches a joiner.

A node hosting a dozen deployments describes itself in ~2 KB (its replicas, speeds, traffic, models),
more than one gossip packet's budget (``packet_budget_bytes``, 1,400). Such an update must still
spread in gossip rounds, in a packet of its own, and not wait for a push-pull (every 30 s or more on
the ``lan`` profile): placement, routing and the model store read these updates. Push-pull is turned
off here (an hour apart), so only gossip can carry them. Packets are encoded and decoded as on the
wire, so every size is the real one.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from meshnode.mesh.config import MembershipConfig
from meshnode.mesh.load_news import stamped
from meshnode.mesh.metadata import NodeMeta
from meshnode.mesh.simulation import Simulation
from meshnode.mesh.types import Address, NodeId
from meshnode.mesh.wire import Alive, encoded_size

N = 100
SEED = 20261206
CONFIG = replace(MembershipConfig.local(), push_pull_interval_s=3600.0)


def described(name: str, hints: int) -> NodeMeta:
    """Metadata with `hints` hints of 32 characters: 60 make it ~2 KB, as a dozen deployments do."""
    return NodeMeta(name=name, hints=tuple(f"prefix-{name}-{i:04d}".ljust(32, "x") for i in range(hints)))


def everyone_knows(sim: Simulation, node: NodeId, meta_version: int) -> bool:
    return all(
        other.core.members[node].meta_version >= meta_version
        for observer, other in sim.nodes.items()
        if observer != node
    )


@pytest.mark.parametrize("hints", [2, 60, 250])
def test_an_update_reaches_every_node_by_gossip_whatever_its_size(hints: int) -> None:
    sim = Simulation(CONFIG, seed=SEED, encode=True)
    nodes = sim.bootstrap(N)
    sim.run_for(1.0)
    node = nodes[3]
    meta = described(node, hints)
    size = encoded_size(Alive(node, 0, Address("sim-3:7946"), 1, meta))
    assert (size > CONFIG.packet_budget_bytes) == (hints >= 60)
    assert size <= CONFIG.max_meta_bytes + 200

    sim.update_meta(node, meta)
    start = sim.now
    bound = 3 * CONFIG.dissemination_s(N)
    version = sim.nodes[node].core.me.meta_version
    reached = sim.run_until(lambda: everyone_knows(sim, node, version), start + bound)
    assert reached, f"seed={SEED}: an update of {size} bytes reached only part of the mesh in {bound:.2f} s"
    held = stamped(meta)  # as the node's core gossips it: listing the features it takes
    assert all(sim.nodes[observer].core.members[node].meta == held for observer in nodes if observer != node)
    assert sim.malformed == 0


def test_a_full_state_over_the_packet_limit_reaches_a_joiner_in_parts() -> None:
    """Sixty members of ~5 KB are 300 KB of state; with packets limited to 256 KiB (4 MiB by default:
    two thousand members of ~2 KB) the seed's answer to a join goes in parts. Before it did, the
    joiner's view stayed empty: the whole answer was dropped as oversized, every time."""
    config = replace(MembershipConfig.local(), max_packet_bytes=256 * 1024)
    sim = Simulation(config, seed=SEED, encode=True)
    nodes = sim.bootstrap(60)
    for node in nodes:
        sim.update_meta(node, described(node, 150))
    sim.run_for(15.0)  # every update spread and sent its last: only the join can tell the joiner
    joiner = sim.add_node(seeds=[nodes[0]])
    start = sim.now
    knows_all = lambda: all(node in sim.nodes[joiner].core.members for node in nodes)  # noqa: E731
    assert sim.run_until(knows_all, start + 2.0), f"seed={SEED}: the joiner knows only part of the mesh"
    known_by_all = lambda: everyone_knows_alive(sim, joiner, nodes)  # noqa: E731
    assert sim.run_until(known_by_all, start + 2.0), f"seed={SEED}: the mesh does not know the joiner"
    sim.run_for(config.push_pull_interval_s * 3)  # anti-entropy rounds: no part is ever oversized
    assert sim.malformed == 0


def everyone_knows_alive(sim: Simulation, joiner: NodeId, nodes: list[NodeId]) -> bool:
    return all(joiner in sim.nodes[node].core.members for node in nodes)
