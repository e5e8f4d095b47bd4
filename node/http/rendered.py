"""JSON list bodies kept piece by piece: a piece is rendered again only when what it reads changed.

``GET /v1/mesh`` (a piece per member) and ``GET /v1/deployments`` (a piece per deployment) list a
thousand entries each at scale (docs/benchmarks.md, "Scale of one agent"): rendered whole on every
poll, on the event loop, they held it 20-500 ms, and the dashboard and ``meshnode top`` poll every
second. Here each piece's JSON is kept with the inputs it was rendered from.

A poll hands ``RenderedList.body`` its pieces in the order the body lists them, each as (key,
inputs). `inputs` is an immutable value holding everything the piece reads (frozen dataclasses,
tuples, metadata objects that are replaced whole and never changed in place), compared with ``==``
to the inputs of the kept JSON: an unchanged piece costs one comparison. Changed pieces are rendered
on the event loop when they are few, and in a worker thread, from the same immutable values, when
there are many (a first poll, a view that changed wholesale), so a health check, a probe or a
forwarded request never waits behind a whole render.

Invariants: a body is ``prefix + b",".join(render(inputs) of each piece) + suffix`` for the pieces
of one poll, whatever other polls render meanwhile (kept JSON is used only with inputs equal to its
own); nothing reads the clock, so kept JSON never ages; one render runs at a time, and a poll that
waited for it finds most of its pieces rendered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

__all__ = ["RenderedList"]

K = TypeVar("K", bound=Hashable)
I = TypeVar("I")  # noqa: E741 (the inputs of one piece)

# Changed pieces up to this many are rendered on the event loop; more go to a worker thread. A
# member of /v1/mesh renders in ~6 µs, a deployment's view in ~50 µs: each route sets its own.
INLINE_MAX = 64
# A worker thread renders in Python and so holds the GIL; it lets go every this many pieces, so
# the event loop waits at most a few pieces rather than the interpreter's 5 ms switch interval.
_YIELD_EVERY = 8


class RenderedList(Generic[K, I]):
    """One list body (``prefix``, the pieces joined by commas, ``suffix``), kept piece by piece."""

    def __init__(
        self, prefix: bytes, suffix: bytes, render: Callable[[I], bytes], *, inline_max: int = INLINE_MAX
    ) -> None:
        self._prefix = prefix
        self._suffix = suffix
        self._render = render
        self._inline_max = inline_max
        self._kept: dict[K, tuple[I, bytes]] = {}
        self._lock = asyncio.Lock()
        self.rendered = 0  # pieces rendered so far (tests count them)

    async def body(self, pieces: Sequence[tuple[K, I]]) -> bytes:
        """The body listing `pieces` (key, inputs), rendering only those whose inputs changed."""
        fragments, stale = self._match(pieces)
        if stale:
            async with self._lock:
                fragments, stale = self._match(pieces)  # what the render we waited for left
                if stale:
                    inputs = [pieces[index][1] for index in stale]
                    if len(stale) > self._inline_max:
                        data = await asyncio.to_thread(self._render_all, inputs, True)
                    else:
                        data = self._render_all(inputs, False)
                    self.rendered += len(stale)
                    kept = self._kept
                    for index, piece, json in zip(stale, inputs, data, strict=True):
                        fragments[index] = json
                        kept[pieces[index][0]] = (piece, json)
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

    def _render_all(self, inputs: list[I], in_thread: bool) -> list[bytes]:
        render = self._render
        out = []
        for count, piece in enumerate(inputs, 1):
            out.append(render(piece))
            if in_thread and count % _YIELD_EVERY == 0:
                time.sleep(0)  # lets go of the GIL: the event loop takes it if it waits
        return out
