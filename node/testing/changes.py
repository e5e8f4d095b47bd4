"""Waiting for a fake's state to change, without sleeping: a test awaits a condition, not a time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["Changes"]


class Changes:
    """Wakes whoever waits on a condition each time the state it reads changes."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def notify(self) -> None:
        """The state changed: every waiter looks at its condition again."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def until(self, condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
        """Return once `condition()` holds; TimeoutError after `timeout_s` (a test that went wrong)."""
        async with asyncio.timeout(timeout_s):
            while not condition():
                await self._changed.wait()
