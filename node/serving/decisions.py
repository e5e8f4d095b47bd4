"""What this node decides for every deployment each round: desired replicas, a pre-warm, the plan.

The deciding half of leaderless placement (``deployments.py`` is the acting half). Per deployment,
from the gossiped view, the same way on every node:

1. the autoscaler (``mesh/autoscale.py``) turns the mesh-wide demand (``mesh/replica_view.demand``)
   into ``desired``;
2. the pre-warm forecast (``mesh/prewarm.py``, with ``autoscaling.prewarm``) reads the same demand's
   trend and says whether the autoscaler will want one more replica within a load time; the load
   time is watched in gossip (``LoadClock``: each replica's start to ready);
3. placement (``mesh/placement.py`` through the cache of ``plans.py``) ranks the live eligible
   nodes: the spec's ``backups`` plus the pre-warmed replica wait warm after the hosts, so the
   pre-warmed one is the node that hosts the next replica when the autoscaler asks for it.

State kept between rounds: one ``Autoscaler``, ``Prewarmer`` and ``LoadClock`` per deployment, and
the last ``Outcome`` (which ``GET /v1/deployments`` shows).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..mesh import replica_view
from ..mesh.autoscale import Autoscaler
from ..mesh.deployment import DeploymentSpec
from ..mesh.prewarm import LoadClock, Prewarmer
from ..mesh.types import NodeId
from .plans import HostSet, cached_plan, needs_of
from .views import Outcome

__all__ = ["Decisions"]


class _State:
    """One deployment's deciders, kept from round to round."""

    __slots__ = ("clock", "prewarmer", "scaler")

    def __init__(self, spec: DeploymentSpec, now: float, running: int) -> None:
        self.scaler = Autoscaler(spec, now, current=running or None)
        self.prewarmer = Prewarmer(spec)
        self.clock = LoadClock()


class Decisions:
    """Every deployment's autoscaler, pre-warm forecast and plan, as this node last decided them."""

    def __init__(self, node_id: NodeId) -> None:
        self.node_id = node_id
        self.outcomes: dict[str, Outcome] = {}
        self._states: dict[str, _State] = {}

    def keep_only(self, names: Iterable[str]) -> None:
        """Forget the deployments not in `names` (removed ones)."""
        live = set(names)
        for name in [name for name in self._states if name not in live]:
            del self._states[name]
            self.outcomes.pop(name, None)

    def decide(
        self,
        name: str,
        spec: DeploymentSpec,
        members: replica_view.View,
        hosts: HostSet,
        now: float,
        *,
        local: replica_view.LocalReplica | None,
        waiting_here: int,
        sat_out: str | None,
    ) -> Outcome:
        """One round's decision for `name`; `sat_out` is this node's sit-out error, if it sits out.

        `members` are the live members, or (in a round over every deployment) their ``ReplicaIndex``,
        built once for the round: the decision is the same, without a walk over every member.
        """
        state = self._states.get(name)
        if state is None:
            running = replica_view.running_count(name, members)
            state = self._states[name] = _State(spec, now, running)
        elif state.scaler.spec != spec:
            state.scaler.respec(spec)
            state.prewarmer.respec(spec)
        demand = replica_view.demand(name, members, self.node_id, local, waiting_here)
        decision = state.scaler.observe(now, demand.concurrency, demand.waiting)
        state.clock.observe(now, replica_view.states(name, members, self.node_id, local))
        forecast = state.prewarmer.observe(
            now, demand.concurrency + demand.waiting, decision.desired, state.clock.horizon_s(spec)
        )
        placed = cached_plan(
            name,
            decision.desired,
            hosts,
            needs_of(spec),
            replica_view.pinned_nodes(name, members, self.node_id, local),
            spec.backups + forecast.extra,
            spec.spread,
            tuple(sorted(replica_view.excluded(name, members, self.node_id, sat_out).items())),
        )
        outcome = self.outcomes[name] = Outcome(decision, placed, forecast)
        return outcome
