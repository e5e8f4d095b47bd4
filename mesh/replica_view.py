"""What the gossiped view says about one deployment's replicas: the inputs of this node's decisions.

Every node reads the same members (their gossiped ``ReplicaEntry`` per deployment, and the requests
each holds for a cold start) and decides for itself: how much demand the autoscaler sees, which
nodes sit a deployment out (its replica failed to start there, or the node may not run its app),
which replicas are pinned, whether a request may wait for a replica that is coming or should fail
at once because every replica that could serve failed to start (``prospect``). All pure: the
placement shell (``node/serving/deployments.py``) passes in the live members, this node's id and
what it knows of its own replica, which is fresher than what it last gossiped, so its own gossiped
entry is never read here.

Each function reads the members either as they are (one walk per call) or through a
``ReplicaIndex`` of them (``replica_index.py``: built once a round, then each call reads only the
deployment's own replicas), with the same answer; a placement round over every deployment uses the
index, so it costs O(members + replicas) instead of O(deployments x members).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeAlias

from .deployment import DeploymentSpec
from .member import Member
from .placement import Plan
from .replica_index import ReplicaIndex
from .replica_state import ReplicaEntry, ReplicaState
from .types import NodeId, Status

__all__ = [
    "CANNOT_RUN",
    "FAILED_RETRY_AFTER_S",
    "SITTING_OUT",
    "Demand",
    "LocalReplica",
    "Prospect",
    "View",
    "cannot_run_here",
    "demand",
    "entry_of",
    "excluded",
    "failure",
    "live",
    "pinned_nodes",
    "prospect",
    "ready_nodes",
    "running_count",
    "serving_anywhere",
    "states",
]

_LIVE = (Status.ALIVE, Status.SUSPECT)
# The members, or an index of them (``ReplicaIndex``): every function below answers alike for both.
View: TypeAlias = Iterable[Member] | ReplicaIndex
# Why placement passes over a node whose replica would not start (``GET /v1/deployments`` shows it).
SITTING_OUT = "its replica failed to start there"
# Why placement passes over a node that may not run the app at all (not in its Python environment
# or its --app-dir folders, or a config.yaml app without --allow-external-apps): it never tried.
CANNOT_RUN = "it may not run the app there"
# How such a node's gossiped ``failed`` entry tells the two apart: its error starts with this.
_CANNOT_RUN_PREFIX = "cannot run here: "
# Retry-After of a request refused because every replica failed to start: the next try of a failed
# setup comes within seconds (backoff) to minutes (``replica_failed_hold_s``), and a fixed
# declaration takes effect at once, so clients come back soon but do not hammer.
FAILED_RETRY_AFTER_S = 10.0


@dataclass(frozen=True)
class LocalReplica:
    """This node's own replica of a deployment, as the decisions need it."""

    state: ReplicaState
    pinned: bool = False
    in_flight: int = 0


@dataclass(frozen=True)
class Demand:
    """A deployment's demand mesh-wide: requests in its replicas, and requests held for a cold start."""

    concurrency: float
    waiting: int


class Prospect(StrEnum):
    """Whether a request that found no ready replica may wait for one."""

    COMING = "coming"  # some replica is starting, ready or a warm backup: wait for it
    UNKNOWN = "unknown"  # no such deployment (yet): 404 once the grace for gossip has passed
    PINNED_ONLY = "pinned_only"  # declared only by --deploy, and no pinned replica runs: 503
    UNSCHEDULABLE = "unschedulable"  # no node may host it: 503, with placement's reason
    SCALING_UP = "scaling_up"  # declared, none coming yet, placement will start one: wait
    FAILED_TO_START = "failed_to_start"  # every replica it could have failed to start: 503 at once


def live(members: Iterable[Member]) -> list[Member]:
    """Members that may hold replicas: alive or suspect."""
    return [member for member in members if member.status in _LIVE]


def entry_of(member: Member, name: str) -> ReplicaEntry | None:
    """`member`'s gossiped replica of deployment `name`, or None when it has none."""
    return member.meta.replicas.get(name)


def _peer_states(members: View, name: str, me: NodeId) -> Iterable[tuple[Member, ReplicaEntry]]:
    if isinstance(members, ReplicaIndex):
        assert members.me == me, "an index answers for the node it was built for"
        return members.peers(name)
    return _walk_peer_states(members, name, me)


def _walk_peer_states(
    members: Iterable[Member], name: str, me: NodeId
) -> Iterable[tuple[Member, ReplicaEntry]]:
    for member in members:
        if member.node != me and member.status in _LIVE:
            entry = member.meta.replicas.get(name)
            if entry is not None:
                yield member, entry


def demand(name: str, members: View, me: NodeId, local: LocalReplica | None, waiting_here: int) -> Demand:
    """Requests in flight at every replica of `name` and requests held for its cold start, mesh-wide."""
    concurrency = 0.0
    waiting = waiting_here
    if isinstance(members, ReplicaIndex):
        for _, peer_entry in _peer_states(members, name, me):
            if peer_entry.state.holds_requests:
                concurrency += peer_entry.queue
        waiting += members.waiting(name)
    else:
        for member in members:
            if member.node == me or member.status not in _LIVE:
                continue
            entry = member.meta.replicas.get(name)
            if entry is not None and entry.state.holds_requests:
                concurrency += entry.queue
            held = member.meta.waiting.get(name)
            if isinstance(held, int) and not isinstance(held, bool) and held > 0:
                waiting += held
    if local is not None:
        concurrency += local.in_flight
    return Demand(concurrency, waiting)


def cannot_run_here(reason: str) -> str:
    """The error a node gossips for a deployment whose app it may not run (``reason`` says why)."""
    return f"{_CANNOT_RUN_PREFIX}{reason}"


def excluded(name: str, members: View, me: NodeId, sitting_out_here: str | None) -> dict[NodeId, str]:
    """Nodes that sit `name` out, each with why: its replica would not start there, or the node may
    not run its app. `sitting_out_here` is this node's own sit-out error, None when it takes part."""
    sitting_out = {
        member.node: _why_out(entry.error)
        for member, entry in _peer_states(members, name, me)
        if entry.state is ReplicaState.FAILED
    }
    if sitting_out_here is not None:
        sitting_out[me] = _why_out(sitting_out_here)
    return sitting_out


def _why_out(error: str) -> str:
    return CANNOT_RUN if error.startswith(_CANNOT_RUN_PREFIX) else SITTING_OUT


def pinned_nodes(name: str, members: View, me: NodeId, local: LocalReplica | None) -> frozenset[NodeId]:
    """Nodes whose replica of `name` is pinned by ``--deploy``: placement counts them first."""
    pinned = {member.node for member, entry in _peer_states(members, name, me) if entry.pinned}
    if local is not None and local.pinned:
        pinned.add(me)
    return frozenset(pinned)


def ready_nodes(name: str, members: View, me: NodeId, local: LocalReplica | None) -> frozenset[NodeId]:
    """Nodes whose replica of `name` serves (make before break waits for these)."""
    ready = {member.node for member, entry in _peer_states(members, name, me) if entry.state.serving}
    if local is not None and local.state.serving:
        ready.add(me)
    return frozenset(ready)


def running_count(name: str, members: View) -> int:
    """Replicas of `name` running or starting anywhere: where a new autoscaler starts counting."""
    if isinstance(members, ReplicaIndex):
        return sum(1 for entry in members.live_entries(name) if entry.state.counts_as_running)
    return sum(
        1
        for member in members
        if member.status in _LIVE
        and (entry := member.meta.replicas.get(name)) is not None
        and entry.state.counts_as_running
    )


def states(name: str, members: View, me: NodeId, local: LocalReplica | None) -> dict[NodeId, ReplicaState]:
    """The state of every live replica of `name`, by node (the pre-warm's load clock watches them)."""
    seen = {member.node: entry.state for member, entry in _peer_states(members, name, me)}
    if local is not None:
        seen[me] = local.state
    return seen


def serving_anywhere(name: str, members: View, me: NodeId, local: LocalReplica | None) -> bool:
    """Whether some replica of `name` serves, here or on a live peer."""
    if local is not None and local.state.serving:
        return True
    return any(entry.state.serving for _, entry in _peer_states(members, name, me))


def prospect(
    name: str,
    spec: DeploymentSpec | None,
    members: View,
    me: NodeId,
    local: ReplicaEntry | None,
    placed: Plan | None,
) -> Prospect:
    """Whether a request for `name` that found no ready replica should wait, and if not, why.

    `spec` is the deployment's live declaration (None when unknown or removed), `local` this node's
    own entry (its replica's, or ``failed`` when it sits the deployment out) and `placed` this
    node's last plan for it (None before the first). A replica starting for the first time is worth
    waiting for; one starting again after its setup failed is not (``ReplicaEntry.failing``). When
    no replica is coming and every host of the plan has a failing replica (or there is no plan, or
    no host), the request fails at once with the error (``failure``) instead of at its deadline.
    """
    entries = _entries(members, name, me, local)
    if any(entry.state.coming and not entry.failing for entry in entries.values()):
        return Prospect.COMING
    if spec is None:
        return Prospect.UNKNOWN
    failing = {node for node, entry in entries.items() if entry.failing}
    if failing and (placed is None or failing.issuperset(placed.hosts)):
        return Prospect.FAILED_TO_START
    if spec.max_replicas == 0:
        return Prospect.PINNED_ONLY
    if placed is not None and placed.unschedulable and not placed.hosts:
        return Prospect.UNSCHEDULABLE
    return Prospect.SCALING_UP


def failure(name: str, members: View, me: NodeId, local: ReplicaEntry | None) -> str:
    """Why `name` failed to start, for the answer to a request (``Prospect.FAILED_TO_START``).

    The error of a failing replica, this node's first, then by node id; a failed setup (which says
    what is wrong with the app) before a node that may not run the app at all.
    """
    entries = _entries(members, name, me, local)
    order = sorted(entries, key=lambda node: (node != me, node))
    errors = [entries[node].error for node in order if entries[node].failing and entries[node].error]
    setup_errors = [error for error in errors if not error.startswith(_CANNOT_RUN_PREFIX)]
    return f"{name} failed to start: {(setup_errors or errors or ['no error given'])[0]}"


def _entries(members: View, name: str, me: NodeId, local: ReplicaEntry | None) -> dict[NodeId, ReplicaEntry]:
    """Every live node's entry for `name`, this node's own from `local` (fresher than its gossip)."""
    entries = {member.node: entry for member, entry in _peer_states(members, name, me)}
    if local is not None:
        entries[me] = local
    return entries
