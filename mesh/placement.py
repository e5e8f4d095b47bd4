"""Placement: which nodes host a deployment's replicas, computed alike by every node, with no leader.

Weighted rendezvous hashing (highest random weight; Thaler and Ravishankar, with the weighting of
Schindelhauer and Schomaker): every eligible node gets a score for the deployment,
``-weight / ln(h)`` where ``h`` in (0, 1) is a hash of (deployment, node); the ``desired`` highest
scores host it. Properties the rest of the mesh relies on:

- Same view, same answer: the score depends only on the deployment name, the node id and its
  weight, never on the order nodes are listed in or on who computes it (a keyed blake2b hash, not
  Python's per-process ``hash``).
- Minimal movement: a node joining takes only the deployments it now outranks (about 1/N of them);
  a node leaving hands each of its replicas to the next in rank, and nothing else moves.
- Proportional share: a node of weight 2 wins about twice as many deployments as one of weight 1.

Eligibility (device kind, memory, accelerator, a container runtime) filters nodes before ranking;
when too few nodes are eligible the result says why, so ``GET /v1/deployments`` can report the
deployment unschedulable. Every input is in the gossiped view or the spec, never on one node's disk:
an app in a custom image needs a runtime, and that need travels in the spec
(``resources.container``, set by the node that takes the declaration, which reads the app's
``config.yaml``), while each node gossips the runtimes it has (``device["container_runtimes"]``).

``plan`` turns the ranking into what every node acts on: pinned replicas (``--deploy``) count first,
the next eligible nodes in rank host the rest, and the ones after them are warm backups. With
``spread`` the first pass takes the best node of each distinct zone (or region), so replicas land
in as many failure domains as there are, and the ranking still decides within each.

Weights come from device capability (``weight_of``): a node's CPU cores, plus much more for each
accelerator. They never depend on load, which changes by the second: placement must stay put.

A deployment that names a model of the mesh's stores (``spec.model``) prefers the nodes that hold it:
their weight counts ``HOLDER_BONUS`` times for it. A node without the model must pull it from its
holders before it serves (``node/models/pulls.py``), minutes for a multi-gigabyte model, so a holder
of equal capacity wins four times in five against one that is not; a node far more capable (a GPU,
8 to 16 times a CPU node's weight) still wins against a CPU holder, as it should: the pull is paid
once. What a node holds changes only when a model is added, pulled or removed, so this moves
replicas no more often than joins do.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .types import NodeId

__all__ = [
    "HOLDER_BONUS",
    "Action",
    "HostNode",
    "Placement",
    "Plan",
    "Requirements",
    "action_for",
    "host_of",
    "ineligible_reason",
    "place",
    "plan",
    "rank",
    "score",
    "weight_of",
]

# Relative capacity per device: one 8-core CPU counts 1, a CUDA GPU 8 (16 GB) to 16, an MPS GPU 4.
_CPU_CORES_PER_WEIGHT = 8
_CUDA_WEIGHT_PER_16_GB = 8.0
_MPS_WEIGHT = 4.0

_HASH_SPAN = float(1 << 64)
# A node that holds the deployment's model counts this many times its weight (module docstring).
HOLDER_BONUS = 4.0
# The container CLIs a node may gossip (inference/container.py drives them).
CONTAINER_RUNTIMES = frozenset({"docker", "podman"})
NO_CONTAINER_RUNTIME = "no container runtime (docker or podman)"


@dataclass(frozen=True)
class HostNode:
    """A live node as placement sees it."""

    node: NodeId
    weight: float = 1.0  # relative capacity (device capability); must be > 0 to host anything
    device_kind: str = "cpu"  # the best device: "cpu", "cuda", "mps" (every node also has a CPU)
    memory_bytes: int = 0
    accelerators: int = 0
    zone: str = ""
    region: str = ""
    container: bool = False  # has a container runtime that answers (docker or podman)
    models: frozenset[str] = frozenset()  # the models in its store (``NodeMeta.store``)


@dataclass(frozen=True)
class Requirements:
    """What a deployment needs from a node."""

    device_kinds: frozenset[str] = frozenset()  # empty: any kind
    min_memory_bytes: int = 0
    accelerator: bool = False
    container: bool = False  # the app runs in a custom image
    # The model of the mesh's stores it serves: not a need (any node can pull it), a preference.
    model: str | None = None


@dataclass(frozen=True)
class Placement:
    """The hosts of one deployment, best first, and why there are fewer than desired (or None)."""

    hosts: tuple[NodeId, ...]
    unschedulable: str | None


def score(deployment: str, node: NodeId, weight: float) -> float:
    """The node's weighted rendezvous score for the deployment (higher wins)."""
    digest = hashlib.blake2b(f"{deployment}\0{node}".encode(), digest_size=8).digest()
    # Map to (0, 1): never 0 (ln would be -inf) and never 1 (ln would be 0).
    unit = (int.from_bytes(digest, "big") + 0.5) / _HASH_SPAN
    return -weight / math.log(unit)


def rank(deployment: str, candidates: Iterable[HostNode], model: str | None = None) -> list[NodeId]:
    """Every node with a positive weight, best host first (ties by node id, so still one order).

    Nodes holding `model` weigh ``HOLDER_BONUS`` times as much.
    """
    scored = [
        (score(deployment, c.node, c.weight * (HOLDER_BONUS if model in c.models else 1.0)), c.node)
        for c in candidates
        if c.weight > 0
    ]
    scored.sort(key=lambda pair: (-pair[0], pair[1]))
    return [node for _, node in scored]


def ineligible_reason(candidate: HostNode, needs: Requirements) -> str | None:
    """Why `candidate` cannot host a deployment with these needs, or None if it can."""
    if needs.device_kinds and not needs.device_kinds & {candidate.device_kind, "cpu"}:
        kinds = ", ".join(sorted(needs.device_kinds))
        return f"device {candidate.device_kind} is not one of {kinds}"
    if needs.accelerator and candidate.accelerators == 0:
        return "no accelerator"
    if needs.container and not candidate.container:
        return NO_CONTAINER_RUNTIME
    if candidate.memory_bytes < needs.min_memory_bytes:
        return f"{candidate.memory_bytes} bytes of memory, needs {needs.min_memory_bytes}"
    if candidate.weight <= 0:
        return "weight 0 (draining)"
    return None


def place(
    deployment: str,
    desired: int,
    candidates: Iterable[HostNode],
    needs: Requirements,
    excluded: Mapping[NodeId, str] | None = None,
) -> Placement:
    """The top `desired` eligible nodes for the deployment, and the reason if there are fewer.

    ``excluded`` names nodes that must not host it this time, with the reason (a replica that
    failed to start there).
    """
    pool = list(candidates)
    reasons: dict[str, int] = {}
    eligible = []
    for candidate in pool:
        reason = (excluded or {}).get(candidate.node) or ineligible_reason(candidate, needs)
        if reason is None:
            eligible.append(candidate)
        else:
            reasons[reason] = reasons.get(reason, 0) + 1
    hosts = tuple(rank(deployment, eligible, needs.model)[: max(desired, 0)])
    if len(hosts) >= desired:
        return Placement(hosts, None)
    why = "; ".join(f"{count} node(s): {reason}" for reason, count in sorted(reasons.items()))
    summary = f"{len(eligible)} of {len(pool)} live nodes can host it, {desired} wanted"
    return Placement(hosts, f"{summary} ({why})" if why else summary)


@dataclass(frozen=True)
class Plan:
    """One deployment's placement: who serves, who waits warm, and why anything is missing."""

    hosts: tuple[NodeId, ...]  # pinned nodes first, then the best-ranked eligible nodes
    backups: tuple[NodeId, ...]
    unschedulable: str | None


def plan(
    deployment: str,
    desired: int,
    candidates: Iterable[HostNode],
    needs: Requirements,
    *,
    pinned: Iterable[NodeId] = (),
    backups: int = 0,
    spread: str | None = None,
    excluded: Mapping[NodeId, str] | None = None,
) -> Plan:
    """Where `desired` replicas of the deployment (and `backups` warm spares) go on this view."""
    pool = list(candidates)
    live = {candidate.node for candidate in pool}
    fixed = tuple(sorted(node for node in set(pinned) if node in live))
    extra = max(desired - len(fixed), 0)
    others = [candidate for candidate in pool if candidate.node not in fixed]
    chosen = place(deployment, len(others), others, needs, excluded)
    order = _spread(chosen.hosts, pool, spread) if spread else list(chosen.hosts)
    hosts = (*fixed, *order[:extra])
    reason = None
    if len(order) < extra:
        reason = place(deployment, extra, others, needs, excluded).unschedulable
    return Plan(hosts, tuple(order[extra : extra + backups]), reason)


def _spread(ranked: Iterable[NodeId], pool: list[HostNode], level: str) -> list[NodeId]:
    """The ranking reordered: the best node of each distinct zone (region) first, then the rest."""
    label = {c.node: (c.region, c.zone) if level == "zone" else (c.region,) for c in pool}
    first: list[NodeId] = []
    rest: list[NodeId] = []
    seen: set[tuple[str, ...]] = set()
    for node in ranked:
        (rest if label[node] in seen else first).append(node)
        seen.add(label[node])
    return first + rest


def weight_of(device: Mapping[str, Any]) -> float:
    """A node's placement weight from its gossiped device summary (``NodeMeta.device``)."""
    cores = device.get("cores")
    weight = max(cores, 1) / _CPU_CORES_PER_WEIGHT if isinstance(cores, int) else 1.0
    accelerators = device.get("accelerators")
    for accelerator in accelerators if isinstance(accelerators, list) else ():
        if not isinstance(accelerator, dict):
            continue
        if accelerator.get("kind") == "cuda":
            memory = accelerator.get("memory")
            gigabytes = memory / 1e9 if isinstance(memory, int) and memory > 0 else 16.0
            weight += _CUDA_WEIGHT_PER_16_GB * min(max(gigabytes / 16, 1.0), 2.0)
        elif accelerator.get("kind") == "mps":
            weight += _MPS_WEIGHT
    return weight


def host_of(
    node: NodeId,
    device: Mapping[str, Any],
    region: str = "",
    zone: str = "",
    models: Iterable[str] = (),
) -> HostNode:
    """How placement sees a live node, from its gossiped device summary, locality labels and store."""
    accelerators = device.get("accelerators")
    count = len(accelerators) if isinstance(accelerators, list) else 0
    kind = device.get("kind")
    memory = device.get("memory")
    runtimes = device.get("container_runtimes")
    return HostNode(
        node=node,
        weight=weight_of(device),
        device_kind=kind if isinstance(kind, str) else "cpu",
        memory_bytes=memory if isinstance(memory, int) else 0,
        accelerators=count,
        zone=zone,
        region=region,
        container=isinstance(runtimes, list) and any(name in CONTAINER_RUNTIMES for name in runtimes),
        models=frozenset(models),
    )


class Action(StrEnum):
    """What one node does about its own replica of a deployment, given the plan."""

    NONE = "none"
    START = "start"  # a host without a replica starts one
    START_BACKUP = "start_backup"  # a backup without a replica loads one and waits warm
    PROMOTE = "promote"  # a warm backup that became a host serves
    DEMOTE = "demote"  # a serving replica that is now a backup steps back
    STOP = "stop"  # a replica placement no longer wants drains and stops
    REPLACE = "replace"  # a placed replica runs an app the deployment no longer names: it goes first
    GIVE_UP = "give_up"  # a placed replica whose setup keeps failing goes, and the node sits out


def action_for(
    me: NodeId,
    placed: Plan,
    *,
    has_replica: bool,
    standby: bool = False,
    pinned: bool = False,
    ready: Iterable[NodeId] = (),
    app_changed: bool = False,
    setup_failures: int = 0,
    setup_attempts: int = 0,
) -> Action:
    """This node's move for one deployment; `ready` lists the nodes whose replica serves.

    Make before break: a replica leaves (stops, or steps back to backup) only once every other host
    of the plan serves, so no change of plan ever lowers the number of replicas serving. A pinned
    replica is this node's own business and is never stopped or demoted. A placed replica of an app
    the deployment no longer names goes at once (the new app starts after it), and so does one whose
    setup failed `setup_attempts` times in a row (0: never give up): it serves nothing.
    """
    host, backup = me in placed.hosts, me in placed.backups
    if has_replica and not pinned:
        if app_changed:
            return Action.REPLACE
        if 0 < setup_attempts <= setup_failures:
            return Action.GIVE_UP
    if not has_replica:
        return Action.START if host else Action.START_BACKUP if backup else Action.NONE
    if standby and (host or pinned):
        return Action.PROMOTE
    if pinned or host:
        return Action.NONE
    serving = set(ready)
    others_ready = all(node in serving for node in placed.hosts if node != me)
    if backup:
        return Action.DEMOTE if not standby and others_ready else Action.NONE
    return Action.STOP if others_ready else Action.NONE
