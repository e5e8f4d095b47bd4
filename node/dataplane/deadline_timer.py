"""``DeadlineTimer``: the deadlines of a node's calls in flight on one event-loop timer.

The heap is ``mesh/deadlines.py``'s; this shell arms one ``call_at`` for its earliest live deadline
and, when it fires, tells each call whose time came (``expire(sink)``: the sink gets None, which its
reader turns into a 504). Arming and cancelling a loop timer per request cost more than the rest of
a request's bookkeeping on a node (``mesh/deadlines.py``); this re-arms only when a deadline earlier
than the armed one arrives, or when the armed one fires.

Used by the links to peers (``links.py``) and by each replica for its worker's calls
(``serving/replica.py``).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Generic, TypeVar

from ..mesh.deadlines import Deadline, DeadlineHeap

__all__ = ["DeadlineTimer"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
# A loop's timer may fire up to its clock's resolution early (uvloop's is a millisecond): what is
# due that close is due now, as asyncio's own loop treats its timers.
_EARLY_S = 0.001


class DeadlineTimer(Generic[_T]):
    """Deadlines for items (a call's sink); ``expire(item)`` runs for each whose time came."""

    __slots__ = ("_armed_at", "_expire", "_handle", "_heap", "_loop")

    def __init__(self, expire: Callable[[_T], None]) -> None:
        self._expire = expire
        self._heap: DeadlineHeap[_T] = DeadlineHeap()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = math.inf

    def __len__(self) -> int:
        """Deadlines not yet passed nor cancelled."""
        return len(self._heap)

    def at(self, when: float, item: _T) -> Deadline[_T]:
        """`item` expires at loop time `when` unless the deadline returned is cancelled first."""
        deadline = self._heap.add(when, item)
        if when < self._armed_at:
            self._arm(when)
        return deadline

    def close(self) -> None:
        """Stop the timer; deadlines still held never expire (their owner is closing)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._armed_at = math.inf

    def _arm(self, when: float) -> None:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        if self._handle is not None:
            self._handle.cancel()
        self._handle = loop.call_at(when, self._fire)
        self._armed_at = when

    def _fire(self) -> None:
        assert self._loop is not None
        self._handle = None
        self._armed_at = math.inf
        for item in self._heap.due(self._loop.time() + _EARLY_S):
            try:
                self._expire(item)
            except Exception:  # one call's failure to expire must not keep the others from it
                log.exception("expiring a call past its deadline failed")
        next_at = self._heap.next_at()
        if next_at is not None and next_at < self._armed_at:  # an expiry may have armed it already
            self._arm(next_at)
