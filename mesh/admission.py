"""What one node takes in: claims cut to the bounds, records stamped in the future refused.

The rules, their numbers and their arithmetic are in ``bounds.py``; ``Admission`` applies them to
the messages the membership core (``membership.py``) is about to act on, and to the records it
restores from the node's database, before anything in the view changes, and counts by reason every
value it cut or refused:

- ``incarnation``, ``meta_version``: a claim was taken at less than it said (the step, the first
  sighting, or room for this node's own refutation);
- ``stamp_ahead``: a deployment record stamped too far ahead of this node's wall clock was dropped.

None of these is a malformed packet: the packet decoded, and the rest of it is processed. The shell
exports the counts as ``meshnode_gossip_refused_total``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from .bounds import MAX_INCARNATION, RefusalReason, stamp_ahead, taken
from .member import Member
from .records import Record
from .types import NodeId
from .wire import Alive, Dead, Load, MemberState, Suspect

_News = Alive | Suspect | Dead | Load

__all__ = ["Admission"]


class Admission:
    """One node's gate for claims and records, with counts of what it cut or refused."""

    def __init__(self, node_id: NodeId, max_clock_offset_s: float) -> None:
        self.node_id = node_id
        self.max_offset_ms = int(max_clock_offset_s * 1000)
        self.refused: Counter[RefusalReason] = Counter()

    # Called for every gossiped message and push-pull row: the common case, nothing cut, allocates
    # nothing.

    def gossip(self, message: _News, held: Member | None) -> _News:
        """`message` as this node takes it, given the member it holds (None: never seen)."""
        incarnation = self._incarnation(message.node, message.incarnation, held)
        if isinstance(message, Alive | Load):
            meta_version = self._meta_version(message.node, message.meta_version, held)
            if incarnation != message.incarnation or meta_version != message.meta_version:
                return replace(message, incarnation=incarnation, meta_version=meta_version)
        elif incarnation != message.incarnation:
            return replace(message, incarnation=incarnation)
        return message

    def row(self, state: MemberState, held: Member | None) -> MemberState:
        """A push-pull row as this node takes it, given the member it holds (None: never seen)."""
        incarnation = self._incarnation(state.node, state.incarnation, held)
        meta_version = self._meta_version(state.node, state.meta_version, held)
        if incarnation != state.incarnation or meta_version != state.meta_version:
            return replace(state, incarnation=incarnation, meta_version=meta_version)
        return state

    def record(self, record: Record, wall_ms: int) -> bool:
        """Whether to take `record` at wall clock `wall_ms` (counted when refused)."""
        if stamp_ahead(record.wall_ms, wall_ms, self.max_offset_ms):
            self.refused["stamp_ahead"] += 1
            return False
        return True

    def _incarnation(self, node: NodeId, claimed: int, held: Member | None) -> int:
        if node == self.node_id:
            # Not the step: this node must outbid whatever a peer holds of it. One below the
            # maximum leaves room for the refutation's + 1.
            value = min(claimed, MAX_INCARNATION - 1)
        else:
            value = taken(claimed, None if held is None else held.incarnation)
        if value != claimed:
            self.refused["incarnation"] += 1
        return value

    def _meta_version(self, node: NodeId, claimed: int, held: Member | None) -> int:
        if node == self.node_id:
            # Never taken from a claim: a higher one is refuted with a new incarnation.
            return claimed
        value = taken(claimed, None if held is None else held.meta_version)
        if value != claimed:
            self.refused["meta_version"] += 1
        return value
