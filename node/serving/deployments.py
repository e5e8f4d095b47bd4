"""Leaderless placement on this node: runs the autoscaler and placement, starts and stops its replicas.

Every node runs the same loop over the same gossiped view (``mesh/records.py`` for the deployment
table, member metadata for devices, replicas and demand) and acts only on itself:

1. the autoscaler (``mesh/autoscale.py``) turns the deployment's gossiped demand into ``desired``;
2. placement (``mesh/placement.py``) ranks the live eligible nodes: pinned replicas first, then
   the top of the ranking host, the next ``backups`` wait warm;
3. this node starts a replica when it is among the hosts or backups and has none, promotes its
   backup when it becomes a host, and stops (drains) a replica it no longer should run, but only
   once every current host reports ready: make before break, so a join, a scale-down or a healed
   partition never leaves the deployment with fewer serving replicas than it had.

The loop runs every ``placement_interval_s`` and at once on a trigger (a record, a view change, a
request waiting for a cold start). It also answers ``GET /v1/deployments`` and holds requests that
arrive while no replica is ready (``wait_for_replica``): bounded per deployment, each within its own
deadline, and counted in this node's gossiped ``waiting`` so every autoscaler sees the demand.

Pinned replicas (``--deploy NAME=APP``) are started at once and never stopped here; the name is
declared at stamp 0 (``records.py``) with min and max 0, so pinned replicas alone serve it until
someone declares it deliberately.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import NotFound, NotReady
from ..mesh.autoscale import Autoscaler
from ..mesh.deployment import DeploymentSpec
from ..mesh.effects import Effect
from ..mesh.member import Member
from ..mesh.membership import Membership
from ..mesh.placement import Action, HostNode, Plan, Requirements, action_for, host_of, plan
from ..mesh.records import Record
from ..mesh.types import NodeId, Status
from .cold_start import ColdStarts
from .replica import Replica
from .views import Outcome, deployment_view, entry_of, gossiped_state

__all__ = ["Deployments"]

log = logging.getLogger(__name__)

_LIVE = (Status.ALIVE, Status.SUSPECT)
# Gossiped replica states that hold requests (the autoscaler's demand) and that can serve soon.
_BUSY_STATES = ("ready", "draining")
_COMING_STATES = ("starting", "ready", "standby")
# Expired tombstones are swept this often.
_SWEEP_INTERVAL_S = 60.0
# Placement runs at most this often, however many triggers arrive (a large mesh changes its view
# many times a second as load reports come in).
_MIN_ROUND_GAP_S = 0.1
# Plans remembered (deployments x recent views).
_PLAN_CACHE_SIZE = 4096


@dataclass(frozen=True)
class _Failed:
    """A deployment this node sits out for a while: its app would not start here."""

    app: str
    until: float
    error: str


class Deployments:
    """This node's share of leaderless placement, and the view of every deployment."""

    def __init__(
        self,
        *,
        node_id: NodeId,
        pinned: dict[str, str],
        replicas: dict[str, Replica],
        make_replica: Callable[[str, str, bool], Replica],
        core: Callable[[], Membership | None],
        carry_out: Callable[[list[Effect]], None],
        publish: Callable[[], None],
        persist: Callable[[Record], None],
        forget: Callable[[list[str]], None],
        interval_s: float,
        queue_size: int,
        tombstone_ttl_s: float,
        setup_attempts: int = 3,
        failed_hold_s: float = 300.0,
        startup_grace_s: float = 0.0,
        unknown_grace_s: float = 0.0,
    ) -> None:
        self.node_id = node_id
        self.pinned = pinned
        self.replicas = replicas
        # Requests held here until a replica is ready (gossiped as NodeMeta.waiting).
        self.cold_starts = ColdStarts(
            queue_size=queue_size,
            unknown_grace_s=unknown_grace_s,
            serving=self._has_serving,
            check_coming=self._check_coming,
            on_demand=self._on_demand,
        )
        self.waiting = self.cold_starts.waiting
        self._make_replica = make_replica
        self._core = core
        self._carry_out = carry_out
        self._publish = publish
        self._persist = persist
        self._forget = forget
        self._interval_s = interval_s
        self._tombstone_ttl_s = tombstone_ttl_s
        self._setup_attempts = setup_attempts
        self._startup_grace_s = startup_grace_s
        self._started_at: float | None = None
        self._failed_hold_s = failed_hold_s
        # Deployments whose replica failed to start here: this node sits them out until `until`.
        self._failed: dict[str, _Failed] = {}
        # What placement did here, for /metrics: start, promote, demote, stop, give_up.
        self.actions: collections.Counter[str] = collections.Counter()
        self._scalers: dict[str, Autoscaler] = {}
        self._outcomes: dict[str, Outcome] = {}
        self._stopping: dict[str, asyncio.Task[None]] = {}
        self._due = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_sweep = 0.0
        self._hosts: _HostSet | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, saved: Iterable[Record]) -> None:
        """Restore saved records, declare and start pinned replicas, then run the loop."""
        core = self._core()
        assert core is not None
        for record in saved:
            core.merge_record(record)
        for name, app in self.pinned.items():
            # Stamp 0 loses to any deliberate declaration, here or anywhere in the mesh.
            implicit = Record(name, 0, self.node_id, DeploymentSpec(app, min_replicas=0, max_replicas=0))
            self._carry_out(core.merge_record(implicit))
            replica = self._make_replica(name, app, True)
            self.replicas[name] = replica
            await replica.start()
        self._started_at = asyncio.get_running_loop().time()
        self._task = asyncio.create_task(self._run(), name="placement")

    async def stop(self) -> None:
        """Stop the loop (replicas are stopped by the agent, after it has left)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*self._stopping.values(), return_exceptions=True)

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
        """Members or their metadata changed: wake cold-start waiters, re-plan."""
        self.cold_starts.view_changed()
        self.poke()

    # -- declarations ----------------------------------------------------------------------

    def declare(self, name: str, spec: DeploymentSpec | None) -> Record | None:
        """Declare, change or (spec None) remove a deployment mesh-wide; None if unknown to remove."""
        core = self._core()
        if core is None:
            raise NotReady("the agent is starting", retry_after_s=1.0)
        held = core.deployments.get(name)
        if spec is None and (held is None or held.removed):
            return None
        self._carry_out(core.declare(name, spec, int(time.time() * 1000)))
        return core.deployments.get(name)

    def record(self, name: str) -> Record | None:
        """The winning record of `name`, tombstone or not."""
        core = self._core()
        return core.deployments.get(name) if core is not None else None

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._due.wait()
            self._due.clear()
            try:
                await self.reconcile(loop.time())
            except Exception:
                # A bug here must not stop placement for good: log it and try again next round.
                log.exception("placement round failed")
            await asyncio.sleep(_MIN_ROUND_GAP_S)  # triggers meanwhile coalesce into the next round

    async def reconcile(self, now: float) -> None:
        """One round: decide every deployment, then start, promote, demote or stop replicas here."""
        core = self._core()
        if core is None:
            return
        table = core.deployments
        if now >= self._next_sweep:
            self._next_sweep = now + _SWEEP_INTERVAL_S
            expired = table.expire(int(time.time() * 1000), self._tombstone_ttl_s)
            if expired:
                self._forget(expired)
        expired = [name for name, failed in self._failed.items() if failed.until <= now]
        for name in expired:
            del self._failed[name]  # try this node again
        if expired:
            self._publish()
        live_members = [m for m in core.members.values() if m.status in _LIVE]
        if core.leaving:
            live_members = [m for m in live_members if m.node != self.node_id]
        # Sorted, so the same live set is the same tuple; kept as one object while it does not
        # change, so the plan cache below recognises it without hashing every node again.
        hosts = tuple(
            sorted(
                (host_of(m.node, m.meta.device, m.meta.region, m.meta.zone) for m in live_members),
                key=lambda host: host.node,
            )
        )
        if self._hosts is None or self._hosts.hosts != hosts:
            self._hosts = _HostSet(hosts)
        records = {record.name: record for record in table.live()}
        for name in [name for name in self._scalers if name not in records]:
            del self._scalers[name]
            self._outcomes.pop(name, None)
        # A node alone right after it started (its peers not heard from yet) decides but does not
        # act: otherwise a restarting node would start a replica of every deployment it knows.
        settled = core.has_peers() or now - (self._started_at or now) >= self._startup_grace_s
        for name, record in records.items():
            assert record.spec is not None
            outcome = self._decide(name, record.spec, live_members, self._hosts, now)
            self._outcomes[name] = outcome
            if settled:
                await self._act(name, record.spec, outcome.plan, live_members)
        for name, replica in list(self.replicas.items()):
            if name not in records and not replica.pinned:
                self._stop(name, "its deployment was removed")

    def _decide(
        self, name: str, spec: DeploymentSpec, members: list[Member], hosts: _HostSet, now: float
    ) -> Outcome:
        scaler = self._scalers.get(name)
        if scaler is None:
            running = sum(1 for m in members if gossiped_state(m, name) in ("ready", "starting"))
            scaler = self._scalers[name] = Autoscaler(spec, now, current=running or None)
        elif scaler.spec != spec:
            scaler.respec(spec)
        concurrency, waiting = self._demand(name, members)
        decision = scaler.observe(now, concurrency, waiting)
        placed = _plan(
            name,
            decision.desired,
            hosts,
            _needs(spec),
            frozenset(self._pinned_nodes(name, members)),
            spec.backups,
            spec.spread,
            tuple(sorted(self._excluded(name, spec, members).items())),
        )
        return Outcome(decision, placed)

    async def _act(self, name: str, spec: DeploymentSpec, placed: Plan, members: list[Member]) -> None:
        me = self.node_id
        local = self.replicas.get(name)
        if name in self._stopping:
            return  # wait for the old replica to be gone before starting another
        if local is not None and not local.pinned and local.app_ref != spec.app:
            self._stop(name, f"its app changed to {spec.app}")
            return
        if local is not None and not local.pinned and local.setup_failures >= self._setup_attempts:
            # It serves nothing, so it goes at once; the next node in rank gets its turn.
            until = asyncio.get_running_loop().time() + self._failed_hold_s
            self._failed[name] = _Failed(spec.app, until, local.last_error)
            self.actions["give_up"] += 1
            self._stop(name, f"its setup failed {local.setup_failures} times: {local.last_error}")
            return
        ready = {m.node for m in members if gossiped_state(m, name) == "ready"}
        action = action_for(
            me,
            placed,
            has_replica=local is not None,
            standby=local is not None and local.standby,
            pinned=local is not None and local.pinned,
            ready=ready,
        )
        match action:
            case Action.START | Action.START_BACKUP:
                replica = self._make_replica(name, spec.app, False)
                replica.standby = action == Action.START_BACKUP
                self.replicas[name] = replica
                log.info("placement: starting %s here (%s)", name, "backup" if replica.standby else "host")
                await replica.start()
                self._publish()
            case Action.PROMOTE if local is not None:
                local.set_standby(False)
            case Action.DEMOTE if local is not None:
                local.set_standby(True)
            case Action.STOP:
                self._stop(name, "placement moved it elsewhere or scaled it down")
                return
            case _:
                return
        self.actions[action.value.removesuffix("_backup")] += 1

    def _stop(self, name: str, why: str) -> None:
        """Drain and stop this node's replica of `name` in the background."""
        replica = self.replicas.get(name)
        if replica is None or name in self._stopping:
            return
        log.info("placement: stopping %s here: %s", name, why)
        self.actions["stop"] += 1

        async def drain_and_remove() -> None:
            try:
                await replica.stop()
            finally:
                if self.replicas.get(name) is replica:
                    del self.replicas[name]
                self._stopping.pop(name, None)
                self._publish()
                self.poke()

        self._stopping[name] = asyncio.create_task(drain_and_remove(), name=f"stop-{name}")

    # -- reading the view ------------------------------------------------------------------

    def _excluded(self, name: str, spec: DeploymentSpec, members: list[Member]) -> dict[NodeId, str]:
        """Nodes sitting out `name` because its replica failed to start there."""
        reason = "its replica failed to start there"
        excluded = {
            m.node: reason for m in members if m.node != self.node_id and gossiped_state(m, name) == "failed"
        }
        failed = self._failed.get(name)
        if failed is not None and failed.app == spec.app:
            excluded[self.node_id] = reason
        return excluded

    def failed_entries(self) -> dict[str, dict[str, Any]]:
        """Gossiped replica entries for deployments this node sits out (``NodeMeta.replicas``)."""
        return {name: {"state": "failed", "error": f.error[:200]} for name, f in self._failed.items()}

    def _pinned_nodes(self, name: str, members: list[Member]) -> set[NodeId]:
        pinned = {
            m.node for m in members if m.node != self.node_id and entry_of(m, name).get("pinned") is True
        }
        local = self.replicas.get(name)
        if local is not None and local.pinned:
            pinned.add(self.node_id)
        return pinned

    def _demand(self, name: str, members: list[Member]) -> tuple[float, int]:
        """Requests in flight at every replica, and requests held for a cold start, mesh-wide."""
        concurrency = 0.0
        waiting = self.waiting[name]
        for member in members:
            if member.node == self.node_id:
                continue
            entry = entry_of(member, name)
            if entry.get("state") in _BUSY_STATES and isinstance(entry.get("queue"), int):
                concurrency += entry["queue"]
            held = member.meta.waiting.get(name)
            if isinstance(held, int) and held > 0:
                waiting += held
        local = self.replicas.get(name)
        if local is not None:
            concurrency += local.in_flight
        return concurrency, waiting

    def _has_serving(self, name: str) -> bool:
        local = self.replicas.get(name)
        if local is not None and local.serving:
            return True
        core = self._core()
        return core is not None and any(
            m.status in _LIVE and m.node != self.node_id and gossiped_state(m, name) == "ready"
            for m in core.members.values()
        )

    # -- cold start ------------------------------------------------------------------------

    async def wait_for_replica(self, name: str, deadline: float) -> None:
        """Hold a request until some replica of `name` serves (``cold_start.py``)."""
        await self.cold_starts.wait(name, deadline)

    def _on_demand(self) -> None:
        """The first request started waiting, or the last stopped: gossip it, re-plan."""
        self._publish()
        self.poke()

    def _check_coming(self, name: str) -> None:
        """Raise NotFound or NotReady when no replica of `name` is coming; return when one is."""
        core = self._core()
        record = core.deployments.get(name) if core is not None else None
        coming = any(
            m.status in _LIVE and gossiped_state(m, name) in _COMING_STATES
            for m in (core.members.values() if core is not None else ())
        ) or (name in self.replicas)
        if coming:
            return
        if record is None or record.spec is None:
            raise NotFound(f"no deployment named {name!r} in the mesh")
        if record.spec.max_replicas == 0:
            raise NotReady(
                f"{name} runs only where it is pinned, and no pinned replica is running", retry_after_s=5.0
            )
        outcome = self._outcomes.get(name)
        if outcome is not None and outcome.plan.unschedulable and not outcome.plan.hosts:
            raise NotReady(f"{name} is unschedulable: {outcome.plan.unschedulable}", retry_after_s=30.0)

    def stats(self) -> dict[str, Any]:
        """Numbers for /metrics: per deployment desired, ready and waiting; placement actions."""
        by_name = {}
        for view in self.views():
            by_name[view["name"]] = {
                "desired": view["desired"],
                "ready": view["ready"],
                "waiting": view["autoscaling"]["waiting"],
            }
        return {"by_name": by_name, "actions": dict(self.actions)}

    # -- the view for GET /v1/deployments --------------------------------------------------

    def views(self) -> list[dict[str, Any]]:
        """Every declared deployment: spec, desired and actual replicas, where, and what is missing."""
        core = self._core()
        if core is None:
            return []
        return [self._view(record, core) for record in core.deployments.live()]

    def view(self, name: str) -> dict[str, Any] | None:
        """One deployment's view, or None when it is not declared."""
        core = self._core()
        record = core.deployments.get(name) if core is not None else None
        if core is None or record is None or record.spec is None:
            return None
        return self._view(record, core)

    def _view(self, record: Record, core: Membership) -> dict[str, Any]:
        return deployment_view(
            record,
            core.members.values(),
            me=self.node_id,
            local=self.replicas.get(record.name),
            failed=self.failed_entries().get(record.name),
            outcome=self._outcomes.get(record.name),
            waiting=self.waiting[record.name],
        )


class _HostSet:
    """The live hosts, hashed once: the plan cache's key part that is expensive to hash."""

    __slots__ = ("_hash", "hosts")

    def __init__(self, hosts: tuple[HostNode, ...]) -> None:
        self.hosts = hosts
        self._hash = hash(hosts)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _HostSet) and (other is self or other.hosts == self.hosts)


@functools.lru_cache(maxsize=_PLAN_CACHE_SIZE)
def _plan(
    name: str,
    desired: int,
    hosts: _HostSet,
    needs: Requirements,
    pinned: frozenset[NodeId],
    backups: int,
    spread: str | None,
    excluded: tuple[tuple[NodeId, str], ...],
) -> Plan:
    """``plan``, remembered.

    It hashes every live node per deployment, and its inputs change only when a member joins,
    leaves or changes device, not with every load report.
    """
    return plan(
        name,
        desired,
        hosts.hosts,
        needs,
        pinned=pinned,
        backups=backups,
        spread=spread,
        excluded=dict(excluded),
    )


def _needs(spec: DeploymentSpec) -> Requirements:
    resources = spec.resources
    return Requirements(
        device_kinds=frozenset(resources.device_kinds),
        min_memory_bytes=int(resources.min_memory_gb * 1e9),
        accelerator=resources.accelerator,
    )
