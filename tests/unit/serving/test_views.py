"""What GET /v1/deployments shows: desired, min, max and pinned replicas agree, or a note says why."""

from __future__ import annotations

from meshnode.mesh.autoscale import Autoscaler, Decision
from meshnode.mesh.deployment import Autoscaling, DeploymentSpec
from meshnode.mesh.member import Member
from meshnode.mesh.metadata import NodeMeta
from meshnode.mesh.placement import Plan
from meshnode.mesh.prewarm import Forecast
from meshnode.mesh.records import Record
from meshnode.mesh.replica_state import ReplicaEntry, ReplicaState
from meshnode.mesh.types import Address, NodeId, Status
from meshnode.serving.views import PINNED_ONLY_DOWN, Outcome, deployment_view

ME, EDGE = NodeId("me"), NodeId("edge")
ECHO = "meshnode.apps.echo:Echo"
# What `meshnode join --deploy NAME=APP` declares when the mesh does not know NAME (stamp 0).
PINNED_ONLY = Record("echo", 0, EDGE, DeploymentSpec(ECHO, min_replicas=0, max_replicas=0))


def member(node: NodeId, status: Status, replicas: dict[str, ReplicaEntry]) -> Member:
    meta = NodeMeta(name=str(node), replicas=replicas)
    return Member(node, Address(f"{node}:1"), 0, status, 1, meta, since=0.0)


def outcome_after_demand(record: Record, pinned: tuple[NodeId, ...]) -> Outcome:
    """This node's decision after requests reached the pinned replica (demand seen by the autoscaler)."""
    assert record.spec is not None
    scaler = Autoscaler(record.spec, now=0.0, current=len(pinned))
    decision = scaler.observe(1.0, concurrency=1.0)
    extra = max(decision.desired - len(pinned), 0)
    hosts = (*pinned, *([ME] if extra else []))
    return Outcome(decision, Plan(hosts, (), None))


def view(record: Record, members: list[Member], pinned: tuple[NodeId, ...]) -> dict[str, object]:
    outcome = outcome_after_demand(record, pinned)
    return deployment_view(record, members, me=ME, local=None, outcome=outcome, waiting=0)


def test_a_pinned_only_deployment_counts_its_pinned_replica_and_says_why_desired_is_above_max() -> None:
    edge = member(EDGE, Status.ALIVE, {"echo": ReplicaEntry(ReplicaState.READY, pinned=True)})
    shown = view(PINNED_ONLY, [member(ME, Status.ALIVE, {}), edge], pinned=(EDGE,))
    assert (shown["min_replicas"], shown["max_replicas"], shown["pinned"]) == (0, 0, 1)
    assert (shown["desired"], shown["ready"], shown["missing"]) == (1, 1, None)
    assert shown["placement"] == {"hosts": ["edge"], "backups": []}
    assert "pinned only" in str(shown["note"]) and "max 0" in str(shown["note"])


def test_a_pinned_only_deployment_whose_host_died_wants_no_replacement_and_says_so() -> None:
    edge = member(EDGE, Status.DEAD, {"echo": ReplicaEntry(ReplicaState.READY, pinned=True)})
    shown = view(PINNED_ONLY, [member(ME, Status.ALIVE, {}), edge], pinned=())
    assert (shown["desired"], shown["pinned"], shown["ready"], shown["replicas"]) == (0, 0, 0, [])
    assert shown["placement"] == {"hosts": [], "backups": []}
    assert shown["missing"] == PINNED_ONLY_DOWN
    assert shown["note"] is None


def test_pinned_replicas_within_the_bounds_need_no_note() -> None:
    declared = Record("echo", 5, ME, DeploymentSpec(ECHO, min_replicas=2, max_replicas=2))
    edge = member(EDGE, Status.ALIVE, {"echo": ReplicaEntry(ReplicaState.READY, pinned=True)})
    mine = member(ME, Status.ALIVE, {})
    shown = deployment_view(
        declared,
        [mine, edge],
        me=ME,
        local=ReplicaEntry(ReplicaState.READY),
        outcome=outcome_after_demand(declared, (EDGE,)),
        waiting=0,
    )
    assert (shown["desired"], shown["pinned"], shown["ready"], shown["note"]) == (2, 1, 2, None)


def test_a_loading_replica_shows_its_progress_and_is_counted_as_loading() -> None:
    record = Record("sd", 1, ME, DeploymentSpec("meshnode.apps.text_to_image:TextToImage", model="tiny-sd"))
    loading = ReplicaEntry(ReplicaState.LOADING, progress=0.5)
    members = [member(ME, Status.ALIVE, {}), member(EDGE, Status.ALIVE, {"sd": loading})]
    view = deployment_view(record, members, me=ME, local=None, outcome=None, waiting=0)
    assert "1 loading the model" in (view["missing"] or "")
    assert view["replicas"] == [{"node": "edge", "status": "loading", "pinned": False, "progress": 0.5}]


def test_a_prewarm_shows_where_why_and_the_forecast_and_none_when_off() -> None:
    spec = DeploymentSpec(ECHO, min_replicas=1, max_replicas=3, autoscaling=Autoscaling(prewarm=True))
    record = Record("echo", 5, ME, spec)
    members = [member(ME, Status.ALIVE, {}), member(EDGE, Status.ALIVE, {})]
    forecast = Forecast(2, 1, 4.5, 0.3, 12.0, "demand rising 0.3/s: ...")
    outcome = Outcome(Decision(1, 1, 1.2), Plan((ME,), (EDGE,), None), forecast)
    shown = deployment_view(record, members, me=ME, local=None, outcome=outcome, waiting=0)
    autoscaling = shown["autoscaling"]
    assert autoscaling["prewarm"] is True and shown["desired"] == 1
    assert autoscaling["prewarming"] == {"replicas": 2, "node": "edge", "reason": "demand rising 0.3/s: ..."}
    assert autoscaling["forecast"] == {"predicted_concurrency": 4.5, "slope_per_s": 0.3, "horizon_s": 12.0}
    calm = Outcome(Decision(1, 1, 1.2), Plan((ME,), (), None), Forecast(1, 1, 1.0, 0.0, 10.0, None))
    shown = deployment_view(record, members, me=ME, local=None, outcome=calm, waiting=0)
    assert shown["autoscaling"]["prewarming"] is None
    off = Record("echo", 5, ME, DeploymentSpec(ECHO))
    shown = deployment_view(off, members, me=ME, local=None, outcome=calm, waiting=0)
    assert shown["autoscaling"]["prewarm"] is False and shown["autoscaling"]["forecast"] is None
