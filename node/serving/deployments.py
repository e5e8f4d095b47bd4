"""Leaderless placement on this node: runs the autoscaler and placement, starts and stops its replicas.

Every node runs the same loop over the same gossiped view (``mesh/records.py`` for the deployment
table, member metadata for devices, replicas and demand) and acts only on itself:

1. ``decisions.py`` decides: the autoscaler (``mesh/autoscale.py``) turns the deployment's gossiped
   demand into ``desired``, the pre-warm forecast (``mesh/prewarm.py``) may add one warm backup for
   the replica it will soon want, and placement (``mesh/placement.py``) ranks the live eligible
   nodes: pinned replicas first, then the top of the ranking host, the next ``backups`` wait warm;
2. ``placement.action_for`` says what this node does about its own replica: start, promote,
   demote, stop (make before break: only once every current host serves), replace it when the app
   changed, or give up on it when its setup keeps failing, and this shell carries that out through
   the replica table (``replicas.py``). Before a start it checks that this node may run the app
   at all (``inference/app_policy.py``); one it may not run is never imported here: the node sits
   the deployment out, gossiped as ``failed`` with the reason, and the next node in rank takes it.

The loop runs every ``placement_interval_s`` and at once on a trigger (a record, a change to the view's
roster, not load alone: ``mesh/view_versions.py``; a request waiting for a cold start), at
most every ``placement_min_round_gap_s``. A round skips the deployments that nothing changed
(``decisions.py``), and one that runs long yields to the event loop every ``_ROUND_SLICE_S``,
reading the members afresh after. It also holds requests that arrive while no replica is ready
(``cold_start.py``), and answers ``GET /v1/deployments`` (``views.py``).

Pinned replicas (``--deploy NAME=APP``) are started at once and never stopped here; the name is
declared at stamp 0 (``records.py``) with min and max 0, so pinned replicas alone serve it until
someone declares it deliberately.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..config import AgentConfig
from ..errors import MeshnodeError
from ..inference.app_policy import AppPolicy, refusal
from ..membership.runner import GossipRunner
from ..mesh import replica_view
from ..mesh.deployment import DeploymentSpec
from ..mesh.member import Member
from ..mesh.placement import Action, action_for
from ..mesh.records import Record
from ..mesh.replica_index import ReplicaIndex
from ..mesh.types import NodeId
from .cold_start import ColdStarts, refusal_of
from .decisions import Decisions
from .plans import HostMemory, HostSet, with_app_needs
from .replica import Replica
from .replicas import Replicas
from .views import Outcome, ViewInputs, stats_of, view_of

__all__ = ["Deployments"]

log = logging.getLogger(__name__)

# A round yields to the event loop after this long, so it never holds a probe's answer or a request
# for longer (a first round over 1,000 deployments takes ~30 ms on a slow core).
_ROUND_SLICE_S = 0.005


class Deployments:
    """This node's share of leaderless placement, and the view of every deployment."""

    def __init__(
        self,
        *,
        node_id: NodeId,
        config: AgentConfig,
        pinned: dict[str, str],
        replicas: Replicas,
        membership: GossipRunner,
        publish: Callable[[], None],
        persist: Callable[[Record], None],
        forget: Callable[[list[str]], None],
    ) -> None:
        self.node_id = node_id
        self.pinned = pinned
        self._config = config
        self._replicas = replicas
        self._membership = membership
        self._publish = publish
        self._persist = persist
        self._forget = forget
        # Which apps may run here (``inference/app_policy.py``): checked on PUT and before a start.
        self.app_policy = AppPolicy.build(config.app_dirs, config.allow_external_apps, pinned=pinned.values())
        # Requests held here until a replica is ready (gossiped as NodeMeta.waiting).
        self.cold_starts = ColdStarts(
            queue_size=config.cold_start_queue_size,
            unknown_grace_s=config.unknown_deployment_grace_s,
            serving=self._serving_anywhere,
            refusal=self._refusal,
            on_demand=self._on_demand,
        )
        self.waiting = self.cold_starts.waiting
        self._started_at: float | None = None
        # What placement did here, for /metrics: start, promote, demote, stop, give_up.
        self.actions: collections.Counter[str] = collections.Counter()
        self._decisions = Decisions(node_id)
        self._outcomes = self._decisions.outcomes
        self._due = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_sweep = 0.0
        self._seen_roster = -1  # the view's roster version at the last trigger
        self._hosts_roster = -1  # and at the last round's host set
        self._hosts: HostSet | None = None
        self._host_of: HostMemory = {}

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, saved: Iterable[Record]) -> None:
        """Restore saved records, declare and start pinned replicas, then run the loop."""
        for record in saved:
            self._membership.merge_record(record)
        for name, app in self.pinned.items():
            # Stamp 0 loses to any deliberate declaration, here or anywhere in the mesh.
            implicit = Record(name, 0, self.node_id, DeploymentSpec(app, min_replicas=0, max_replicas=0))
            self._membership.merge_record(implicit)
            await self._replicas.start(name, app, pinned=True)
        self._started_at = asyncio.get_running_loop().time()
        self._task = asyncio.create_task(self._run(), name="placement")

    async def stop(self) -> None:
        """Stop the loop (replicas are stopped by their table, after the node has left)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # -- triggers --------------------------------------------------------------------------

    def poke(self) -> None:
        """Re-run placement now."""
        self._due.set()

    def on_record(self, record: Record) -> None:
        """A deployment record won here: persist it and re-plan."""
        self._persist(record)
        self.cold_starts.view_changed()  # a request may be waiting for this very declaration
        self.poke()

    def on_view(self) -> None:
        """Members or their metadata changed: wake cold-start waiters; re-plan unless only load moved."""
        self.cold_starts.view_changed()
        if self._membership.roster_version != self._seen_roster:
            self._seen_roster = self._membership.roster_version
            self.poke()  # else the round every placement_interval_s samples the load

    # -- declarations ----------------------------------------------------------------------

    def declare(self, name: str, spec: DeploymentSpec | None) -> Record | None:
        """Declare, change or (spec None) remove a deployment mesh-wide; None if unknown to remove.

        What the app needs of a node (``with_app_needs``: a container runtime) goes into the spec.
        """
        held = self._membership.record(name)
        if spec is None and (held is None or held.removed):
            return None
        spec = with_app_needs(spec) if spec is not None else None
        return self._membership.declare(name, spec, int(time.time() * 1000))

    def record(self, name: str) -> Record | None:
        """The winning record of `name`, tombstone or not."""
        return self._membership.record(name)

    def known(self, name: str) -> bool:
        """Whether `name` is declared (not removed) or some replica of it serves (pinned ones too)."""
        record = self._membership.record(name)
        return (record is not None and record.spec is not None) or self._serving_anywhere(name)

    def refusal(self, app: str) -> str | None:
        """Why this node may not run `app` (it is then never imported here), or None when it may."""
        return refusal(app, self.app_policy)

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._config.placement_interval_s):
                    await self._due.wait()
            self._due.clear()
            try:
                await self.reconcile(loop.time())
            except Exception:
                # A bug here must not stop placement for good: log it and try again next round.
                log.exception("placement round failed")
            # Triggers meanwhile coalesce into the next round.
            await asyncio.sleep(self._config.placement_min_round_gap_s)

    async def reconcile(self, now: float) -> None:
        """One round: decide every deployment, then start, promote, demote or stop replicas here."""
        membership = self._membership
        if now >= self._next_sweep:
            self._next_sweep = now + self._config.deployment_tombstone_sweep_s
            expired = membership.expire_records(
                int(time.time() * 1000), self._config.deployment_tombstone_ttl_s
            )
            if expired:
                self._forget(expired)
        if self._replicas.end_sit_outs(now):
            self._publish()  # this node may host those deployments again
        live_members = replica_view.live(membership.members())
        if membership.leaving:
            live_members = [m for m in live_members if m.node != self.node_id]
        # The live members' replicas by deployment, read once a round: O(members + replicas).
        index = ReplicaIndex.of(live_members, self.node_id)
        if membership.roster_version != self._hosts_roster:  # the live set, a device, labels, a store
            self._hosts_roster = membership.roster_version
            fresh = HostSet.of(live_members, self._host_of)
            if self._hosts != fresh:
                # Kept as one object while the live set does not change, so the plan cache recognises
                # it without hashing every node again.
                self._hosts = fresh
        hosts = self._hosts
        assert hosts is not None  # built in the first round
        records = {record.name: record for record in membership.live_records()}
        self._decisions.keep_only(records)
        # A node alone right after it started (its peers not heard from yet) decides but does not
        # act: otherwise a restarting node would start a replica of every deployment it knows.
        settled = (
            membership.has_peers()
            or now - (self._started_at or now) >= self._config.placement_startup_grace_s
        )
        slice_end = time.monotonic() + _ROUND_SLICE_S
        for name, record in records.items():
            spec = record.spec
            assert spec is not None
            # This node's sit-out, by its error: a failed setup, or an app it may not run.
            sits_out = self._replicas.sits_out(name, spec.app)
            untouched = not (sits_out or name in self._replicas or self.waiting[name] or index.mentions(name))
            if untouched and self._decisions.idle(name, spec, hosts, now):
                continue  # nothing about it changed, and this node has nothing to do about it
            here = self._replicas.entry(name) if sits_out else None
            outcome = self._decisions.decide(
                name,
                spec,
                index,
                hosts,
                now,
                local=self._replicas.local(name),
                waiting_here=self.waiting[name],
                sat_out=here.error if here is not None else None,
            )
            started = settled and await self._act(name, spec, outcome, index)
            if started or time.monotonic() >= slice_end:
                if not started:
                    await asyncio.sleep(0)  # a long round lets probes and requests through meanwhile
                # Gossip may have changed the members' metadata meanwhile: the rest of the round
                # reads them afresh, as a walk over them would.
                index = ReplicaIndex.of(live_members, self.node_id)
                slice_end = time.monotonic() + _ROUND_SLICE_S
        for replica in self._replicas:
            if replica.deployment not in records and not replica.pinned:
                self._stop(replica.deployment, "its deployment was removed")

    async def _act(self, name: str, spec: DeploymentSpec, outcome: Outcome, members: ReplicaIndex) -> bool:
        """Carry out this node's move for `name`; True when it awaited a start (the loop ran meanwhile)."""
        if self._replicas.stopping(name):
            return False  # wait for the old replica to be gone before starting another
        replica = self._replicas.get(name)
        local = self._replicas.local(name)
        started = False
        action = action_for(
            self.node_id,
            outcome.plan,
            has_replica=replica is not None,
            standby=replica is not None and replica.standby,
            pinned=replica is not None and replica.pinned,
            ready=replica_view.ready_nodes(name, members, self.node_id, local),
            app_changed=replica is not None and _runs(replica) != (spec.app, spec.model),
            setup_failures=replica.setup_failures if replica is not None else 0,
            setup_attempts=self._config.replica_setup_attempts,
        )
        match action:
            case Action.START | Action.START_BACKUP:
                if (why := self.refusal(spec.app)) is not None:
                    # Never imported here: sit it out like a failed setup, so the next node in rank
                    # takes it; checked again after the hold (an app folder may gain the file).
                    log.warning("placement: %s cannot run here: %s", name, why)
                    until = asyncio.get_running_loop().time() + self._config.replica_failed_hold_s
                    self._replicas.sit_out(name, spec.app, until, replica_view.cannot_run_here(why))
                    self.actions["give_up"] += 1
                    self._publish()
                    self.poke()
                    return False
                backup = action == Action.START_BACKUP
                log.info("placement: starting %s here (%s)", name, "backup" if backup else "host")
                await self._replicas.start(name, spec.app, standby=backup)
                started = True
            case Action.PROMOTE | Action.DEMOTE:
                self._replicas.set_standby(name, action == Action.DEMOTE)
            case Action.STOP:
                self._stop(name, "placement moved it elsewhere or scaled it down")
                return False
            case Action.REPLACE:
                self._stop(name, f"its app changed to {spec.app}")
                return False
            case Action.GIVE_UP if replica is not None:
                # It serves nothing, so it goes at once; the next node in rank gets its turn.
                until = asyncio.get_running_loop().time() + self._config.replica_failed_hold_s
                self._replicas.sit_out(name, spec.app, until, replica.last_error)
                self.actions["give_up"] += 1
                self._stop(name, f"its setup failed {replica.setup_failures} times: {replica.last_error}")
                return False
            case Action.NONE | Action.GIVE_UP:
                return False
        self.actions[action.value.removesuffix("_backup")] += 1
        return started

    def _stop(self, name: str, why: str) -> None:
        """Drain and stop this node's replica of `name` in the background, then re-plan."""
        if self._replicas.get(name) is None or self._replicas.stopping(name):
            return
        self.actions["stop"] += 1
        self._replicas.stop(name, why, then=self.poke)

    # -- cold start ------------------------------------------------------------------------

    async def wait_for_replica(self, name: str, deadline: float) -> None:
        """Hold a request until some replica of `name` serves (``cold_start.py``)."""
        await self.cold_starts.wait(name, deadline)

    def _serving_anywhere(self, name: str) -> bool:
        return replica_view.serving_anywhere(
            name, self._membership.members(), self.node_id, self._replicas.local(name)
        )

    def _on_demand(self) -> None:
        """The first request started waiting, or the last stopped: gossip it, re-plan."""
        self._publish()
        self.poke()

    def _refusal(self, name: str) -> MeshnodeError | None:
        """Why a request for `name` cannot wait for a replica, or None when it may."""
        record = self._membership.record(name)
        outcome = self._outcomes.get(name)
        plan = outcome.plan if outcome is not None else None
        members, local = self._membership.members(), self._replicas.entry(name)
        spec = record.spec if record is not None else None
        prospect = replica_view.prospect(name, spec, members, self.node_id, local, plan)
        return refusal_of(
            prospect, name, lambda: replica_view.failure(name, members, self.node_id, local), plan
        )

    # -- views for the HTTP API and /metrics -----------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Numbers for /metrics: per deployment desired, ready and waiting; placement actions."""
        by_name = stats_of(self.views(), self._outcomes, self._replicas.entry, self.node_id)
        return {"by_name": by_name, "actions": dict(self.actions)}

    def views(self) -> list[dict[str, Any]]:
        """Every declared deployment: spec, desired and actual replicas, where, and what is missing."""
        return [view_of(inputs) for inputs in self.view_inputs()]

    def view_inputs(self) -> list[ViewInputs]:
        """What each declared deployment's view reads, as values (the listing keeps JSON by them)."""
        # One pass over the members for all views, instead of a sort of every member per view.
        index = ReplicaIndex.of(self._membership.members(), self.node_id)
        return [self._inputs(record, index) for record in self._membership.live_records()]

    def view(self, name: str) -> dict[str, Any] | None:
        """One deployment's view, or None when it is not declared."""
        record = self._membership.record(name)
        return view_of(self._inputs(record)) if record is not None and record.spec is not None else None

    def _inputs(self, record: Record, index: ReplicaIndex | None = None) -> ViewInputs:
        outcome = self._outcomes.get(record.name)
        members: Iterable[Member] = self._membership.members()
        if index is not None:  # only the members this view shows or names
            placed = (*outcome.plan.hosts, *outcome.plan.backups) if outcome is not None else ()
            members = index.members_about(record.name, (self.node_id, record.origin, *placed))
        local, waiting = self._replicas.entry(record.name), self.waiting[record.name]
        return ViewInputs.of(record, members, me=self.node_id, local=local, outcome=outcome, waiting=waiting)


def _runs(replica: Replica) -> tuple[str, str | None]:
    """What a replica runs: its app and its model; a change of either is a new replica (make before break)."""
    return replica.app_ref, replica.model.name if replica.model is not None else None
