"""Dynamic batching: gather concurrent requests into one ``predict_batch`` call.

The first request of a batch waits at most ``max_wait_s`` for company; the batch runs as soon as it
holds ``max_size`` requests or the wait is over, whichever comes first. One batch runs at a time, and
requests that arrive meanwhile form the next batch, so under load batches fill up by themselves and
the wait only costs anything when the replica is nearly idle. `run_batch` returns one result per
item, where an exception instance fails just that item; if it raises, the whole batch fails.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Any


class Batcher:
    """Collects submitted items and runs them through `run_batch` in groups."""

    def __init__(
        self,
        run_batch: Callable[[list[Any]], Awaitable[list[Any]]],
        *,
        max_size: int,
        max_wait_s: float,
    ) -> None:
        if max_size < 1 or max_wait_s < 0:
            raise ValueError("max_size must be >= 1 and max_wait_s >= 0")
        self._run_batch = run_batch
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self._pending: list[tuple[Any, asyncio.Future[Any]]] = []
        self._wakeup = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        # How many batches of each size ran: /metrics' meshnode_batch_size, and tests. A counter, not
        # a list: a replica runs millions of batches.
        self.batch_sizes: collections.Counter[int] = collections.Counter()

    async def submit(self, item: Any) -> Any:
        """Queue `item`; return its result once its batch has run."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._wakeup.set()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run_forever())
        return await future

    async def _run_forever(self) -> None:
        while self._pending:
            if len(self._pending) < self.max_size:
                # Wait for company, but never longer than max_wait_s after the first arrival.
                loop = asyncio.get_running_loop()
                deadline = loop.time() + self.max_wait_s
                while len(self._pending) < self.max_size and (left := deadline - loop.time()) > 0:
                    self._wakeup.clear()
                    try:
                        async with asyncio.timeout(left):
                            await self._wakeup.wait()
                    except TimeoutError:
                        break
            batch, self._pending = self._pending[: self.max_size], self._pending[self.max_size :]
            batch = [(item, future) for item, future in batch if not future.cancelled()]
            if not batch:
                continue
            self.batch_sizes[len(batch)] += 1
            try:
                results = await self._run_batch([item for item, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)  # one bad request fails alone, not its batch
                else:
                    future.set_result(result)
