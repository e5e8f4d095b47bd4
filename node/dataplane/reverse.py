"""A node nobody can dial serves its replicas over links it opens to its relays (docs/edge.md).

For each relay its membership chose (``membership/relaying.py``), the node keeps one sealed link to
the relay's data port (``dialer.py``), as a member (its token, the key the relay gossiped), and says
``Attach`` on it each time the link opens: a reconnect is a new link at the relay, which must learn
it before the next call. Calls that come down the link are served by the node's data-plane server
exactly as calls on its own port (``DataPlaneServer.open_channel``), and their answers go back up
the same link. The link's heartbeats keep it, and so the NAT's mapping of it, alive, and notice a
relay gone silent within seconds; the dialer reconnects by itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ..mesh.envelope import Attach, encode_envelope
from ..mesh.member import Member
from ..mesh.types import NodeId
from ..trust.sealed import announced_key
from .dialer import Dialer
from .sealed_stream import StreamLimits
from .server import DataPlaneServer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Target:
    node: NodeId
    addr: str
    key: str


@dataclass(frozen=True)
class _Link:
    target: _Target
    dialer: Dialer
    channel: bytes


class ReverseLinks:
    """This node's links to its relays' data ports, kept to what membership chose."""

    def __init__(
        self, me: NodeId, server: DataPlaneServer, token: Callable[[], str], max_frame_bytes: int
    ) -> None:
        self._me = me
        self._server = server
        self._token = token
        self._limits = StreamLimits(max_frame_bytes=max_frame_bytes)
        self._links: dict[NodeId, _Link] = {}
        self.attaches = 0

    @property
    def relays(self) -> list[NodeId]:
        """The relays this node has a link to now."""
        return sorted(self._links)

    def sync(self, relays: Iterable[NodeId], members: Mapping[NodeId, Member]) -> None:
        """Open links to `relays` (as `members` describe them) that are missing; close the others."""
        wanted = {}
        for node in relays:
            member = members.get(node)
            if member is not None and member.meta.data and announced_key(member.meta.data_key) is not None:
                wanted[node] = _Target(node, member.meta.data, member.meta.data_key)
        for node, link in list(self._links.items()):
            if wanted.get(node) != link.target:  # no longer a relay, or restarted (a new port, key)
                self._drop(node)
        for node, target in wanted.items():
            if node not in self._links:
                self._open(target)

    def close(self) -> None:
        """Close every link."""
        for node in list(self._links):
            self._drop(node)

    def _open(self, target: _Target) -> None:
        key = announced_key(target.key)
        assert key is not None  # checked in sync
        channel = b"relay " + target.node.encode()
        dialer = Dialer(
            target.addr,
            key,
            self._token,
            self._limits,
            on_open=lambda: self._connected(target.node),
            on_frame=lambda frame: self._server.on_channel_frame(channel, frame),
            on_drop=lambda opened, reason: self._lost(target.node, opened, reason),
        )
        self._links[target.node] = _Link(target, dialer, channel)
        self._server.open_channel(channel, dialer.send)
        log.info("data-plane link to relay %s at %s", target.node[:8], target.addr)

    def _connected(self, node: NodeId) -> None:
        link = self._links.get(node)
        if link is not None:
            # Each (re)connection is a new link at the relay: tell it which is ours.
            link.dialer.send(encode_envelope(Attach(self._me)))
            self.attaches += 1

    def _lost(self, node: NodeId, opened: bool, reason: str) -> None:
        link = self._links.get(node)
        if link is not None:
            # The calls that came down it have nowhere to answer; the dialer makes a new link.
            self._server.close_channel(link.channel)
            self._server.open_channel(link.channel, link.dialer.send)
            log.info(
                "data-plane link to relay %s %s (%s)", node[:8], "dropped" if opened else "refused", reason
            )

    def _drop(self, node: NodeId) -> None:
        link = self._links.pop(node)
        self._server.close_channel(link.channel)
        link.dialer.close()
