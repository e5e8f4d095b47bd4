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

Most deployments of a large mesh are idle most of the time: no replica, no demand, nothing gossiped
about them. Such a one is not decided again each round (``idle``): while the round's index does
not mention it, this node neither holds nor waits for it, and its spec and the live hosts are the
same objects as last round, its autoscaler and forecast only take their zero sample (what
``observe`` would do) and its outcome stays. A round over 1,000 idle deployments and 1,000 members
went from ~35 ms to ~3 ms; unit tests compare both ways on seeded random rounds. The plan, too, is
kept while its inputs are unchanged, before the cache of ``plans.py`` is asked.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..mesh import replica_view
from ..mesh.autoscale import Autoscaler
from ..mesh.deployment import DeploymentSpec
from ..mesh.placement import Plan
from ..mesh.prewarm import LoadClock, Prewarmer
from ..mesh.replica_index import ReplicaIndex
from ..mesh.types import NodeId
from .plans import HostSet, cached_plan, needs_of
from .views import Outcome

__all__ = ["Decisions"]


class _State:
    """One deployment's deciders, kept from round to round."""

    __slots__ = ("clock", "needs", "placed", "plan_inputs", "prewarmer", "quiet", "scaler", "spec")

    def __init__(self, spec: DeploymentSpec, now: float, running: int) -> None:
        self.scaler = Autoscaler(spec, now, current=running or None)
        self.prewarmer = Prewarmer(spec)
        self.clock = LoadClock()
        self.spec = spec
        self.needs = needs_of(spec)
        # The last plan and what it was computed from: most rounds change nothing a plan reads.
        self.plan_inputs: tuple[object, ...] | None = None
        self.placed: Plan | None = None
        # The last round saw nothing of it (no replica, demand or sit-out anywhere) and its deciders
        # were idle: with the same spec and hosts, the next such round decides the same (``idle``).
        self.quiet = False


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

    def idle(self, name: str, spec: DeploymentSpec, hosts: HostSet, now: float) -> bool:
        """Decide `name` at no cost when nothing about it can have changed; False: call ``decide``.

        Only for a deployment that this round's index does not mention, with no replica, no request
        waiting and no sit-out here (the caller checks those). If the last round found it so too,
        with its deciders idle, this node outside its plan and the same spec and hosts, its
        decision is the last one: its autoscaler and forecast take their zero sample (as
        ``decide`` would) and its outcome stays; this node has nothing to do about it.
        """
        state = self._states.get(name)
        if state is None or not state.quiet or state.spec is not spec or state.plan_inputs is None:
            return False
        if state.plan_inputs[1] is not hosts:
            return False
        state.scaler.idle_observe(now)
        state.prewarmer.idle_observe(now)
        return True

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
        elif state.spec is not spec and state.spec != spec:
            state.scaler.respec(spec)
            state.prewarmer.respec(spec)
            state.spec, state.needs = spec, needs_of(spec)
        else:
            state.spec = spec  # equal: compared by identity from now on
        demand = replica_view.demand(name, members, self.node_id, local, waiting_here)
        decision = state.scaler.observe(now, demand.concurrency, demand.waiting)
        state.clock.observe(now, replica_view.states(name, members, self.node_id, local))
        forecast = state.prewarmer.observe(
            now, demand.concurrency + demand.waiting, decision.desired, state.clock.horizon_s(spec)
        )
        pinned = replica_view.pinned_nodes(name, members, self.node_id, local)
        excluded = replica_view.excluded(name, members, self.node_id, sat_out)
        backups = spec.backups + forecast.extra
        inputs = (decision.desired, hosts, state.needs, pinned, backups, spec.spread, excluded)
        placed = state.placed
        if placed is None or not _same(inputs, state.plan_inputs):
            ruled_out = tuple(sorted(excluded.items()))
            placed = cached_plan(
                name, decision.desired, hosts, state.needs, pinned, backups, spec.spread, ruled_out
            )
        state.plan_inputs, state.placed = inputs, placed
        state.quiet = (
            isinstance(members, ReplicaIndex)
            and not members.mentions(name)
            and local is None
            and waiting_here == 0
            and sat_out is None
            and state.scaler.idle()
            and state.prewarmer.idle()
            and state.clock.idle()
            and self.node_id not in placed.hosts
            and self.node_id not in placed.backups
        )
        last = self.outcomes.get(name)
        if (
            last is not None
            and last.plan is placed
            and last.decision == decision
            and last.forecast == forecast
        ):
            return last  # the same decision as the last round's: keep its object (views key on it)
        outcome = self.outcomes[name] = Outcome(decision, placed, forecast)
        return outcome


def _same(inputs: tuple[object, ...], before: tuple[object, ...] | None) -> bool:
    """Whether a plan's inputs equal the last round's (the host set by identity first: it is kept)."""
    return before is not None and all(a is b or a == b for a, b in zip(inputs, before, strict=True))
