"""Anti-entropy for job copies: which peers this node pulls what it missed from, and when.

A write reaches the holders of the moment, and ``JobTable.copy_to_new_holders`` hands copies to
holders the ranking adds later; a pull (``JobTable.sync_with``) catches up on what neither could
deliver: writes made while this node was down, starting or cut off. Only a few peers can have such
copies, so only they are asked:

- every member seen while this node starts (within ``job_sync_s`` of ``start``): its own copies may
  be stale;
- every member coming back alive (suspect, dead or gone before): writes missed it meanwhile;
- every peer a sync showed to be ahead (``JobTable``'s ``on_ahead``), so one pull, from either
  side, brings both up to date;
- else, every ``job_sync_s`` while an unfinished job is held here, one of those jobs' other holders
  in turn. An idle mesh sends nothing.

It used to pull from every live member at every change of any member: in a mesh of 1,000, 1,000
pulls per change, and a data-plane link kept open to every member (about 33 KiB each,
docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..mesh.types import NodeId, Status
from .job_table import JobTable

__all__ = ["JobSync"]


class JobSync:
    """The peers to pull job copies from next; `wake` has the job loop run ``pull``."""

    def __init__(self, me: NodeId, table: JobTable, sync_s: float, wake: Callable[[], None]) -> None:
        self._me = me
        self._table = table
        self._sync_s = sync_s
        self._wake = wake
        self._to_pull: set[NodeId] = set()
        self._next_turn, self._turn = 0.0, 0
        self._synced = False  # a peer has answered a pull
        self._started_at: float | None = None  # None: not started yet

    def start(self) -> None:
        """The node starts: members seen from now until ``job_sync_s`` later are pulled from."""
        self._started_at = _loop_time()

    def settled(self) -> bool:
        """Whether the copies here may be acted on: a peer answered a pull, or none did within
        ``job_sync_s`` of the start (a node alone, or one whose peers are all gone)."""
        return self._synced or (
            self._started_at is not None and _loop_time() - self._started_at >= self._sync_s
        )

    def starting(self) -> bool:
        """Whether this node is within ``job_sync_s`` of its start (or not started yet)."""
        return self._started_at is None or _loop_time() - self._started_at < self._sync_s

    def on_member(self, node: NodeId, previous: Status | None, current: Status) -> None:
        """A member changed state: the job loop looks again (holders and runners may have moved), and
        pulls from it if it is coming back alive, or is any member while this node starts."""
        if current != Status.ALIVE:
            self._to_pull.discard(node)
        elif node != self._me and (previous is not None or self.starting()):
            self._to_pull.add(node)
        self._wake()

    def pull_from(self, node: NodeId) -> None:
        """Pull from `node` at the job loop's next turn."""
        self._to_pull.add(node)
        self._wake()

    async def pull(self, live: tuple[NodeId, ...]) -> None:
        """Pull from the peers named that are live (one alive without a data plane yet waits for
        it), or from one co-holder in turn when its time has come."""
        alive = set(live) - {self._me}
        chosen = sorted(self._to_pull & alive)
        self._to_pull -= alive
        if not chosen and _loop_time() >= self._next_turn:
            holding = {node for job_id in self._table.unfinished for node in self._table.holders(job_id)}
            if co_holders := sorted(holding & alive):
                self._turn += 1
                chosen = [co_holders[self._turn % len(co_holders)]]
                self._next_turn = _loop_time() + self._sync_s
        if chosen:
            answered = await asyncio.gather(*(self._table.sync_with(node) for node in chosen))
            self._synced = self._synced or any(answered)


def _loop_time() -> float:
    return asyncio.get_running_loop().time()
