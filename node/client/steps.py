"""The steps a client's plan may ask for: the only I/O of ``MeshClient`` and ``AsyncMeshClient``.

Every method of the two clients is a plan: a generator, built once in the shared core (``base.py``,
``exchange.py``, ``answers.py``, ``jobs.py``, ``job_watch.py``), that yields the I/O it needs and is
sent what came of it. The two faces only carry those actions out, one with ``httpx.Client`` and the
other awaited with ``httpx.AsyncClient``, as uvicorn carries out h11's events:

    Send(method, url, ...)  -> the ``httpx.Response`` once its headers arrived (body not read)
    Read(response)          -> the body's bytes (the response is closed)
    Lines(response)         -> an iterator of the body's lines, for ``NextLine``
    NextLine(lines)         -> the next line of a streamed answer, None at its end
    Close(response)         -> None, once the response is closed
    Pause(seconds)          -> None, after sleeping
    Save(path, content)     -> None, once the file is written whole

An action that failed is thrown back into the plan instead (``step``), so the plan alone decides what
a failure means: a refused connection is failed over, a broken stream is closed and translated, and
whatever it does not handle leaves the plan as it came.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx

__all__ = [
    "Action",
    "Close",
    "Finished",
    "Lines",
    "NextLine",
    "Pause",
    "Read",
    "Save",
    "Send",
    "Steps",
    "step",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Send:
    """Send one HTTP request to one node and hand back the response once its headers are in."""

    method: str
    url: str
    headers: Mapping[str, str]
    json: Any
    timeout: httpx.Timeout


@dataclass(frozen=True)
class Read:
    """Read the whole body of ``response`` and close it."""

    response: httpx.Response


@dataclass(frozen=True)
class Lines:
    """Start reading the body of ``response`` line by line: the iterator ``NextLine`` reads from."""

    response: httpx.Response


@dataclass(frozen=True)
class NextLine:
    """Read the next line of a streamed answer from ``lines`` (from ``Lines``, or made by a face)."""

    lines: Iterator[str] | AsyncIterator[str]


@dataclass(frozen=True)
class Close:
    """Close ``response`` without reading the rest of it."""

    response: httpx.Response


@dataclass(frozen=True)
class Pause:
    """Sleep before the next round of a retried request."""

    seconds: float


@dataclass(frozen=True)
class Save:
    """Write a downloaded file to ``path``, whole or not at all."""

    path: str | os.PathLike[str]
    content: bytes


Action = Send | Read | Lines | NextLine | Close | Pause | Save
Steps = Generator[Action, Any, T]


@dataclass(frozen=True)
class Finished(Generic[T]):
    """What a finished ``Steps`` generator returned."""

    value: T


def step(steps: Steps[T], reply: object) -> Action | Finished[T]:
    """Resume ``steps`` with what came of its last action (an exception is thrown into it)."""
    try:
        if isinstance(reply, BaseException):
            return steps.throw(reply)
        return steps.send(reply)
    except StopIteration as stop:
        return Finished(stop.value)
