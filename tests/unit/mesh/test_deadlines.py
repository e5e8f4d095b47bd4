"""``DeadlineHeap``: deadlines come due once, earliest first; cancelled ones never do; and the heap
stays about the size of what is live however many calls come and go (a node runs for months)."""

from __future__ import annotations

import random

from meshnode.mesh.deadlines import DeadlineHeap


def test_deadlines_come_due_earliest_first_and_once() -> None:
    heap: DeadlineHeap[str] = DeadlineHeap()
    heap.add(3.0, "c")
    heap.add(1.0, "a")
    heap.add(2.0, "b")
    assert heap.next_at() == 1.0
    assert heap.due(0.5) == []
    assert heap.due(2.0) == ["a", "b"]
    assert heap.due(2.0) == []  # handed out already
    assert len(heap) == 1
    assert heap.next_at() == 3.0
    assert heap.due(10.0) == ["c"]
    assert heap.next_at() is None
    assert len(heap) == 0


def test_deadlines_at_the_same_time_come_in_the_order_they_were_added() -> None:
    heap: DeadlineHeap[int] = DeadlineHeap()
    for item in range(5):
        heap.add(1.0, item)
    assert heap.due(1.0) == [0, 1, 2, 3, 4]


def test_a_cancelled_deadline_never_comes_due_and_the_next_one_is_the_earliest_live() -> None:
    heap: DeadlineHeap[str] = DeadlineHeap()
    first = heap.add(1.0, "answered")
    heap.add(2.0, "waiting")
    first.cancel()
    first.cancel()  # twice: still one cancellation
    assert len(heap) == 1
    assert heap.next_at() == 2.0
    assert heap.due(5.0) == ["waiting"]


def test_cancelling_a_deadline_that_came_due_changes_nothing() -> None:
    heap: DeadlineHeap[str] = DeadlineHeap()
    deadline = heap.add(1.0, "late")
    other = heap.add(9.0, "other")
    assert heap.due(1.0) == ["late"]
    deadline.cancel()  # the caller's finally runs after its deadline's answer: no double count
    assert len(heap) == 1
    other.cancel()
    assert len(heap) == 0
    assert heap.next_at() is None


def test_the_heap_holds_about_what_is_live_however_many_calls_are_answered() -> None:
    # Calls answered long before their deadlines, as nearly all are: without rebuilding, the heap
    # would hold every call of the last timeout (300,000 at 10,000 requests/s and 30 s).
    heap: DeadlineHeap[int] = DeadlineHeap()
    rng = random.Random(7)
    live = []
    for n in range(100_000):
        live.append(heap.add(30.0 + n / 10_000, n))
        if len(live) > 32:  # 32 in flight at a time, answered in any order
            live.pop(rng.randrange(len(live))).cancel()
        assert len(heap._entries) <= 2 * len(heap) + 64 + 1
    assert len(heap) == len(live)
    waiting = sorted(deadline.item for deadline in live if deadline.item is not None)
    assert heap.due(1e9) == waiting
