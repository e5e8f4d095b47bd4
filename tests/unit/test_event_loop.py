"""``settle_heap``: what a process holds after start-up leaves the collector's generations."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from meshnode.event_loop import GC_YOUNG_THRESHOLD, settle_heap


@pytest.fixture
def collector() -> Iterator[None]:
    """The test process's collector as it was, afterwards."""
    threshold, callbacks = gc.get_threshold(), list(gc.callbacks)
    yield
    gc.callbacks[:] = callbacks
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("collector")
def test_settling_freezes_what_exists_and_collects_young_objects_less_often() -> None:
    kept = [object() for _ in range(100)]
    settle_heap()
    assert gc.get_freeze_count() >= len(kept)  # these, the modules, everything made so far
    assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
    # A full collection then scans only what came after: cyclic garbage made now is still found.
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1


@pytest.mark.usefixtures("collector")
def test_a_slow_full_collection_freezes_what_survived_it_and_still_collects_cycles() -> None:
    settle_heap(refreeze_after_s=0.0)  # every full collection counts as slow
    frozen = gc.get_freeze_count()
    kept = [[index] for index in range(1000)]  # made after start-up, and still live
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1  # the cycle made since is collected, not frozen
    assert gc.get_freeze_count() >= frozen + len(kept)  # the survivors are left out of the next scan
    assert gc.get_count() == (0, 0, 0)


@pytest.mark.usefixtures("collector")
def test_a_quick_full_collection_freezes_nothing() -> None:
    callbacks = len(gc.callbacks)
    settle_heap(refreeze_after_s=3600.0)
    settle_heap(refreeze_after_s=3600.0)
    assert len(gc.callbacks) == callbacks + 1  # installed once, however often the heap settles
    frozen = gc.get_freeze_count()
    kept = [[index] for index in range(1000)]
    gc.collect()
    assert gc.get_freeze_count() == frozen
    assert len(kept) == 1000
