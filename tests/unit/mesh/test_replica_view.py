"""What the gossiped view says about a deployment's replicas: the pure inputs of a node's decisions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.mesh.deployment import DeploymentSpec
from meshnode.mesh.member import Member
from meshnode.mesh.metadata import NodeMeta
from meshnode.mesh.placement import HostNode, Plan, Requirements, plan
from meshnode.mesh.replica_state import ReplicaEntry, ReplicaState
from meshnode.mesh.replica_view import (
    CANNOT_RUN,
    SITTING_OUT,
    Demand,
    LocalReplica,
    Prospect,
    cannot_run_here,
    demand,
    excluded,
    failure,
    pinned_nodes,
    prospect,
    ready_nodes,
    running_count,
    serving_anywhere,
)
from meshnode.mesh.types import Address, NodeId, Status

ME = NodeId("me")
A, B, C = NodeId("a"), NodeId("b"), NodeId("c")
SPEC = DeploymentSpec("apps/echo.py:Echo", min_replicas=1, max_replicas=3)


def member(
    node: NodeId,
    entry: ReplicaEntry | None = None,
    status: Status = Status.ALIVE,
    waiting: int | None = None,
) -> Member:
    meta = NodeMeta(
        name=str(node),
        data=f"{node}:9",
        replicas={"sd": entry} if entry is not None else {},
        waiting={"sd": waiting} if waiting is not None else {},
    )
    return Member(node, Address(f"{node}:8471"), 1, status, 1, meta, 0.0)


def entry(state: ReplicaState, **fields: object) -> ReplicaEntry:
    return ReplicaEntry(state, **fields)  # type: ignore[arg-type]


def test_demand_counts_queues_of_replicas_that_hold_requests_and_waiting_requests_mesh_wide() -> None:
    members = [
        member(A, entry(ReplicaState.READY, queue=3)),
        member(B, entry(ReplicaState.DRAINING, queue=2)),
        member(C, entry(ReplicaState.STARTING, queue=7), waiting=4),  # starting: its queue is no demand
        member(NodeId("d"), entry(ReplicaState.READY, queue=5), Status.DEAD, waiting=9),  # dead: nothing
        member(ME, entry(ReplicaState.READY, queue=100), waiting=100),  # own gossip: stale, never read
    ]
    local = LocalReplica(ReplicaState.READY, in_flight=1)
    assert demand("sd", members, ME, local, waiting_here=2) == Demand(concurrency=6.0, waiting=6)
    assert demand("sd", members, ME, None, waiting_here=0) == Demand(concurrency=5.0, waiting=4)
    assert demand("other", members, ME, None, waiting_here=0) == Demand(0.0, 0)


def test_nodes_whose_replica_failed_sit_out_this_node_too_when_it_failed_here() -> None:
    members = [
        member(A, entry(ReplicaState.FAILED, error="boom")),
        member(B, entry(ReplicaState.READY)),
        member(C, entry(ReplicaState.FAILED), Status.LEFT),
    ]
    assert excluded("sd", members, ME, sitting_out_here=None) == {A: SITTING_OUT}
    assert excluded("sd", members, ME, sitting_out_here="") == {A: SITTING_OUT, ME: SITTING_OUT}


def test_nodes_that_may_not_run_the_app_sit_out_and_say_so_apart_from_failed_setups() -> None:
    refused = cannot_run_here("app 'x.py:X': x.py is outside this node's app folders")
    members = [
        member(A, entry(ReplicaState.FAILED, error=refused)),
        member(B, entry(ReplicaState.FAILED, error="ImportError: no torch")),
        member(C, entry(ReplicaState.READY, error=refused)),  # serving: not sitting out, whatever it says
    ]
    assert excluded("sd", members, ME, sitting_out_here=None) == {A: CANNOT_RUN, B: SITTING_OUT}
    assert excluded("sd", members, ME, sitting_out_here=refused)[ME] == CANNOT_RUN
    assert excluded("sd", members, ME, sitting_out_here="setup timed out")[ME] == SITTING_OUT
    # The reason survives gossip's cut to MAX_ERROR_CHARS: the marker is at the front.
    long = ReplicaEntry.failed(cannot_run_here("x" * 1000))
    assert excluded("sd", [member(A, long)], ME, sitting_out_here=None) == {A: CANNOT_RUN}


def test_unschedulable_names_nodes_that_may_not_run_the_app() -> None:
    members = [member(A, entry(ReplicaState.FAILED, error=cannot_run_here("no module named 'x'")))]
    pool = [HostNode(A), HostNode(B)]
    placed = plan("sd", 2, pool, Requirements(), excluded=excluded("sd", members, ME, sitting_out_here=None))
    assert placed.hosts == (B,)
    assert placed.unschedulable is not None and f"1 node(s): {CANNOT_RUN}" in placed.unschedulable


def test_pinned_and_ready_nodes_take_this_nodes_own_replica_from_what_it_knows_now() -> None:
    members = [
        member(A, entry(ReplicaState.READY, pinned=True)),
        member(B, entry(ReplicaState.STANDBY)),
        member(ME, entry(ReplicaState.STARTING, pinned=False)),  # gossiped before it became ready
    ]
    local = LocalReplica(ReplicaState.READY, pinned=True)
    assert pinned_nodes("sd", members, ME, local) == {A, ME}
    assert pinned_nodes("sd", members, ME, None) == {A}
    assert ready_nodes("sd", members, ME, local) == {A, ME}
    assert ready_nodes("sd", members, ME, LocalReplica(ReplicaState.STANDBY)) == {A}


def test_an_autoscaler_starts_from_the_replicas_running_or_starting_on_live_nodes() -> None:
    members = [
        member(A, entry(ReplicaState.READY)),
        member(B, entry(ReplicaState.STARTING)),
        member(C, entry(ReplicaState.STANDBY)),
        member(ME, entry(ReplicaState.READY)),
        member(NodeId("d"), entry(ReplicaState.READY), Status.DEAD),
    ]
    assert running_count("sd", members) == 3


def test_serving_anywhere_sees_ready_replicas_here_or_on_live_peers_only() -> None:
    assert serving_anywhere("sd", [member(A, entry(ReplicaState.READY))], ME, None)
    assert serving_anywhere("sd", [], ME, LocalReplica(ReplicaState.READY))
    assert not serving_anywhere("sd", [member(A, entry(ReplicaState.READY), Status.DEAD)], ME, None)
    assert not serving_anywhere("sd", [member(A, entry(ReplicaState.STANDBY))], ME, None)
    assert not serving_anywhere("sd", [], ME, LocalReplica(ReplicaState.STARTING))


@pytest.mark.parametrize(
    ("spec", "members", "local", "placed", "expected"),
    [
        (SPEC, [member(A, entry(ReplicaState.STARTING))], None, None, Prospect.COMING),
        (SPEC, [member(A, entry(ReplicaState.STANDBY))], None, None, Prospect.COMING),
        (SPEC, [], entry(ReplicaState.STARTING), None, Prospect.COMING),
        # A replica coming counts even before the declaration arrived here.
        (None, [member(A, entry(ReplicaState.READY))], None, None, Prospect.COMING),
        (None, [], None, None, Prospect.UNKNOWN),
        (None, [member(A, entry(ReplicaState.DRAINING))], None, None, Prospect.UNKNOWN),
        (DeploymentSpec("x.py:X", min_replicas=0, max_replicas=0), [], None, None, Prospect.PINNED_ONLY),
        (SPEC, [], None, Plan((), (), "no node has a GPU"), Prospect.UNSCHEDULABLE),
        # Some nodes can host it even though others cannot: the replica is about to start.
        (SPEC, [], None, Plan((A,), (), "1 node(s): no GPU"), Prospect.SCALING_UP),
        # A failed node is no prospect, but placement has another host about to start one.
        (SPEC, [member(A, entry(ReplicaState.FAILED))], None, Plan((B,), (), None), Prospect.SCALING_UP),
        (SPEC, [member(A, entry(ReplicaState.READY), Status.DEAD)], None, None, Prospect.SCALING_UP),
    ],
)
def test_a_request_waits_only_for_a_replica_that_is_coming_or_about_to_be_placed(
    spec: DeploymentSpec | None,
    members: list[Member],
    local: ReplicaEntry | None,
    placed: Plan | None,
    expected: Prospect,
) -> None:
    assert prospect("sd", spec, members, ME, local, placed) == expected


RETRYING = entry(ReplicaState.STARTING, setup_failures=1, error="setup failed: AppLoadError: no 'Ecko'")
PINNED_ONLY = DeploymentSpec("x.py:X", min_replicas=0, max_replicas=0)


@pytest.mark.parametrize(
    ("spec", "members", "local", "placed", "expected"),
    [
        # Starting again after a failed setup is no cold start: fail at once, here or anywhere.
        (SPEC, [member(A, RETRYING)], None, None, Prospect.FAILED_TO_START),
        (SPEC, [member(A, RETRYING)], None, Plan((A,), (), None), Prospect.FAILED_TO_START),
        (SPEC, [], RETRYING, Plan((ME,), (), None), Prospect.FAILED_TO_START),
        (SPEC, [member(A, entry(ReplicaState.FAILED, error="held"))], None, None, Prospect.FAILED_TO_START),
        # A pinned replica that keeps failing: the cause, not "no pinned replica is running".
        (PINNED_ONLY, [member(A, RETRYING)], None, Plan((A,), (), None), Prospect.FAILED_TO_START),
        # Every node sat it out: the cause beats placement's "0 of N nodes can host it".
        (
            SPEC,
            [member(A, ReplicaEntry.failed("e"))],
            ReplicaEntry.failed("e"),
            Plan((), (), "0 of 2"),
            Prospect.FAILED_TO_START,
        ),
        # But a request waits while any replica starts for the first time, or another host will.
        (SPEC, [member(A, RETRYING), member(B, entry(ReplicaState.STARTING))], None, None, Prospect.COMING),
        (SPEC, [member(A, RETRYING)], entry(ReplicaState.STANDBY), None, Prospect.COMING),
        (SPEC, [member(A, RETRYING)], None, Plan((A, B), (), None), Prospect.SCALING_UP),
        # A failing replica on a node that is gone says nothing; an unknown name stays unknown.
        (SPEC, [member(A, RETRYING, Status.DEAD)], None, Plan((B,), (), None), Prospect.SCALING_UP),
        (None, [member(A, RETRYING)], None, None, Prospect.UNKNOWN),
    ],
)
def test_a_request_fails_at_once_when_every_replica_it_could_wait_for_failed_to_start(
    spec: DeploymentSpec | None,
    members: list[Member],
    local: ReplicaEntry | None,
    placed: Plan | None,
    expected: Prospect,
) -> None:
    assert prospect("sd", spec, members, ME, local, placed) == expected


def test_the_failure_names_a_setup_error_this_nodes_first_before_a_node_that_may_not_run_the_app() -> None:
    refused = ReplicaEntry.failed(cannot_run_here("x.py is outside this node's app folders"))
    members = [
        member(A, refused),
        member(C, entry(ReplicaState.STARTING, setup_failures=2, error="setup failed: C's error")),
        member(B, entry(ReplicaState.FAILED, error="setup failed: B's error")),
        member(NodeId("d"), entry(ReplicaState.READY, error="worker exited with code 9; restarting")),
    ]
    assert failure("sd", members, ME, None) == "sd failed to start: setup failed: B's error"
    assert failure("sd", members, ME, RETRYING) == f"sd failed to start: {RETRYING.error}"
    assert failure("sd", [member(A, refused)], ME, None) == f"sd failed to start: {refused.error}"
    assert (
        failure("sd", [member(A, entry(ReplicaState.FAILED))], ME, None)
        == "sd failed to start: no error given"
    )


def test_a_retrying_replica_is_failing_a_first_start_or_a_serving_one_is_not() -> None:
    assert RETRYING.failing and ReplicaEntry.failed("e").failing
    assert not entry(ReplicaState.STARTING).failing
    assert not entry(ReplicaState.READY, setup_failures=1).failing  # a serving replica serves


@given(
    st.lists(
        st.tuples(
            st.sampled_from(list(ReplicaState)),
            st.integers(0, 50),
            st.sampled_from([Status.ALIVE, Status.SUSPECT, Status.DEAD, Status.LEFT]),
        ),
        max_size=8,
    )
)
def test_demand_never_counts_a_node_that_is_gone_or_a_replica_that_holds_nothing(
    rows: list[tuple[ReplicaState, int, Status]],
) -> None:
    members = [
        member(NodeId(f"n{i}"), entry(state, queue=queue), status)
        for i, (state, queue, status) in enumerate(rows)
    ]
    expected = sum(
        queue
        for state, queue, status in rows
        if status in (Status.ALIVE, Status.SUSPECT) and state in (ReplicaState.READY, ReplicaState.DRAINING)
    )
    assert demand("sd", members, ME, None, 0).concurrency == expected
