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

Eligibility (device kind, memory, accelerator) filters nodes before ranking; when too few nodes are
eligible the result says why, so ``GET /v1/deployments`` can report the deployment unschedulable.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass

from .types import NodeId

__all__ = ["HostNode", "Placement", "Requirements", "ineligible_reason", "place", "rank", "score"]

_HASH_SPAN = float(1 << 64)


@dataclass(frozen=True)
class HostNode:
    """A live node as placement sees it."""

    node: NodeId
    weight: float = 1.0  # relative capacity (device capability); must be > 0 to host anything
    device_kind: str = "cpu"  # "cpu", "cuda", "mps", ...
    memory_bytes: int = 0
    accelerators: int = 0


@dataclass(frozen=True)
class Requirements:
    """What a deployment needs from a node."""

    device_kinds: frozenset[str] = frozenset()  # empty: any kind
    min_memory_bytes: int = 0
    accelerator: bool = False


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


def rank(deployment: str, candidates: Iterable[HostNode]) -> list[NodeId]:
    """Every node with a positive weight, best host first (ties by node id, so still one order)."""
    scored = [(score(deployment, c.node, c.weight), c.node) for c in candidates if c.weight > 0]
    scored.sort(key=lambda pair: (-pair[0], pair[1]))
    return [node for _, node in scored]


def ineligible_reason(candidate: HostNode, needs: Requirements) -> str | None:
    """Why `candidate` cannot host a deployment with these needs, or None if it can."""
    if needs.device_kinds and candidate.device_kind not in needs.device_kinds:
        kinds = ", ".join(sorted(needs.device_kinds))
        return f"device {candidate.device_kind} is not one of {kinds}"
    if needs.accelerator and candidate.accelerators == 0:
        return "no accelerator"
    if candidate.memory_bytes < needs.min_memory_bytes:
        return f"{candidate.memory_bytes} bytes of memory, needs {needs.min_memory_bytes}"
    if candidate.weight <= 0:
        return "weight 0 (draining)"
    return None


def place(deployment: str, desired: int, candidates: Iterable[HostNode], needs: Requirements) -> Placement:
    """The top `desired` eligible nodes for the deployment, and the reason if there are fewer."""
    pool = list(candidates)
    reasons: dict[str, int] = {}
    eligible = []
    for candidate in pool:
        reason = ineligible_reason(candidate, needs)
        if reason is None:
            eligible.append(candidate)
        else:
            reasons[reason] = reasons.get(reason, 0) + 1
    hosts = tuple(rank(deployment, eligible)[: max(desired, 0)])
    if len(hosts) >= desired:
        return Placement(hosts, None)
    why = "; ".join(f"{count} node(s): {reason}" for reason, count in sorted(reasons.items()))
    summary = f"{len(eligible)} of {len(pool)} live nodes can host it, {desired} wanted"
    return Placement(hosts, f"{summary} ({why})" if why else summary)
