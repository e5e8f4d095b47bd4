"""Placement by weighted rendezvous hashing: one answer everywhere, little movement, fair shares."""

from __future__ import annotations

import collections
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.mesh.placement import (
    Action,
    HostNode,
    Plan,
    Requirements,
    action_for,
    host_of,
    ineligible_reason,
    place,
    plan,
    rank,
    weight_of,
)
from meshnode.mesh.types import NodeId

ANY = Requirements()


def nodes(count: int, **fields: object) -> list[HostNode]:
    return [HostNode(NodeId(f"node-{i:04d}"), **fields) for i in range(count)]  # type: ignore[arg-type]


@given(st.permutations(nodes(12)), st.text(min_size=1, max_size=20))
def test_every_node_computes_the_same_order_whatever_order_it_lists_the_nodes_in(
    shuffled: list[HostNode], deployment: str
) -> None:
    assert rank(deployment, shuffled) == rank(deployment, nodes(12))


def test_a_join_moves_about_one_nth_of_the_replicas() -> None:
    pool = nodes(100)
    deployments = [f"deployment-{i}" for i in range(1000)]
    before = {d: set(place(d, 2, pool, ANY).hosts) for d in deployments}
    joined = [*pool, HostNode(NodeId("newcomer"))]
    after = {d: set(place(d, 2, joined, ANY).hosts) for d in deployments}
    moved = sum(len(after[d] - before[d]) for d in deployments)
    ideal = 2 * len(deployments) / len(joined)  # the newcomer's fair share of 2000 replicas
    assert moved <= 1.5 * ideal, (moved, ideal)
    # Everything that moved went to the newcomer: no other replica changed hands.
    assert all(after[d] - before[d] <= {"newcomer"} for d in deployments)


def test_a_leave_hands_only_the_leavers_replicas_to_the_next_in_rank() -> None:
    pool = nodes(50)
    leaver = pool[7].node
    rest = [c for c in pool if c.node != leaver]
    for i in range(300):
        deployment = f"deployment-{i}"
        before = place(deployment, 3, pool, ANY).hosts
        after = place(deployment, 3, rest, ANY).hosts
        if leaver in before:
            assert set(before) - {leaver} < set(after)
            assert after[2] == rank(deployment, rest)[2]
        else:
            assert after == before


def test_weights_share_deployments_in_proportion() -> None:
    pool = [*nodes(4), HostNode(NodeId("big"), weight=2.0)]
    wins = collections.Counter(rank(f"d{i}", pool)[0] for i in range(12000))
    share = wins["big"] / 12000
    assert 0.28 <= share <= 0.38, wins  # 2 / (4 + 2) = 1/3


def test_requirements_filter_nodes_and_say_why() -> None:
    gpu = HostNode(NodeId("gpu"), device_kind="cuda", memory_bytes=80 << 30, accelerators=1)
    laptop = HostNode(NodeId("laptop"), device_kind="cpu", memory_bytes=16 << 30)
    cuda_only = Requirements(device_kinds=frozenset({"cuda"}), accelerator=True)
    assert ineligible_reason(laptop, cuda_only) == "device cpu is not one of cuda"
    assert ineligible_reason(gpu, cuda_only) is None
    assert ineligible_reason(laptop, Requirements(min_memory_bytes=32 << 30)) is not None
    placed = place("sd", 1, [gpu, laptop], cuda_only)
    assert placed.hosts == ("gpu",) and placed.unschedulable is None
    nowhere = place("sd", 1, [laptop], cuda_only)
    assert nowhere.hosts == ()
    assert nowhere.unschedulable is not None and "device cpu is not one of cuda" in nowhere.unschedulable


def test_fewer_eligible_nodes_than_desired_places_what_it_can_and_reports_it() -> None:
    placed = place("sd", 3, nodes(2), ANY)
    assert len(placed.hosts) == 2
    assert placed.unschedulable == "2 of 2 live nodes can host it, 3 wanted"


def test_placement_is_spread_across_nodes() -> None:
    pool = nodes(10)
    rng = random.Random(1)
    load = collections.Counter(
        host for i in range(2000) for host in place(f"d{rng.random()}", 2, pool, ANY).hosts
    )
    assert min(load.values()) > 0.7 * 400 and max(load.values()) < 1.3 * 400, load


def test_plan_counts_pinned_replicas_first_then_fills_from_the_ranking_then_backups() -> None:
    pool = nodes(8)
    ranked = rank("echo", pool)
    pinned = ranked[5]
    result = plan("echo", 3, pool, ANY, pinned=[pinned, NodeId("gone")], backups=2)
    others = [node for node in ranked if node != pinned]
    assert result.hosts == (pinned, *others[:2])
    assert result.backups == tuple(others[2:4])
    assert result.unschedulable is None


def test_plan_says_why_a_cuda_only_deployment_cannot_run_on_cpu_nodes() -> None:
    cpu_nodes = [
        host_of(NodeId(f"cpu-{i}"), {"cores": 8, "memory": 16 << 30, "kind": "cpu"}) for i in range(3)
    ]
    result = plan("sd", 1, cpu_nodes, Requirements(device_kinds=frozenset({"cuda"})))
    assert result.hosts == ()
    assert (
        result.unschedulable is not None
        and "cuda" in result.unschedulable
        and "3 node(s)" in result.unschedulable
    )


def test_a_gpu_node_can_also_host_cpu_deployments() -> None:
    gpu = host_of(
        NodeId("gpu"), {"cores": 16, "kind": "cuda", "accelerators": [{"kind": "cuda", "memory": 80 << 30}]}
    )
    assert ineligible_reason(gpu, Requirements(device_kinds=frozenset({"cpu"}))) is None
    assert gpu.accelerators == 1


def test_weights_follow_device_capability() -> None:
    laptop = weight_of({"cores": 8, "accelerators": []})
    mac = weight_of({"cores": 8, "accelerators": [{"kind": "mps"}]})
    a100 = weight_of({"cores": 32, "accelerators": [{"kind": "cuda", "memory": 80 * 10**9}]})
    assert laptop < mac < a100
    assert weight_of({}) == 1.0 and weight_of({"cores": "many", "accelerators": ["junk"]}) == 1.0


def test_spread_puts_replicas_in_distinct_zones_before_doubling_up() -> None:
    pool = [HostNode(NodeId(f"n{i}"), zone=f"z{i % 3}") for i in range(12)]
    for deployment in (f"d{i}" for i in range(50)):
        hosts = plan(deployment, 3, pool, ANY, spread="zone").hosts
        assert len({node_zone(pool, node) for node in hosts}) == 3
        assert len(plan(deployment, 3, pool, ANY).hosts) == 3


def node_zone(pool: list[HostNode], node: NodeId) -> str:
    return next(c.zone for c in pool if c.node == node)


def test_excluded_nodes_are_skipped_and_named_when_nobody_is_left() -> None:
    pool = nodes(3)
    best = rank("broken", pool)[0]
    reason = "its replica failed to start there"
    assert best not in plan("broken", 1, pool, ANY, excluded={best: reason}).hosts
    everyone = {c.node: reason for c in pool}
    result = plan("broken", 1, pool, ANY, excluded=everyone)
    assert (
        result.hosts == ()
        and result.unschedulable is not None
        and f"3 node(s): {reason}" in result.unschedulable
    )


ME, A, B = NodeId("me"), NodeId("a"), NodeId("b")


@pytest.mark.parametrize(
    ("placed", "replica", "ready", "expected"),
    [
        (Plan((ME, A), (), None), None, set(), Action.START),
        (Plan((A,), (ME,), None), None, set(), Action.START_BACKUP),
        (Plan((A, B), (), None), None, set(), Action.NONE),
        (Plan((ME,), (), None), {"standby": True}, set(), Action.PROMOTE),
        (Plan((ME, A), (), None), {}, set(), Action.NONE),
        # Make before break: it leaves only once every other host serves.
        (Plan((A, B), (), None), {}, {A}, Action.NONE),
        (Plan((A, B), (), None), {}, {A, B}, Action.STOP),
        (Plan((), (), None), {}, set(), Action.STOP),  # scaled to zero
        (Plan((A,), (ME,), None), {}, set(), Action.NONE),
        (Plan((A,), (ME,), None), {}, {A}, Action.DEMOTE),
        (Plan((A,), (ME,), None), {"standby": True}, {A}, Action.NONE),
        # A pinned replica is never stopped or demoted.
        (Plan((A, B), (), None), {"pinned": True}, {A, B}, Action.NONE),
    ],
)
def test_each_node_acts_only_on_itself_and_makes_before_it_breaks(
    placed: Plan, replica: dict[str, bool] | None, ready: set[NodeId], expected: Action
) -> None:
    flags = replica or {}
    action = action_for(ME, placed, has_replica=replica is not None, ready=ready, **flags)
    assert action == expected


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        # A placed replica of an app the deployment no longer names goes, host or not.
        ({"app_changed": True}, Action.REPLACE),
        ({"app_changed": True, "setup_failures": 5, "setup_attempts": 3}, Action.REPLACE),
        # One whose setup failed `setup_attempts` times in a row is given up; fewer keep trying.
        ({"setup_failures": 3, "setup_attempts": 3}, Action.GIVE_UP),
        ({"setup_failures": 2, "setup_attempts": 3}, Action.NONE),
        ({"setup_failures": 9, "setup_attempts": 0}, Action.NONE),  # 0: never give up
        # Pinned replicas are the node's own business: neither replaced nor given up here.
        ({"pinned": True, "app_changed": True}, Action.NONE),
        ({"pinned": True, "setup_failures": 3, "setup_attempts": 3}, Action.NONE),
    ],
)
def test_a_replica_of_a_changed_or_failing_app_goes_before_anything_else(
    flags: dict[str, Any], expected: Action
) -> None:
    assert action_for(ME, Plan((ME,), (), None), has_replica=True, **flags) == expected


def test_without_a_replica_there_is_nothing_to_replace_or_give_up() -> None:
    placed = Plan((ME,), (), None)
    flags: dict[str, Any] = {"app_changed": True, "setup_failures": 3, "setup_attempts": 3}
    assert action_for(ME, placed, has_replica=False, **flags) == Action.START
