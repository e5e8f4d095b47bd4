"""``settle_heap``: what a process holds after start-up leaves the collector's generations."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from meshnode.event_loop import GC_YOUNG_THRESHOLD, settle_heap


@pytest.fixture
def collector() -> Iterator[None]:
    """The test process's collector as it was, afterwards."""
    threshold = gc.get_threshold()
    yield
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
