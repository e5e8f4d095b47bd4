"""The gossiped replicas of every deployment, indexed by deployment in one pass over the members.

Placement decides every deployment each round from the same members (``replica_view.py``). Read
per deployment, that is every member's metadata once per deployment: with 1,000 deployments and
1,000 members a million member visits a round, on the agent's event loop. Members hold few replicas
(most none), so this index walks the members once and files each gossiped ``ReplicaEntry`` and each
cold-start wait (``NodeMeta.waiting``) under its deployment; a round then costs O(members + replicas)
and each deployment reads only its own replicas.

Invariants: ``ReplicaIndex.of(members, me)`` answers exactly what a walk over `members` answers,
to every ``replica_view`` function that takes it in place of the members (the unit tests compare
both on seeded random views): the same replicas in the same order (the members' order), the same
live filter (alive or suspect), this node's own gossiped entry kept apart (decisions read its fresher
``LocalReplica`` instead). Built from a snapshot: a view that changes afterwards needs a new index.
Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .member import Member
from .replica_state import ReplicaEntry
from .types import NodeId, Status

__all__ = ["ReplicaIndex"]

_LIVE = (Status.ALIVE, Status.SUSPECT)


@dataclass(frozen=True, slots=True, eq=False)
class ReplicaIndex:
    """Every member's gossiped replica per deployment, and the live peers' cold-start waits."""

    me: NodeId
    # Per deployment, (member, its entry) for every member that gossips one, in any state, in the
    # members' order (this node's own gossiped entry too: ``holders`` and ``running_count`` read it).
    _holders: dict[str, list[tuple[Member, ReplicaEntry]]]
    # Per deployment, the requests that live peers hold for its cold start.
    _waiting: dict[str, int]
    # Every member by id, with its place in the members' order.
    _members: dict[NodeId, tuple[int, Member]]

    @classmethod
    def of(cls, members: Iterable[Member], me: NodeId) -> ReplicaIndex:
        """The index of `members` (this node is `me`), from one pass over them."""
        holders: dict[str, list[tuple[Member, ReplicaEntry]]] = {}
        waiting: dict[str, int] = {}
        by_node: dict[NodeId, tuple[int, Member]] = {}
        for position, member in enumerate(members):
            by_node[member.node] = (position, member)
            meta = member.meta
            for name, entry in meta.replicas.items():
                holders.setdefault(name, []).append((member, entry))
            if meta.waiting and member.node != me and member.status in _LIVE:
                for name, held in meta.waiting.items():
                    if isinstance(held, int) and not isinstance(held, bool) and held > 0:
                        waiting[name] = waiting.get(name, 0) + held
        return cls(me, holders, waiting, by_node)

    def peers(self, name: str) -> Iterable[tuple[Member, ReplicaEntry]]:
        """The live peers' (not this node's) replicas of `name`, in the members' order."""
        me = self.me
        for member, entry in self._holders.get(name, ()):
            if member.node != me and member.status in _LIVE:
                yield member, entry

    def live_entries(self, name: str) -> Iterable[ReplicaEntry]:
        """Every live member's gossiped replica of `name`, this node's own included."""
        return (entry for member, entry in self._holders.get(name, ()) if member.status in _LIVE)

    def holders(self, name: str) -> list[Member]:
        """Every member, in any state, that gossips a replica of `name`, in the members' order."""
        return [member for member, _ in self._holders.get(name, ())]

    def mentions(self, name: str) -> bool:
        """Whether any member, in any state, gossips a replica of `name`, or a live peer a wait for it."""
        return name in self._holders or name in self._waiting

    def waiting(self, name: str) -> int:
        """Requests live peers hold for a cold start of `name`."""
        return self._waiting.get(name, 0)

    def members_about(self, name: str, nodes: Iterable[NodeId]) -> list[Member]:
        """The members that gossip a replica of `name`, and those of `nodes`, in the members' order.

        All that a view of one deployment reads (``node/serving/views.py``: its replicas, and the
        names of the nodes it mentions), without the members that have nothing to do with it.
        """
        chosen = {member.node: self._members[member.node] for member, _ in self._holders.get(name, ())}
        for node in nodes:
            if node not in chosen and (found := self._members.get(node)) is not None:
                chosen[node] = found
        return [member for _, member in sorted(chosen.values(), key=lambda pair: pair[0])]
