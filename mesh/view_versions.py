"""Two counters of one node's membership view: every change, and the changes placement reads.

Views derived from the members (routing candidates, relay paths, the OpenAI model list, requests
waiting for a cold start) are cached against ``view``, raised by every change. Placement re-plans
at once on a change to ``placement`` only: a member joining, leaving or changing status, or
metadata that can change a plan (device, labels, store, replicas and their states, requests waiting
for a cold start). A busy mesh's load samples are news too, but only to the autoscaler, which
samples demand every placement interval anyway: 1,000 busy members gossip up to 200 of them a
second, and each one used to start a placement round over every deployment.

What counts as load is listed here (``LOAD_META_FIELDS``, ``LOAD_ENTRY_FIELDS``); everything else a
member says about itself counts as a change, so a field added later re-plans until it is listed.
"""

from __future__ import annotations

from dataclasses import fields

from .metadata import NodeMeta
from .replica_state import ReplicaEntry

__all__ = ["LOAD_ENTRY_FIELDS", "LOAD_META_FIELDS", "ViewVersions", "placement_differs"]

# Metadata that moves with load, read by the autoscaler (sampled every round) and routing (which
# reads the view on each request), never by a plan.
LOAD_META_FIELDS = frozenset({"load", "speeds", "traffic", "pulls"})
# The same within a replica's entry: requests admitted, and a model pull's share done.
LOAD_ENTRY_FIELDS = frozenset({"queue", "progress"})

_META_FIELDS = tuple(f.name for f in fields(NodeMeta) if f.name not in LOAD_META_FIELDS | {"replicas"})
_ENTRY_FIELDS = tuple(f.name for f in fields(ReplicaEntry) if f.name not in LOAD_ENTRY_FIELDS)


def placement_differs(before: NodeMeta, after: NodeMeta) -> bool:
    """Whether a plan could differ after `before` became `after` (load alone cannot change one)."""
    if before is after:
        return False
    if any(getattr(before, name) != getattr(after, name) for name in _META_FIELDS):
        return True
    if before.replicas.keys() != after.replicas.keys():
        return True
    for name, entry in after.replicas.items():
        held = before.replicas[name]
        if entry is not held and any(getattr(entry, f) != getattr(held, f) for f in _ENTRY_FIELDS):
            return True
    return False


class ViewVersions:
    """The two counters; the membership core raises them, shells compare them with what they saw."""

    __slots__ = ("placement", "view")

    def __init__(self) -> None:
        self.view = 0
        self.placement = 0

    def member_changed(self) -> None:
        """A member joined, left the table, or changed status: every view is stale."""
        self.view += 1
        self.placement += 1

    def meta_changed(self, before: NodeMeta, after: NodeMeta) -> None:
        """A member's metadata (or address) changed: placement's view only if a plan could differ."""
        self.view += 1
        if placement_differs(before, after):
            self.placement += 1
