"""Batcher: when a batch runs, what it holds, and that one bad item fails alone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from meshnode.inference.batching import Batcher

from ..loop_turns import until


class Recorder:
    """A run_batch that records each batch and the loop time it began, then answers item * 10."""

    def __init__(self, *, held: bool = False) -> None:
        self.batches: list[list[Any]] = []
        self.began: list[float] = []
        # Held: a batch runs until `release` is set, as a model's batch takes its time.
        self.release = asyncio.Event()
        if not held:
            self.release.set()

    async def __call__(self, items: list[Any]) -> list[Any]:
        self.batches.append(list(items))
        self.began.append(asyncio.get_running_loop().time())
        await self.release.wait()
        return [ValueError(f"bad {x}") if x == "bad" else x * 10 for x in items]


async def test_a_full_batch_runs_without_waiting_for_the_timer() -> None:
    run = Recorder()
    batcher = Batcher(run, max_size=4, max_wait_s=30.0)
    results = await asyncio.wait_for(asyncio.gather(*(batcher.submit(n) for n in range(4))), 5)
    assert results == [0, 10, 20, 30]
    assert run.batches == [[0, 1, 2, 3]]


async def test_a_lone_item_waits_at_most_max_wait_s() -> None:
    run = Recorder()
    batcher = Batcher(run, max_size=4, max_wait_s=0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await asyncio.wait_for(batcher.submit(1), 5) == 10
    assert 0.04 <= run.began[0] - started < 2.0
    assert run.batches == [[1]]


async def test_items_queued_behind_a_batch_still_wait_for_company_after_it() -> None:
    run = Recorder(held=True)
    batcher = Batcher(run, max_size=4, max_wait_s=0.5)
    first = [asyncio.ensure_future(batcher.submit(n)) for n in range(4)]
    await until(lambda: len(run.batches) == 1, "the first batch runs (full)")
    second = [asyncio.ensure_future(batcher.submit(n)) for n in (4, 5)]  # these arrive during it
    await until(lambda: len(batcher._pending) == 2, "they queue behind it")
    run.release.set()
    # The first batch is over; the next one waits for company.
    assert await asyncio.wait_for(asyncio.gather(*first), 5) == [0, 10, 20, 30]
    late = asyncio.ensure_future(batcher.submit(6))
    assert await asyncio.wait_for(asyncio.gather(*second, late), 5) == [40, 50, 60]
    assert run.batches == [[0, 1, 2, 3], [4, 5, 6]]


async def test_the_wait_ends_as_soon_as_the_batch_is_full() -> None:
    run = Recorder()
    batcher = Batcher(run, max_size=3, max_wait_s=30.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    one = asyncio.ensure_future(batcher.submit(1))
    await until(lambda: batcher._filled is not None, "the runner waits for company")
    rest = [asyncio.ensure_future(batcher.submit(n)) for n in (2, 3)]
    assert await asyncio.wait_for(asyncio.gather(one, *rest), 5) == [10, 20, 30]
    assert run.began[0] - started < 5.0


async def test_a_batch_holds_at_most_max_size_and_the_rest_form_the_next() -> None:
    run = Recorder()
    batcher = Batcher(run, max_size=3, max_wait_s=0.01)
    results = await asyncio.wait_for(asyncio.gather(*(batcher.submit(n) for n in range(7))), 5)
    assert results == [n * 10 for n in range(7)]
    assert run.batches == [[0, 1, 2], [3, 4, 5], [6]]
    assert batcher.batch_sizes == {3: 2, 1: 1}


async def test_one_bad_item_fails_alone() -> None:
    batcher = Batcher(Recorder(), max_size=3, max_wait_s=0.01)
    results = await asyncio.gather(*(batcher.submit(x) for x in (1, "bad", 2)), return_exceptions=True)
    assert results[0] == 10 and results[2] == 20
    assert isinstance(results[1], ValueError)


async def test_a_failing_batch_fails_each_of_its_items_and_the_next_batch_still_runs() -> None:
    calls = 0

    async def run(items: list[Any]) -> list[Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("the model fell over")
        return items

    batcher = Batcher(run, max_size=2, max_wait_s=0.01)
    failed = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
    assert all(isinstance(x, RuntimeError) for x in failed)
    assert await batcher.submit(3) == 3


async def test_a_cancelled_item_is_left_out_of_its_batch() -> None:
    run = Recorder()
    batcher = Batcher(run, max_size=4, max_wait_s=0.05)
    gone = asyncio.ensure_future(batcher.submit(1))
    kept = asyncio.ensure_future(batcher.submit(2))
    await until(lambda: len(batcher._pending) == 2, "both are queued")
    gone.cancel()
    assert await asyncio.wait_for(kept, 5) == 20
    assert run.batches == [[2]]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Batcher(Recorder(), max_size=0, max_wait_s=0.01)
    with pytest.raises(ValueError):
        Batcher(Recorder(), max_size=2, max_wait_s=-1)
