"""Two counters of one node's membership view: every change, and every change but load.

Views derived from the members' load (routing candidates, the dashboard) are cached against
``view``, raised by every change. ``roster`` moves with the rest only: a member joining, leaving,
changing status or address, or metadata other than load (device, labels, store, replicas and their
states, requests waiting for a cold start). Placement re-plans at once and rebuilds its host set,
and relays re-index addresses, only when the roster moved. A busy mesh's load samples are news too,
but only to the autoscaler, which samples demand every placement interval anyway: 1,000 busy
members gossip up to 200 a second, and each one started a placement round over every deployment.

What counts as load is listed here (``LOAD_META_FIELDS``, ``LOAD_ENTRY_FIELDS``); everything else a
member says about itself counts as a change, so a field added later re-plans until it is listed.
The same line decides how gossip carries an update (``broadcast_queue.py``): load news goes in the
background, after failure detection's and every other change's.
"""

from __future__ import annotations

from dataclasses import fields

from .metadata import NodeMeta
from .replica_state import ReplicaEntry

__all__ = ["LOAD_ENTRY_FIELDS", "LOAD_META_FIELDS", "ViewVersions", "beyond_load"]

# Metadata that moves with load, read by the autoscaler (it samples every round) and routing (it
# reads the view on each request), never by a plan or an address book.
LOAD_META_FIELDS = frozenset({"load", "speeds", "traffic", "pulls"})
# The same within a replica's entry: requests admitted, and a model pull's share done.
LOAD_ENTRY_FIELDS = frozenset({"queue", "progress"})

_META_FIELDS = tuple(f.name for f in fields(NodeMeta) if f.name not in LOAD_META_FIELDS | {"replicas"})
_ENTRY_FIELDS = tuple(f.name for f in fields(ReplicaEntry) if f.name not in LOAD_ENTRY_FIELDS)


def beyond_load(before: NodeMeta, after: NodeMeta) -> bool:
    """Whether `before` and `after` differ in more than load (then a plan could differ)."""
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

    __slots__ = ("roster", "view")

    def __init__(self) -> None:
        self.view = 0
        self.roster = 0

    def member_changed(self) -> None:
        """A member joined, left the table, or changed status: both move."""
        self.view += 1
        self.roster += 1

    def meta_changed(self, before: NodeMeta, after: NodeMeta, *, moved: bool = False) -> bool:
        """A member's metadata changed (`moved`: its address too): the roster unless only load moved.

        Returns whether the roster moved: False for load news (gossiped in the background).
        """
        self.view += 1
        if moved or beyond_load(before, after):
            self.roster += 1
            return True
        return False
