"""Dynamic batching: gather concurrent requests into one ``predict_batch`` call.

The first request of a batch waits at most ``max_wait_s`` for company; the batch runs as soon as it
holds ``max_size`` requests or the wait is over, whichever comes first. One batch runs at a time, and
requests that arrive meanwhile form the next batch, so under load batches fill up by themselves and
the wait only costs anything when the replica is nearly idle. The wait starts when the runner is
free to wait, so requests that queued up behind a batch still get ``max_wait_s`` for company after
it: a batch of a replica that all its clients keep busy (MiniLM at c = 32, batches of at most 32)
then also holds those whose previous answers came back meanwhile (measured: 17-21 a batch on
average, against 16 when the queued ones ran at once; the model's CPU per sentence is about the
same from 12 to 32, so this is for the per-batch costs, not the model).
`run_batch` returns one result per item, where an exception instance fails just that item; if it
raises, the whole batch fails.

The runner sleeps through the wait on one future, which the request that fills the batch or the
timer wakes: the requests in between cost an append each, not a wakeup of the runner.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Any

Pending = tuple[Any, "asyncio.Future[Any]"]  # an item, and its result to come


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
        self._pending: collections.deque[Pending] = collections.deque()
        self._filled: asyncio.Future[None] | None = None  # the runner's wait for a full batch
        self._runner: asyncio.Task[None] | None = None
        # How many batches of each size ran: /metrics' meshnode_batch_size, and tests. A counter, not
        # a list: a replica runs millions of batches.
        self.batch_sizes: collections.Counter[int] = collections.Counter()

    async def submit(self, item: Any) -> Any:
        """Queue `item`; return its result once its batch has run."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self.max_size:
            _wake(self._filled)
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run_forever())
        return await future

    async def _run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        pending = self._pending
        while pending:
            if len(pending) < self.max_size and self.max_wait_s > 0:
                # Wait for company, but never longer than max_wait_s.
                self._filled = filled = loop.create_future()
                timer = loop.call_later(self.max_wait_s, _wake, filled)
                try:
                    await filled
                finally:
                    timer.cancel()
                    self._filled = None
            batch = [pending.popleft() for _ in range(min(self.max_size, len(pending)))]
            live = [(item, future) for item, future in batch if not future.cancelled()]
            if not live:
                continue
            self.batch_sizes[len(live)] += 1
            try:
                results = await self._run_batch([item for item, _ in live])
            except Exception as exc:
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(live, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)  # one bad request fails alone, not its batch
                else:
                    future.set_result(result)


def _wake(filled: asyncio.Future[None] | None) -> None:
    if filled is not None and not filled.done():
        filled.set_result(None)
