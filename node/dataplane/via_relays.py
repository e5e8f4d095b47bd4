"""Calls to a replica on a node nobody can dial: through its relays (docs/edge.md).

``RelayedCalls.call`` is what the forwarder (and the job service, for job copies) uses to reach a
peer's data plane: a node that can be dialed gets the call on a link of its own, as always
(``links.py``); a relayed one (its gossiped ``reach``) gets it through one of its relays, which passes
it down the node's own link (``relay.py``, ``reverse.py``). The relays are tried in turn, this node
first when it is one, then the alive, then the suspect; a relay that cannot pass the call on (gone, or
no link from the node) refuses it before it starts, so the next is tried. When none can (the node's
only relay just died), the call tries again at each view change and every ``_RETRY_S``, within its
deadline and ``RELAY_MOVE_WAIT_S``: the node takes another relay within about one failure detection,
and requests in the meantime are late instead of failed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import replace
from typing import TYPE_CHECKING

from ..mesh.envelope import Call, Envelope, Failure
from ..mesh.member import Member
from ..mesh.types import NodeId, Status

if TYPE_CHECKING:
    from .forward import Links, MeshView

__all__ = ["RELAY_MOVE_WAIT_S", "RelayedCalls"]

# Failures of a relay, not of the node behind it: the next relay may pass the call on.
_RELAY_KINDS = frozenset({"peer_unreachable", "peer_lost"})
# How long a call waits for a relayed node to take a new relay when none of its relays could pass
# the call on (its only relay died): about two failure detections on the lan profile.
RELAY_MOVE_WAIT_S = 5.0
# Between tries of the same relays meanwhile: a new relay has the node's link a moment after the
# view names it; each try is one round trip to the relay.
_RETRY_S = 0.1


class RelayedCalls:
    """Data-plane calls to peers, through their relays when nobody can dial them."""

    def __init__(self, view: MeshView, links: Links, me: NodeId, name: str) -> None:
        self._view = view
        self._links = links
        self._me = me
        self._name = name
        self._view_event = asyncio.Event()  # replaced (after being set) at each view change

    def call(
        self, node: NodeId, addr: str, key: str, call: Call, crossed: list[str], wait: bool
    ) -> AsyncGenerator[Envelope, None]:
        """`call` to `node`: on a link to `addr` (data-plane key `key`), or through its relays.

        `crossed` gets the name of the relay it went through; with `wait`, a call no relay could
        pass on is tried again while the node moves to a new relay (see the module docstring).
        """
        relays = self.relays_of(node)
        if relays is None:
            return self._links.call(node, addr, key, call)
        return self._through(node, call, relays, crossed, wait)

    def relays_of(self, node: NodeId) -> list[Member] | None:
        """The live relays of a node nobody can dial, alive ones first; None for one dialed directly."""
        # A lookup per call, not a table of every member made again at each view change: in a busy
        # mesh the view changes with every load report, and a table of 1,000 members is ~0.1 ms.
        member = self._view.member(node)
        if member is None or member.meta.reach != "relayed":
            return None
        relays = [found for r in member.meta.relays if (found := self._view.member(NodeId(r))) is not None]
        relays = [r for r in relays if r.status in (Status.ALIVE, Status.SUSPECT) and r.meta.data]
        # This node first when it is one (no hop of its own), then the alive, then the suspect.
        return sorted(relays, key=lambda relay: (relay.node != self._me, relay.status != Status.ALIVE))

    def view_changed(self) -> None:
        """The gossiped view changed (a relayed node may have new relays): wake who waits for that."""
        self._view_event.set()
        self._view_event = asyncio.Event()

    async def _through(
        self, node: NodeId, call: Call, relays: list[Member], crossed: list[str], wait: bool
    ) -> AsyncGenerator[Envelope, None]:
        """`call` to a node nobody can dial: through its relays in turn, until one passes it on.

        When none can (its only relay just died, or the new one has not had the node's link yet),
        the call tries the relays again at each view change and every _RETRY_S, within its
        deadline and RELAY_MOVE_WAIT_S, instead of failing in the meantime.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + call.timeout_ms / 1000
        give_up_at = min(deadline, loop.time() + (RELAY_MOVE_WAIT_S if wait else 0.0))
        refusal = Failure(call.request_id, "peer_unreachable", f"no relay of node {node[:8]} is alive", True)
        while True:
            for relay in relays:
                meta = relay.meta
                remaining_ms = int((deadline - loop.time()) * 1000)
                if remaining_ms <= 0:
                    break
                attempt = replace(call, timeout_ms=remaining_ms)
                messages = self._links.call(relay.node, meta.data, meta.data_key, attempt, to=node)
                first = await anext(messages)
                if isinstance(first, Failure) and first.retryable and first.kind in _RELAY_KINDS:
                    refusal = first  # this relay could not pass it on: it never started, try the next
                    await messages.aclose()
                    continue
                if meta.name != self._name:  # this node is the relay: no hop of its own to show
                    crossed.append(meta.name or relay.node[:8])
                yield first
                async for message in messages:
                    yield message
                return
            if loop.time() >= give_up_at:
                yield refusal
                return
            relays = await self._relays_later(node, give_up_at)

    async def _relays_later(self, node: NodeId, give_up_at: float) -> list[Member]:
        """`node`'s relays after the next view change, or _RETRY_S, whichever comes first."""
        changed = self._view_event
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(min(give_up_at, asyncio.get_running_loop().time() + _RETRY_S)):
                await changed.wait()
        return self.relays_of(node) or []
