"""Waiting for the event loop, by condition: a turn of it, or until something holds."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

MAX_TURNS = 1000


async def next_turn() -> None:
    """Return once the callbacks the loop has ready now have run: one turn, no timer."""
    loop = asyncio.get_running_loop()
    turn = loop.create_future()
    loop.call_soon(turn.set_result, None)
    await turn


async def until(holds: Callable[[], bool], what: str) -> None:
    """Let the loop turn until `holds()`; AssertionError naming `what` after MAX_TURNS turns."""
    for _ in range(MAX_TURNS):
        if holds():
            return
        await next_turn()
    raise AssertionError(f"never happened: {what}")


async def eventually(holds: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait until `holds()`, for what takes real time (sockets, other processes); TimeoutError after
    `timeout_s`. Looks every 5 ms: the condition has no event to wait on."""
    async with asyncio.timeout(timeout_s):
        while not holds():
            await asyncio.sleep(0.005)
