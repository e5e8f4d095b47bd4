"""Many deadlines, one timer: which of them passed by `now`, and when the next one is due.

Every request in flight holds a deadline from when it is sent until its answer, on each node it
crosses, and almost every answer comes long before it. An event-loop timer per request costs more
than the rest of a request's bookkeeping (uvloop: 2.1 µs to arm one and cancel it, against 0.4 µs
here), so a node keeps its deadlines in a heap and arms one timer, for the earliest.

Invariants:

- Cancelling is O(1): a cancelled deadline stays in the heap, marked, until it reaches the top
  (dropped there) or the heap is rebuilt, which happens once cancelled entries outnumber the live
  ones (plus a constant): the heap never holds more than about twice what is live, however long the
  node runs, and rebuilding costs O(1) per cancellation, amortised.
- ``due(now)`` hands out each live deadline whose time came, once, earliest first; a deadline
  handed out or cancelled is never handed out again.
- ``next_at()`` is the earliest live deadline's time, or None: what the shell's timer waits for.

Time comes in as an argument (the shell's ``loop.time()``), so this is pure logic.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Generic, TypeVar

__all__ = ["Deadline", "DeadlineHeap"]

_T = TypeVar("_T")
# Cancelled entries the heap may hold beyond the live ones before it is rebuilt without them.
_SLACK = 64


class Deadline(Generic[_T]):
    """One deadline in a ``DeadlineHeap``: its time, what it is for, and a way to cancel it."""

    __slots__ = ("_heap", "at", "item")

    def __init__(self, heap: DeadlineHeap[_T], at: float, item: _T) -> None:
        self._heap = heap
        self.at = at
        self.item: _T | None = item  # None once cancelled or handed out

    def cancel(self) -> None:
        """Forget this deadline (its request was answered); nothing if it passed or was cancelled."""
        if self.item is not None:
            self.item = None
            self._heap._cancelled()


class DeadlineHeap(Generic[_T]):
    """Deadlines by time; cancelled ones are dropped lazily (module docstring)."""

    __slots__ = ("_entries", "_live", "_order")

    def __init__(self) -> None:
        # (time, order of adding, deadline): the order breaks ties, so deadlines are never compared.
        self._entries: list[tuple[float, int, Deadline[_T]]] = []
        self._live = 0
        self._order = itertools.count()

    def __len__(self) -> int:
        """Live deadlines (neither cancelled nor handed out)."""
        return self._live

    def add(self, at: float, item: _T) -> Deadline[_T]:
        """A deadline at time `at` for `item`."""
        deadline = Deadline(self, at, item)
        heapq.heappush(self._entries, (at, next(self._order), deadline))
        self._live += 1
        return deadline

    def due(self, now: float) -> list[_T]:
        """The items of the live deadlines at or before `now`, earliest first; each once."""
        entries, items = self._entries, []
        while entries and entries[0][0] <= now:
            deadline = heapq.heappop(entries)[2]
            item = deadline.item
            if item is not None:
                deadline.item = None
                self._live -= 1
                items.append(item)
        return items

    def next_at(self) -> float | None:
        """The earliest live deadline's time, None when there is none."""
        entries = self._entries
        while entries and entries[0][2].item is None:
            heapq.heappop(entries)
        return entries[0][0] if entries else None

    def _cancelled(self) -> None:
        self._live -= 1
        entries = self._entries
        if len(entries) > 2 * self._live + _SLACK:
            self._entries = [entry for entry in entries if entry[2].item is not None]
            heapq.heapify(self._entries)
