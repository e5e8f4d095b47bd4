"""What ``GET /v1/deployments`` shows: one deployment as this node sees it, built from its view.

Pure functions over the gossiped members and this node's own replica, kept apart from the placement
loop (``deployments.py``) so the loop reads as decisions and this reads as the API's shape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..mesh.autoscale import Decision
from ..mesh.member import Member
from ..mesh.placement import Plan
from ..mesh.prewarm import Forecast
from ..mesh.records import Record
from ..mesh.replica_state import ReplicaEntry, ReplicaState
from ..mesh.types import NodeId, Status

__all__ = ["PINNED_ONLY_DOWN", "Outcome", "Shown", "ViewInputs", "deployment_view", "stats_of", "view_of"]

_LIVE = (Status.ALIVE, Status.SUSPECT)
# Why a deployment declared only by `--deploy` serves nowhere (the 503 its requests get says so too).
PINNED_ONLY_DOWN = "runs only where it is pinned (meshnode join --deploy), and no pinned replica is running"


@dataclass(frozen=True)
class Outcome:
    """The last decision for one deployment on this node: the autoscaler's, the pre-warm's, placement's."""

    decision: Decision
    plan: Plan
    forecast: Forecast | None = None


class Shown(NamedTuple):
    """What a view reads of one member: its id, name and status, and its replica of the deployment."""

    node: NodeId
    name: str
    status: Status
    entry: ReplicaEntry | None  # this node's own: its fresher local entry, not its gossiped one


@dataclass(frozen=True)
class ViewInputs:
    """Everything one deployment's view reads, as immutable values: equal inputs, equal view.

    ``GET /v1/deployments`` keeps each view's JSON with its inputs and renders it again only when
    they compare unequal (``node/http/rendered.py``); a render that yields to the event loop
    midway still shows one moment of the view, since nothing here points at anything mutable.
    """

    record: Record
    members: tuple[Shown, ...]  # in the members' order
    outcome: Outcome | None
    waiting: int

    @classmethod
    def of(
        cls,
        record: Record,
        members: Iterable[Member],
        *,
        me: NodeId,
        local: ReplicaEntry | None,
        outcome: Outcome | None,
        waiting: int,
    ) -> ViewInputs:
        """The inputs of `record`'s view from `members` (this node is `me`, its own entry `local`)."""
        name = record.name
        shown = tuple(
            Shown(m.node, m.meta.name, m.status, local if m.node == me else m.meta.replicas.get(name))
            for m in members
        )
        return cls(record, shown, outcome, waiting)


def deployment_view(
    record: Record,
    members: Iterable[Member],
    *,
    me: NodeId,
    local: ReplicaEntry | None,
    outcome: Outcome | None,
    waiting: int,
) -> dict[str, Any]:
    """One deployment as ``GET /v1/deployments`` shows it, from this node's view.

    `local` is this node's own entry for it, fresher than what it last gossiped: its replica's, or
    ``failed`` when it sits the deployment out.
    """
    return view_of(ViewInputs.of(record, members, me=me, local=local, outcome=outcome, waiting=waiting))


def view_of(inputs: ViewInputs) -> dict[str, Any]:
    """One deployment's view from its inputs (pure: the same inputs give the same view)."""
    record, outcome, waiting = inputs.record, inputs.outcome, inputs.waiting
    spec = record.spec
    assert spec is not None
    wire = spec.wire  # built once per spec: asdict's deep copy was most of a view's cost
    names = {m.node: m.name for m in inputs.members}
    replicas = []
    for member in sorted(inputs.members, key=lambda m: m.name):
        if member.status not in _LIVE:
            continue
        entry = member.entry
        if entry is None:
            continue
        replica: dict[str, Any] = {
            "node": member.name,
            "status": entry.state.value,
            "pinned": entry.pinned,
        }
        if entry.error:
            replica["error"] = entry.error
        if entry.serves:  # the OpenAI routes that reach it (``Predictor.serves``)
            replica["serves"] = list(entry.serves)
        if entry.state is ReplicaState.LOADING:  # pulling its model from peers: how far
            replica["progress"] = entry.progress
        replicas.append(replica)
    hosts = outcome.plan.hosts if outcome else ()
    pinned = sum(1 for r in replicas if r["pinned"])
    # Pinned replicas count toward the replicas (placement hosts the rest), and placement never
    # stops them: `desired` is the autoscaler's count within min..max, or the pinned ones if more.
    desired = max(outcome.decision.desired if outcome else spec.min_replicas, len(hosts), pinned)
    serving = sum(1 for r in replicas if r["status"] == ReplicaState.READY)
    unschedulable = outcome.plan.unschedulable if outcome else None
    missing = unschedulable
    if missing is None and serving < desired:
        missing = _why_short(serving, desired, replicas)
    if missing is None and spec.max_replicas == 0 and not pinned and not serving:
        missing = PINNED_ONLY_DOWN
    errors = sorted({f"{r['node']}: {r['error']}" for r in replicas if r.get("error")})
    if missing is not None and errors:
        missing += f" ({'; '.join(errors[:3])})"
    return {
        "name": record.name,
        "app": spec.app,
        "min_replicas": spec.min_replicas,
        "max_replicas": spec.max_replicas,
        "desired": desired,
        "ready": serving,
        "pinned": pinned,
        "note": _pinned_note(spec.max_replicas, pinned, desired),
        "replicas": replicas,
        "unschedulable": unschedulable,
        "missing": missing,
        "placement": {
            "hosts": [names.get(node, node) for node in hosts],
            "backups": [names.get(node, node) for node in (outcome.plan.backups if outcome else ())],
        },
        "autoscaling": {
            **wire["autoscaling"],
            "mean_concurrency": round(outcome.decision.mean_concurrency, 3) if outcome else 0.0,
            "proposal": outcome.decision.proposal if outcome else spec.min_replicas,
            "waiting": waiting,
            "prewarm": spec.autoscaling.prewarm,
            "prewarm_horizon_s": spec.autoscaling.prewarm_horizon_s,
            "prewarming": _prewarming(outcome, spec.backups, names),
            "forecast": _forecast(outcome) if spec.autoscaling.prewarm else None,
        },
        "spec": wire,
        "declared_by": names.get(record.origin, record.origin),
        # Declared by --deploy at stamp 0 (pinned replicas only) rather than by a deliberate PUT.
        "implicit": record.stamp == 0,
    }


def _forecast(outcome: Outcome | None) -> dict[str, Any] | None:
    """The pre-warm predictor's numbers this round, prewarming or not."""
    if outcome is None or outcome.forecast is None:
        return None
    forecast = outcome.forecast
    return {
        "predicted_concurrency": round(forecast.predicted, 3),
        "slope_per_s": round(forecast.slope, 4),
        "horizon_s": round(forecast.horizon_s, 2),
    }


def _prewarming(outcome: Outcome | None, backups: int, names: dict[NodeId, str]) -> dict[str, Any] | None:
    """The pre-warm under way (``mesh/prewarm.py``): where, for how many replicas, and why; or None."""
    if outcome is None or outcome.forecast is None or not outcome.forecast.extra:
        return None
    forecast, placed = outcome.forecast, outcome.plan.backups
    # The pre-warm adds the last backup (the spec's own would wait warm anyway); None when no node
    # was left to take it.
    node = placed[-1] if len(placed) > backups else None
    return {
        "replicas": forecast.replicas,
        "node": names.get(node, node) if node is not None else None,
        "reason": forecast.reason,
    }


def _pinned_note(max_replicas: int, pinned: int, desired: int) -> str | None:
    """Why `desired` is above ``max_replicas``, when pinned replicas make it so.

    The counts are fields of their own, so deployments in the same case share the same words.
    """
    if desired <= max_replicas or not pinned:
        return None
    if max_replicas == 0:
        return (
            "pinned only (join --deploy): desired counts the pinned replicas; max 0 lets placement add none"
        )
    return "more pinned replicas than max: placement never stops a pinned one, and desired counts them all"


def _why_short(serving: int, desired: int, replicas: list[dict[str, Any]]) -> str:
    starting = sum(1 for r in replicas if r["status"] == ReplicaState.STARTING)
    loading = sum(1 for r in replicas if r["status"] == ReplicaState.LOADING)
    why = f"{serving} of {desired} ready" + (f"; {starting} starting" if starting else "")
    return why + (f"; {loading} loading the model" if loading else "")


def stats_of(
    views: Iterable[dict[str, Any]],
    outcomes: Mapping[str, Outcome],
    entry: Callable[[str], ReplicaEntry | None],
    me: NodeId,
) -> dict[str, dict[str, Any]]:
    """Per deployment, for /metrics: desired, ready and waiting, and this node's share of them."""
    by_name = {}
    for view in views:
        name = view["name"]
        local = entry(name)
        outcome = outcomes.get(name)
        wanted = outcome is not None and me in outcome.plan.hosts
        by_name[name] = {
            "desired": view["desired"],
            "ready": view["ready"],
            "waiting": view["autoscaling"]["waiting"],
            # This node's share, so a sum over nodes counts each replica once.
            "desired_here": int(wanted or (local is not None and local.pinned)),
            "ready_here": int(local is not None and local.state is ReplicaState.READY),
            "state_here": local.state.value if local is not None else "",
            "queue_here": local.queue if local is not None else 0,
        }
    return by_name
