"""``Answers``: one call's envelopes in the order they came, for the one task that reads them.

Every call in flight, to a peer (``links.py``) or to a replica's worker (``serving/replica.py``),
had an ``asyncio.Queue`` of its answers. A queue's bookkeeping (deques of getters and putters, an
``Event`` for ``join``, a look-up of the loop at the first ``get``) cost 1.3 us a call whose answer
is already there and 4.4 us one that waits, against 0.4 and 2.6 us for a deque and one future
(in-process, uvloop): per request, on each node it crosses. A call has one reader and needs no bound
of its own (the link's high-water mark and the call's deadline bound what can arrive), so neither
the queue's many readers nor its ``maxsize`` is wanted.

``LastAnswer`` is the same for a call that wants only its last answer (no stream, no progress): one
future for its ``Reply`` or ``Failure``, no queue and no stream to step (``PeerLinks.final``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import replace
from typing import Any, Generic, Protocol, TypeVar

from ..errors import DeadlineExceeded, PredictorError
from ..mesh.envelope import Call, Chunk, Envelope, Failure, Progress, Reply

__all__ = ["Answers", "LastAnswer", "Sink", "last_of", "no_more", "past_deadline", "time_out"]

_T = TypeVar("_T")


class Answers(Generic[_T]):
    """A queue for one reader: ``put_nowait`` from callbacks, ``await get()`` in the calling task."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[_T] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: _T) -> None:
        """Add `item`; the reader, if it waits, wakes."""
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> _T:
        """The oldest item, once there is one. Cancelling the wait loses nothing."""
        while not self._items:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def qsize(self) -> int:
        """How many items wait to be read."""
        return len(self._items)


class Sink(Protocol):
    """Where a call's answers go as they arrive (None: its deadline passed)."""

    def put_nowait(self, item: Envelope | None) -> None:
        """Take one."""
        ...


class LastAnswer:
    """The answers of a call that wants only its last one, for the one task that awaits it.

    A file answer's pieces (``Chunk``s of bytes) are joined into its ``Reply``; other chunks and
    progress nobody asked for are dropped; the ``Reply``, a ``Failure`` or None (the deadline) is
    what ``wait`` gives, and anything after it goes nowhere.
    """

    __slots__ = ("_future", "_pieces")

    def __init__(self) -> None:
        self._future: asyncio.Future[Envelope | None] = asyncio.get_running_loop().create_future()
        self._pieces: list[bytes] = []

    def put_nowait(self, item: Envelope | None) -> None:
        """One answer from the peer, or None from the deadline's timer."""
        if self._future.done():
            return
        if isinstance(item, Chunk):
            if isinstance(item.data, bytes):
                self._pieces.append(item.data)
            return
        if isinstance(item, Progress):
            return
        if isinstance(item, Reply) and self._pieces and isinstance(item.data, bytes):
            item = replace(item, data=b"".join([*self._pieces, item.data]))
        self._future.set_result(item)

    async def wait(self) -> Envelope | None:
        """The last answer, or None when the deadline came first."""
        return await self._future


async def no_more() -> AsyncGenerator[Any, None]:
    """The rest of a call whose first answer was its last: nothing."""
    return
    yield  # pragma: no cover (makes this an async generator)


async def last_of(messages: AsyncGenerator[Envelope, None]) -> Envelope:
    """The Reply or Failure that ends `messages` (a call that does not stream); the stream closed."""
    async with contextlib.aclosing(messages):
        async for message in messages:
            if isinstance(message, Reply | Failure):
                return message
    raise PredictorError("the replica ended the request without an answer")


def past_deadline(call: Call) -> DeadlineExceeded:
    """The error of `call` when its deadline passed before its answer (504)."""
    return DeadlineExceeded(f"{call.deployment} did not answer within {call.timeout_ms / 1000:g} s")


def time_out(sink: Sink) -> None:
    """A call's deadline passed: None to its sink, which its reader answers with ``past_deadline``."""
    sink.put_nowait(None)
