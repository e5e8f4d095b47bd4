"""Placement prefers the nodes whose store holds a deployment's model (``HOLDER_BONUS``)."""

from __future__ import annotations

from dataclasses import replace

from meshnode.mesh.placement import HOLDER_BONUS, HostNode, Requirements, host_of, place, rank
from meshnode.mesh.types import NodeId

NODES = [HostNode(NodeId(f"node-{i:03d}")) for i in range(200)]


def _holding(nodes: list[HostNode], model: str, every: int) -> list[HostNode]:
    return [replace(n, models=frozenset({model})) if i % every == 0 else n for i, n in enumerate(nodes)]


def test_holders_win_about_their_bonus_share_of_deployments() -> None:
    pool = _holding(NODES[:2], "sd", 2)  # node-000 holds sd, node-001 does not; same capacity
    wins = sum(rank(f"dep-{i}", pool, "sd")[0] == "node-000" for i in range(4000))
    # Weighted rendezvous: weight w against 1 wins w / (w + 1) of the time.
    assert abs(wins / 4000 - HOLDER_BONUS / (HOLDER_BONUS + 1)) < 0.03


def test_without_a_model_holdings_change_nothing() -> None:
    pool = _holding(NODES, "sd", 3)
    for i in range(50):
        assert rank(f"dep-{i}", pool) == rank(f"dep-{i}", NODES)
        assert rank(f"dep-{i}", pool, "other-model") == rank(f"dep-{i}", NODES)


def test_a_much_more_capable_node_still_wins_over_a_cpu_holder_mostly() -> None:
    gpu = replace(NODES[1], weight=16.0)
    pool = [replace(NODES[0], models=frozenset({"sd"})), gpu]
    wins = sum(rank(f"dep-{i}", pool, "sd")[0] == gpu.node for i in range(2000))
    assert wins / 2000 > 0.7


def test_place_ranks_holders_first_for_the_spec_model() -> None:
    pool = _holding(NODES[:20], "minilm", 4)
    holders = {n.node for n in pool if n.models}
    firsts = [place(f"dep-{i}", 1, pool, Requirements(model="minilm")).hosts[0] for i in range(500)]
    share = sum(node in holders for node in firsts) / 500
    # 5 holders of weight 4 among 15 of weight 1: 20 / 35 of first places, against 5 / 20 without.
    assert 0.47 < share < 0.67


def test_host_of_reads_the_store_names() -> None:
    host = host_of(NodeId("n"), {"cores": 8}, models=["sd", "minilm"])
    assert host.models == frozenset({"sd", "minilm"})
