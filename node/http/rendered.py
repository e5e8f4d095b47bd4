"""JSON list bodies kept piece by piece: a piece is rendered again only when what it reads changed.

``GET /v1/mesh`` (a piece per member) and ``GET /v1/deployments`` (a piece per deployment) list a
thousand entries each at scale (docs/benchmarks.md, "Scale of one agent"): rendered whole on every
poll, on the event loop, they held it 20-500 ms, and the dashboard and ``meshnode top`` poll every
second. Here each piece's JSON is kept with the inputs it was rendered from.

A poll hands ``RenderedList.body`` its pieces in the order the body lists them, each as (key,
inputs). `inputs` is an immutable value holding everything the piece reads (frozen dataclasses,
tuples, metadata objects that are replaced whole and never changed in place), compared with ``==``
to the inputs of the kept JSON: an unchanged piece costs one comparison. Changed pieces are rendered
from those values in slices of about a millisecond, yielding to the event loop between slices, so a
health check, a probe or a forwarded request waits at most one slice behind a first poll or a view
that changed wholesale. (A worker thread would not do: rendering is Python and holds the GIL, and
the loop then waits up to the interpreter's 5 ms switch interval each time it wants it back;
measured, a thread's render of 1,000 members left the loop longer gaps than this does.)

Invariants: a body is ``prefix + b",".join(render(inputs) of each piece) + suffix`` for the pieces
of one poll, whatever happens while it renders (its inputs are values, and kept JSON is used only
with inputs equal to its own); nothing reads the clock, so kept JSON never ages; one render runs at
a time, and a poll that waited for it finds most of its pieces rendered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

__all__ = ["SLICE_S", "RenderedList"]

K = TypeVar("K", bound=Hashable)
I = TypeVar("I")  # noqa: E741 (the inputs of one piece)

# Rendering yields to the event loop after this long: what anything else waits behind it at most
# (a member of /v1/mesh renders in ~6 µs, a deployment's view in ~30-50 µs).
SLICE_S = 0.001


class RenderedList(Generic[K, I]):
    """One list body (``prefix``, the pieces joined by commas, ``suffix``), kept piece by piece."""

    def __init__(self, prefix: bytes, suffix: bytes, render: Callable[[I], bytes]) -> None:
        self._prefix = prefix
        self._suffix = suffix
        self._render = render
        self._kept: dict[K, tuple[I, bytes]] = {}
        self._lock = asyncio.Lock()
        self.rendered = 0  # pieces rendered so far (tests count them)
        self.slices = 0  # times a render yielded to the loop (tests count them)

    async def body(self, pieces: Sequence[tuple[K, I]]) -> bytes:
        """The body listing `pieces` (key, inputs), rendering only those whose inputs changed."""
        fragments, stale = self._match(pieces)
        if stale:
            async with self._lock:
                fragments, stale = self._match(pieces)  # what the render we waited for left
                await self._render_stale(pieces, fragments, stale)
        if len(self._kept) > len(pieces):  # some left the list: forget them
            keys = {key for key, _ in pieces}
            self._kept = {key: kept for key, kept in self._kept.items() if key in keys}
        return b"".join((self._prefix, b",".join(fragments), self._suffix))

    def _match(self, pieces: Sequence[tuple[K, I]]) -> tuple[list[bytes], list[int]]:
        """The kept JSON of each piece (b"" where it must be rendered), and the indexes to render."""
        kept = self._kept
        fragments: list[bytes] = []
        stale: list[int] = []
        for index, (key, inputs) in enumerate(pieces):
            held = kept.get(key)
            if held is not None and (held[0] is inputs or held[0] == inputs):
                fragments.append(held[1])
            else:
                fragments.append(b"")
                stale.append(index)
        return fragments, stale

    async def _render_stale(
        self, pieces: Sequence[tuple[K, I]], fragments: list[bytes], stale: list[int]
    ) -> None:
        """Render the `stale` pieces into `fragments` and keep them, yielding every ``SLICE_S``."""
        render = self._render
        until = time.perf_counter() + SLICE_S
        for index in stale:
            key, inputs = pieces[index]
            fragments[index] = json = render(inputs)
            self._kept[key] = (inputs, json)
            self.rendered += 1
            if time.perf_counter() >= until:
                self.slices += 1
                await asyncio.sleep(0)  # what else is ready runs now
                until = time.perf_counter() + SLICE_S
