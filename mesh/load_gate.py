"""When a node gossips load as ``Load`` news, and what it does with the load news it receives.

The rules are in ``load_news.py``; this is their state for one membership core: the version of the
node's own last change beyond load (the ``base_version`` of its load news), and whether every member
alive or suspect takes load news. That gate closes as soon as a member that does not is seen, and
is worked out again over every member only when it is next asked after the roster moved (a member
joined, left, changed status or metadata beyond load, where ``features`` belongs).
"""

from __future__ import annotations

from .broadcast_queue import Dissemination
from .load_news import LOAD_NEWS, Load, with_load
from .member import Member
from .metadata import NodeMeta
from .types import NodeId
from .view_versions import ViewVersions
from .wire import Alive

__all__ = ["COUNTS", "LoadGate"]

COUNTS = ("sent", "sent_whole", "applied", "stale", "unbased", "unfit")


class LoadGate:
    """Load news for one node: the news it sends of itself, and what it passes on of others'."""

    def __init__(
        self, me: NodeId, members: dict[NodeId, Member], versions: ViewVersions, gossip: Dissemination
    ) -> None:
        self._me = me
        self._members = members
        self._versions = versions
        self._gossip = gossip  # its queue, not the queue itself: clearing it makes a new one
        self._base_version = 0  # of this node's own metadata: its last change beyond load
        self._roster = -1  # the roster version `_open` was worked out at
        self._open = False
        # This node's own load updates sent as news or whole; others' news applied, or not: not
        # newer than what is held (copies from several peers: most), built on a change not held
        # here (`unbased`), or not fitting the metadata held (`unfit`). For /metrics.
        self.counts = dict.fromkeys(COUNTS, 0)

    def is_open(self) -> bool:
        """Whether every member alive or suspect takes load news (this node included)."""
        if self._roster != self._versions.roster:
            self._roster = self._versions.roster
            members = self._members.values()
            if all(LOAD_NEWS in m.meta.features for m in members if not m.status.gone):
                self._open = True
            else:
                self._close()
        return self._open

    def saw(self, meta: NodeMeta) -> None:
        """A member is alive with `meta`, news here: one that takes no load news closes the gate now.

        At once, not when the gate is next asked: the load news queued here would otherwise ride on
        the packets this node sends it meanwhile (an ack, say). O(1), where working the gate out
        again is O(members): this runs for every ``alive`` taken."""
        if LOAD_NEWS not in meta.features:
            self._close()

    def _close(self) -> None:
        if self._open:
            self._open = False
            self._gossip.queue.drop_load_news()  # never send one to a member that would drop its packet

    def own(self, me: Member, beyond_load: bool) -> Alive | Load:
        """The news of this node's metadata, just changed (`beyond_load`: in more than load)."""
        if beyond_load:
            self._base_version = me.meta_version
        elif self.is_open():
            self.counts["sent"] += 1
            return Load.of(me.node, me.incarnation, me.meta_version, self._base_version, me.meta)
        else:
            self.counts["sent_whole"] += 1
        return Alive(me.node, me.incarnation, me.addr, me.meta_version, me.meta)

    def take(self, news: Load) -> Alive | Load | None:
        """Apply `news` to the member it is about; what to gossip on (None: not applied).

        Applied when this node holds the member alive or suspect at the news' incarnation and at
        a metadata version from its base up to (not including) its own: then every field but load
        is already as the owner has it. Passed on as it came while every member takes load news,
        else as the member's full ``alive``.
        """
        member = self._members.get(news.node)
        if member is None or news.node == self._me or member.status.gone:
            self.counts["stale"] += 1  # what this node is, it says itself; of the gone, nothing
            return None
        if (member.incarnation, member.meta_version) >= (news.incarnation, news.meta_version):
            self.counts["stale"] += 1
            return None
        if member.incarnation < news.incarnation or member.meta_version < news.base_version:
            self.counts["unbased"] += 1  # it restarted, or changed beyond load: that comes whole
            return None
        meta = with_load(member.meta, news.fields)
        if meta is None:
            self.counts["unfit"] += 1
            return None
        self.counts["applied"] += 1
        self._versions.meta_changed(member.meta, meta)  # the views built on load (routing), not the roster
        member.meta_version = news.meta_version
        member.meta = meta
        if self.is_open():
            return news
        return Alive(member.node, member.incarnation, member.addr, member.meta_version, meta)
