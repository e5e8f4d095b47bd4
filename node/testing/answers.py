"""Scripted answers for fake replicas: what a replica does with a request once it admitted it.

An answer is a function from a ``Call`` to the envelopes a replica's worker would send back
(``Chunk``s, then a ``Reply`` or a ``Failure``), the same shape as ``Replicas.serve_local``. The
ones here cover what the request path must handle; a test that needs another writes its own async
generator function with the same signature.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..errors import MeshnodeError
from ..mesh.envelope import Call, Chunk, Envelope, Failure, Reply

__all__ = [
    "JSON",
    "STREAM",
    "Answer",
    "delayed",
    "echoes",
    "fails",
    "gated",
    "hangs",
    "refuses",
    "replies",
    "streams",
]

JSON = "application/json"
STREAM = "text/event-stream"  # a worker ends a stream with a Reply of this type and no data

Answer = Callable[[Call], AsyncIterator[Envelope]]


def replies(data: Any, content_type: str = JSON) -> Answer:
    """Answer every request with one ``Reply`` of `data`."""

    async def answer(call: Call) -> AsyncIterator[Envelope]:
        yield Reply(call.request_id, data, content_type)

    return answer


def echoes(tag: str) -> Answer:
    """Answer with ``{"tag": tag, "body": <the request's body>}``: who served it, and what it got."""

    async def answer(call: Call) -> AsyncIterator[Envelope]:
        yield Reply(call.request_id, {"tag": tag, "body": call.body}, JSON)

    return answer


def streams(*pieces: Any) -> Answer:
    """Answer with one ``Chunk`` per piece, then the ``Reply`` that ends a stream."""

    async def answer(call: Call) -> AsyncIterator[Envelope]:
        for seq, piece in enumerate(pieces):
            yield Chunk(call.request_id, seq, piece)
        yield Reply(call.request_id, None, STREAM)

    return answer


def fails(kind: str, message: str = "scripted failure", *, retryable: bool = True) -> Answer:
    """Answer with a ``Failure`` envelope (as a worker that crashed sends ``replica_crashed``)."""

    async def answer(call: Call) -> AsyncIterator[Envelope]:
        yield Failure(call.request_id, kind, message, retryable)

    return answer


def refuses(error: MeshnodeError) -> Answer:
    """Raise `error` before any output, as a replica refusing at admission does."""

    async def answer(call: Call) -> AsyncIterator[Envelope]:
        raise copy.copy(error)  # a fresh one each time: a raised exception keeps its traceback
        yield  # pragma: no cover (makes this an async generator)

    return answer


def hangs() -> Answer:
    """Never answer: the request ends only by its deadline or by being cancelled."""

    async def answer(call: Call) -> AsyncIterator[Envelope]:
        await asyncio.Event().wait()  # nobody sets it
        yield Failure(call.request_id, "internal", "a hanging answer woke up", False)

    return answer


def gated(gate: asyncio.Event, then: Answer) -> Answer:
    """Wait until `gate` is set, then answer as `then` does: the test decides when."""

    async def answer(call: Call) -> AsyncIterator[Envelope]:
        await gate.wait()
        async for message in then(call):
            yield message

    return answer


def delayed(seconds: float, then: Answer) -> Answer:
    """Take `seconds` (of the event loop's clock), then answer as `then` does."""

    async def answer(call: Call) -> AsyncIterator[Envelope]:
        await asyncio.sleep(seconds)
        async for message in then(call):
            yield message

    return answer
