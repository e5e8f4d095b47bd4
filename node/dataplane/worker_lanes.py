"""Links straight to a peer's worker: one per peer and deployment, for calls that want one answer.

A request forwarded to a peer crossed the peer's agent twice, once each way (``server.py``), which
cost that agent two wake-ups and about 30 µs of CPU per request on a busy core. A worker lane is a
sealed link like any other, but its first frame asks the peer to hand it to the worker of one
deployment's replica (``mesh/worker_link.py``): from the worker's word that it holds the link
(``serving/worker_links.py``), calls on it reach the worker and its answers come back with no
agent in between. ``PeerLinks.final`` sends there when the lane to that replica is open, and on
the peer's ordinary link otherwise, asking for the lane meanwhile; nothing waits for one.

A peer declines when it has no ready replica of the deployment (or hands no links): the lane is
closed and not asked for again for ``DECLINED_HOLD_S``. A lane that drops (its worker exited or
drains, the peer stopped) is forgotten, not redialed: its outstanding calls fail as the ordinary
link's do (retryable, ``peer_lost``), and the next call asks for a fresh lane.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..mesh.envelope import Envelope, Failure, encode_envelope
from ..mesh.types import NodeId
from ..mesh.worker_link import BIND_ID, ask_for_worker, is_bound
from .peer_link import PeerLink

__all__ = ["DECLINED_HOLD_S", "WorkerLanes"]

log = logging.getLogger(__name__)

DECLINED_HOLD_S = 5.0  # a peer that declined a lane is not asked again for this long

# Makes the link to (node, addr, key) asking for `deployment`'s worker; None when `key` is not a key.
MakeLink = Callable[[NodeId, str, str, str], "PeerLink | None"]


class WorkerLanes:
    """Every worker lane of this agent, by peer and deployment, and the peers that declined one."""

    def __init__(self, make: MakeLink) -> None:
        self._make = make
        self.links: dict[tuple[NodeId, str], PeerLink] = {}
        self._declined: dict[tuple[NodeId, str], float] = {}  # until when (loop time)

    def ready(self, node: NodeId, addr: str, key: str, deployment: str, now: float) -> PeerLink | None:
        """The open lane to `node`'s worker of `deployment`; None while there is none (one is asked for)."""
        lane = self.links.get((node, deployment))
        if lane is not None and (lane.addr, lane.server_key) == (addr, key):
            return lane if lane.connected else None
        if lane is not None:  # the peer restarted: another port, another key
            lane.fail_all("peer_lost", f"{lane.addr} restarted; the request may run elsewhere")
            self._drop(lane)
        held = self._declined.get((node, deployment))
        if held is not None:
            if held > now:
                return None
            del self._declined[(node, deployment)]
        lane = self._make(node, addr, key, deployment)
        if lane is not None:
            self.links[(node, deployment)] = lane
        return None

    def opened(self, lane: PeerLink) -> None:
        """The lane's handshake completed: ask for the worker (calls wait for its word)."""
        assert lane.bind is not None
        if lane.send(encode_envelope(ask_for_worker(lane.bind)), flush=True) is not None:
            self._drop(lane)

    def answered(self, lane: PeerLink, message: Envelope, now: float) -> None:
        """The first frame on a lane: the worker's word, or the peer's refusal."""
        assert lane.bind is not None
        if is_bound(message):
            lane.connected = True
            lane.handshake.set()
            return
        if isinstance(message, Failure) and message.request_id == BIND_ID:
            log.debug("%s declined a lane to its worker of %s: %s", lane.addr, lane.bind, message.message)
        else:
            log.warning("%s answered a lane's request with a %s", lane.addr, type(message).__name__)
        self._declined[(lane.node, lane.bind)] = now + DECLINED_HOLD_S
        self._drop(lane)

    def dropped(self, lane: PeerLink) -> None:
        """The lane's connection dropped or was refused: forgotten (its calls fail with it)."""
        self._drop(lane)

    def forget(self, node: NodeId) -> list[PeerLink]:
        """`node` is gone: its lanes, closed and forgotten (the caller fails their calls)."""
        self._declined = {key: until for key, until in self._declined.items() if key[0] != node}
        lanes = [lane for (peer, _), lane in self.links.items() if peer == node]
        for lane in lanes:
            self._drop(lane)
        return lanes

    def _drop(self, lane: PeerLink) -> None:
        assert lane.bind is not None
        if self.links.get((lane.node, lane.bind)) is lane:
            del self.links[(lane.node, lane.bind)]
        lane.close()
