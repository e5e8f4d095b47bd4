"""Requests held for a cold start: released when a replica serves, refused at once when none will."""

from __future__ import annotations

import asyncio

import pytest

from meshnode.errors import MeshnodeError, NotReady
from meshnode.serving.cold_start import ColdStarts


class Prospects:
    """What the placement shell would answer (``Deployments._refusal`` and ``_serving_anywhere``)."""

    def __init__(self) -> None:
        self.serving = False
        self.refusal: MeshnodeError | None = None

    def cold_starts(self) -> ColdStarts:
        return ColdStarts(
            queue_size=4,
            serving=lambda name: self.serving,
            refusal=lambda name: self.refusal,
            on_demand=lambda: None,
        )


async def held(cold: ColdStarts, name: str, timeout_s: float) -> asyncio.Task[None]:
    """A request waiting for `name`, once it is counted as waiting."""
    task = asyncio.create_task(cold.wait(name, asyncio.get_running_loop().time() + timeout_s))
    while cold.waiting[name] == 0 and not task.done():
        await asyncio.sleep(0)  # one turn of the loop: the waiter registers itself
    return task


async def test_a_waiting_request_gets_the_failure_as_soon_as_the_replica_fails_to_start() -> None:
    prospects = Prospects()
    cold = prospects.cold_starts()
    waiting = await held(cold, "x", timeout_s=60)
    assert not waiting.done()

    prospects.refusal = NotReady("x failed to start: setup failed: boom", retry_after_s=10.0)
    cold.view_changed()

    started = asyncio.get_running_loop().time()
    with pytest.raises(NotReady, match="boom") as caught:
        await asyncio.wait_for(waiting, 5)
    assert asyncio.get_running_loop().time() - started < 1, "it waited for its deadline"
    assert caught.value.retry_after_s == 10.0
    assert cold.waiting["x"] == 0


async def test_a_waiting_request_is_released_when_a_replica_serves() -> None:
    prospects = Prospects()
    cold = prospects.cold_starts()
    waiting = await held(cold, "x", timeout_s=60)

    prospects.serving = True
    cold.view_changed()

    await asyncio.wait_for(waiting, 5)
    assert cold.waiting["x"] == 0
