"""The schedule of one model pull: which holders to use, and which chunk to ask which holder next.

A node that lacks a model pulls it, chunk by chunk, from the members that gossip they hold it
(``node/models/pulls.py`` is the shell that carries these decisions out). Two pure parts:

- ``choose_holders``: from the gossiped ``{node: short digest}`` of one model name, the digest to
  pull and the nodes that hold it. When holders disagree (the model was replaced on some of them,
  and gossip has not caught up), the digest held by the most nodes wins, ties going to the smaller
  digest, so every node that pulls at the same moment pulls the same content.
- ``PullPlan``: the chunks still to fetch, in order, handed out to holders so that each has at most
  ``per_holder`` requests outstanding (several peers in parallel, a few requests each so a round
  trip never leaves a link idle). A faster holder frees its slots sooner and so gets more chunks.

Invariants of a ``PullPlan``:

- every chunk is in exactly one of: done, pending (queued), in flight at one holder;
- a holder that failed (no answer, connection lost) is set aside for the rest of the pull, and
  its chunks in flight go back to the front of the queue;
- a chunk whose bytes did not match its hash is refused and queued again; it goes next to a
  holder that has not sent bad bytes for it when one is usable, else back to the same one, at most
  ``max_bad_per_chunk`` bad copies in all (a chunk corrupt everywhere fails the pull instead of
  being fetched forever); a holder that sent ``max_bad_per_holder`` bad chunks is set aside (its
  disk, or the node, cannot be trusted for the rest);
- ``stuck()`` names why when chunks remain, nothing is in flight and no holder can be asked: the
  shell then fails the pull (or finds new holders and calls ``add_holders``).
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["MAX_BAD_PER_CHUNK", "MAX_BAD_PER_HOLDER", "Ask", "PullPlan", "choose_holders"]

# Three bad copies of one chunk: not a flipped bit on one disk but the same bytes everywhere, so
# asking again cannot help.
MAX_BAD_PER_CHUNK = 3
# A holder that sent three chunks with wrong bytes has a damaged copy (or lies): set it aside.
MAX_BAD_PER_HOLDER = 3


@dataclass(frozen=True)
class Ask:
    """One request to make: chunk number `chunk` (in manifest order) from `holder`."""

    holder: str
    chunk: int


def choose_holders(held: Mapping[str, str]) -> tuple[str, list[str]] | None:
    """The digest to pull and its holders (sorted), from `{node: digest}`; None when nobody holds it.

    The digest held by the most nodes wins; a tie goes to the smaller digest.
    """
    by_digest: dict[str, list[str]] = {}
    for node, digest in held.items():
        by_digest.setdefault(digest, []).append(node)
    if not by_digest:
        return None
    digest = min(by_digest, key=lambda item: (-len(by_digest[item]), item))
    return digest, sorted(by_digest[digest])


class PullPlan:
    """Which chunk to ask which holder next, for one pull (see the module docstring)."""

    def __init__(
        self,
        chunk_count: int,
        done: Iterable[int],
        holders: Iterable[str],
        *,
        per_holder: int,
        max_bad_per_chunk: int = MAX_BAD_PER_CHUNK,
        max_bad_per_holder: int = MAX_BAD_PER_HOLDER,
    ) -> None:
        if chunk_count < 0 or per_holder < 1:
            raise ValueError("a pull plan needs chunk_count >= 0 and per_holder >= 1")
        self.chunk_count = chunk_count
        self.per_holder = per_holder
        self.max_bad_per_chunk = max_bad_per_chunk
        self.max_bad_per_holder = max_bad_per_holder
        self.done: set[int] = {chunk for chunk in done if 0 <= chunk < chunk_count}
        # Chunks never asked for, in order, and chunks to ask again (sorted), which go first.
        self._fresh: deque[int] = deque(c for c in range(chunk_count) if c not in self.done)
        self._again: list[int] = []
        self._in_flight: dict[int, str] = {}
        self._holders: list[str] = []  # usable ones, in the order they are offered chunks
        self._load: dict[str, int] = {}  # requests outstanding per usable holder
        self.aside: dict[str, str] = {}  # holder -> why it is no longer asked
        self._bad_from: dict[int, set[str]] = {}  # chunk -> holders that sent bad bytes for it
        self._bad_count: dict[int, int] = {}  # chunk -> bad copies received in all
        self.bad_by_holder: dict[str, int] = {}
        self.add_holders(holders)

    # -- what the shell reads -------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Every chunk is done."""
        return len(self.done) == self.chunk_count

    @property
    def holders(self) -> list[str]:
        """The holders still asked, in order."""
        return list(self._holders)

    @property
    def in_flight(self) -> int:
        """Requests outstanding."""
        return len(self._in_flight)

    def in_use(self) -> list[str]:
        """Holders with a request outstanding now."""
        return [holder for holder in self._holders if self._load[holder] > 0]

    def stuck(self) -> str | None:
        """Why the pull cannot go on (chunks left, none in flight, nobody to ask), else None."""
        if self.finished or self._in_flight or self._can_ask_any():
            return None
        if not self._holders:
            reasons = "; ".join(f"{holder}: {why}" for holder, why in sorted(self.aside.items()))
            return f"no holder left to ask ({reasons or 'none was known'})"
        chunk = next(c for c in self._again if self._bad_count.get(c, 0) >= self.max_bad_per_chunk)
        return f"chunk {chunk} had wrong bytes {self._bad_count[chunk]} times (from every holder asked)"

    # -- decisions ------------------------------------------------------------------------------

    def add_holders(self, holders: Iterable[str]) -> None:
        """Holders that gossip the same digest (again or newly): asked from now on, unless set aside."""
        for holder in holders:
            if holder not in self._load and holder not in self.aside:
                self._holders.append(holder)
                self._load[holder] = 0

    def next_asks(self) -> list[Ask]:
        """Requests to make now: each usable holder filled up to ``per_holder``, chunks in order."""
        asks: list[Ask] = []
        progress = True
        while progress and (self._fresh or self._again):
            progress = False
            for holder in self._holders:
                if self._load[holder] >= self.per_holder:
                    continue
                chunk = self._take(holder)
                if chunk is None:
                    continue
                self._in_flight[chunk] = holder
                self._load[holder] += 1
                asks.append(Ask(holder, chunk))
                progress = True
        return asks

    def received(self, ask: Ask) -> bool:
        """The chunk arrived with the right hash and was written; False if `ask` no longer counted."""
        if not self._release(ask):
            return False  # its holder was set aside meanwhile: the chunk is queued again
        self.done.add(ask.chunk)
        return True

    def refused(self, ask: Ask) -> None:
        """The chunk's bytes did not match its hash: queue it again, remember who sent them."""
        if not self._release(ask):
            return
        self._bad_from.setdefault(ask.chunk, set()).add(ask.holder)
        self._bad_count[ask.chunk] = self._bad_count.get(ask.chunk, 0) + 1
        bisect.insort(self._again, ask.chunk)
        count = self.bad_by_holder[ask.holder] = self.bad_by_holder.get(ask.holder, 0) + 1
        if count >= self.max_bad_per_holder:
            self.failed(ask.holder, f"sent {count} chunks with wrong bytes")

    def returned(self, ask: Ask) -> None:
        """The request ended without blame (the pull is stopping): the chunk goes back to the queue."""
        if self._release(ask):
            bisect.insort(self._again, ask.chunk)

    def failed(self, holder: str, reason: str) -> None:
        """`holder` did not answer: set it aside, and queue again what it had in flight."""
        if holder in self.aside:
            return
        self.aside[holder] = reason
        if holder in self._load:
            self._holders.remove(holder)
            del self._load[holder]
        for chunk in [chunk for chunk, at in self._in_flight.items() if at == holder]:
            del self._in_flight[chunk]
            bisect.insort(self._again, chunk)

    # -- internals ------------------------------------------------------------------------------

    def _release(self, ask: Ask) -> bool:
        """Forget `ask` as in flight; False when it was not (a holder set aside meanwhile)."""
        if self._in_flight.get(ask.chunk) != ask.holder:
            return False
        del self._in_flight[ask.chunk]
        self._load[ask.holder] -= 1
        return True

    def _take(self, holder: str) -> int | None:
        """The first queued chunk `holder` may be asked for, out of the queue; chunks to ask again first."""
        for index, chunk in enumerate(self._again):
            if self._may_ask(holder, chunk):
                del self._again[index]
                return chunk
        # A fresh chunk was never refused, so any holder may be asked for it.
        return self._fresh.popleft() if self._fresh else None

    def _may_ask(self, holder: str, chunk: int) -> bool:
        bad = self._bad_count.get(chunk, 0)
        if bad == 0:
            return True
        if bad >= self.max_bad_per_chunk:
            return False
        senders = self._bad_from[chunk]
        if holder not in senders:
            return True
        # Back to a holder that sent bad bytes only when no usable holder has not.
        return all(other in senders for other in self._holders)

    def _can_ask_any(self) -> bool:
        if self._fresh and self._holders:
            return True
        return any(self._may_ask(holder, chunk) for holder in self._holders for chunk in self._again)
