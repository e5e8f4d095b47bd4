"""The job copies this node holds: the one table of them, on disk and in memory, and its copies elsewhere.

``JobTable`` owns ``records`` (job id -> the newest copy seen) and is the only writer of
``jobs.db`` (``job_store.py``, on a thread of its own: sqlite objects belong to their thread).
Every copy, local or from a peer, goes through ``merge`` (``mesh/jobs.merged``: further along wins),
so the table only moves forward whatever order copies arrive in. ``write`` keeps a new version here
and copies it to the job's current holders; ``copy_to_new_holders`` hands a copy to holders the
ranking gained since (a node joined, or one died and the next in rank replaced it), ended jobs
too, so a job keeps its ``k`` copies while nodes come and go. ``sync_with`` pulls from one peer
what this node missed; a peer whose standing shows it ahead is reported (``on_ahead``), so one
pull, from either side, brings both up to date. ``serve_peer`` answers the holders' messages
(``job_peers.py``): ``put``, ``get``, ``list``, ``sync``, and the files of large results
(``files``, ``job_result_files.py``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..errors import MeshnodeError
from ..mesh import job_policy
from ..mesh.envelope import Call, Envelope, Failure, Reply
from ..mesh.job_listing import JobCursor, Page, fitting, listing_form, page
from ..mesh.jobs import JobRecord, JobStatus, JobWireError, merged
from ..mesh.types import NodeId
from .job_files import JobFiles
from .job_peers import JobPeers
from .job_result_files import ResultFiles
from .job_store import JobStore

__all__ = ["MAX_RECORDS_PER_MESSAGE", "JobTable"]

# Copies per ``put`` or ``list`` answer: bounds a message's size with the records' own bounds.
MAX_RECORDS_PER_MESSAGE = 1000
# A walk over every held job (a sync's standing or answer, ranking holders: a hash per live member
# each, 1 ms a job at 1,000 members) yields the loop this often, so probes and requests go on.
_SLICE_S = 0.005

_T = TypeVar("_T")


class JobTable:
    """Job copies held here; `on_change` is called after each change is stored."""

    def __init__(
        self,
        me: NodeId,
        open_store: Callable[[], JobStore],
        files: JobFiles,
        peers: JobPeers,
        copies: int,
        on_change: Callable[[], None],
        on_ahead: Callable[[NodeId], None],
        message_bytes: int,
        max_result_bytes: int,
    ) -> None:
        self.me = me
        self._message_bytes = message_bytes  # a list or sync answer's records, at most (a frame's half)
        self.records: dict[str, JobRecord] = {}
        self.unfinished: set[str] = set()  # ids of records not ended: what a wake looks at
        self._open_store = open_store
        self._files = files
        self._store: JobStore | None = None
        self._peers = peers
        self._copies = copies
        self._on_change = on_change
        self._on_ahead = on_ahead
        # Per job, the holders this node knows have a copy: one the ranking adds gets a copy.
        self._copied: dict[str, frozenset[NodeId]] = {}
        # Jobs whose last copy missed one of their holders (it did not answer): tried again each tick.
        self.short: set[str] = set()
        # Holders per job over the live set `_ranked_over`: a sync asks for them per job and peer,
        # and ranking a job costs a hash per live member (1 ms at 1,000).
        self._ranked: dict[str, tuple[NodeId, ...]] = {}
        self._ranked_over: tuple[NodeId, ...] = ()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobs-store")
        self.files = ResultFiles(me, files, peers, self._in_thread, max_result_bytes)

    async def open(self) -> None:
        """Open the store and load the copies it kept."""
        self._store = store = await self._in_thread(self._open_store)
        await self._in_thread(self._files.sweep)
        for record in await self._in_thread(store.load):
            self.records[record.id] = record
            if not record.status.terminal:
                self.unfinished.add(record.id)

    async def close(self) -> None:
        """Close the store (the copies stay on disk)."""
        if self._store is not None:
            await self._in_thread(self._store.close)
        self._thread.shutdown(wait=False)

    def holders(self, job_id: str) -> tuple[NodeId, ...]:
        """The live nodes that keep `job_id`'s copies, its runner first."""
        live = self._peers.live()
        if live is not self._ranked_over and live != self._ranked_over:
            self._ranked, self._ranked_over = {}, live
        found = self._ranked.get(job_id)
        if found is None:
            found = tuple(job_policy.holders(job_id, live, self._copies))
            if job_id in self.records:  # never an id a client asked about: those are unbounded
                self._ranked[job_id] = found
        return found

    async def put_on(self, node: NodeId, records: list[JobRecord]) -> bool:
        """Store `records` on `node` (this one included); whether it confirmed."""
        if node == self.me:
            await self.merge(records)
            return True
        answer = await self._peers.ask(
            node, {"op": "put", "records": [record.to_wire() for record in records]}
        )
        return isinstance(answer, dict) and answer.get("ok") is True

    async def write(self, record: JobRecord) -> JobRecord:
        """Keep a new version here and copy it to the job's holders; the copy kept here."""
        await self.merge([record])
        kept = self.records[record.id]
        self._copied[record.id] = frozenset([self.me])
        await self._copy(kept, [node for node in self.holders(record.id) if node != self.me])
        return kept

    async def copy_to_new_holders(self, record: JobRecord) -> None:
        """Give a copy to holders the ranking added since this node last copied the job."""
        holders = self.holders(record.id)
        if record.id not in self._copied and record.status.terminal:
            # An ended job loaded from disk: its holders of the moment have it, or pull it from this
            # node's standing when it syncs with them at start (``on_ahead``). Pushing a day of
            # ended jobs to every holder at each restart would cost far more.
            self._copied[record.id] = frozenset([self.me, *holders])
            return
        known = self._copied.get(record.id, frozenset([self.me]))
        await self._copy(record, [node for node in holders if node not in known])
        # Nodes no longer among its holders are forgotten: one that becomes a holder again gets the
        # copy again (it may hold an old version), and ``may_move`` reads the holders alone.
        self._copied[record.id] &= frozenset([self.me, *holders])

    def may_move(self, job_id: str, live: frozenset[NodeId], added: frozenset[NodeId]) -> bool:
        """Whether `job_id`'s holders can have changed since it was last copied, now that the live
        set is `live`, `added` among them new (``job_policy.holders_may_move``)."""
        last = self._copied.get(job_id, ())
        return job_policy.holders_may_move(job_id, last, live, added, self._copies)

    async def _copy(self, record: JobRecord, nodes: list[NodeId]) -> None:
        """Store `record` on `nodes`, remembering which confirmed."""
        done = await asyncio.gather(*(self.put_on(node, [record]) for node in nodes))
        known = self._copied.get(record.id, frozenset([self.me]))
        self._copied[record.id] = known | {n for n, ok in zip(nodes, done, strict=True) if ok}
        if all(done):
            self.short.discard(record.id)
        else:
            self.short.add(record.id)

    async def merge(self, records: list[JobRecord]) -> None:
        """Take copies (from here or a peer): each replaces the one held when it is further along."""
        kept = []
        for record in records:
            mine = self.records.get(record.id)
            winner = merged(mine, record)
            if winner != mine:
                self.records[record.id] = winner
                kept.append(winner)
                if winner.status.terminal:
                    self.unfinished.discard(record.id)
                else:
                    self.unfinished.add(record.id)
            if mine is None and record.writer != self.me:
                # Its writer copies it to the other holders of the moment; later ones get it from tick.
                self._copied[record.id] = frozenset([self.me, *self.holders(record.id)])
                self.short.discard(record.id)
        if kept:
            store = self._opened()
            await self._in_thread(lambda: store.put(kept))
            self._on_change()

    async def forget(self, ids: list[str]) -> None:
        """Delete these jobs here."""
        for job_id in ids:
            self.records.pop(job_id, None)
            self.unfinished.discard(job_id)
            self._copied.pop(job_id, None)
            self.short.discard(job_id)
            self._ranked.pop(job_id, None)
        store = self._opened()
        await self._in_thread(lambda: store.delete(ids))

    async def drop_result(self, record: JobRecord) -> None:
        """Free an expired job's result here. Not a new version: every holder drops it alike."""
        if record.result is not None and record.result.stored is not None:
            sha256 = record.result.stored.sha256
            await self._in_thread(lambda: self._files.delete(sha256))
        stripped = dataclasses.replace(record, result=None)
        self.records[record.id] = stripped
        store = self._opened()
        await self._in_thread(lambda: store.put([stripped]))

    def listing(self, deployment: object, status: object, limit: int, after: JobCursor | None = None) -> Page:
        """Jobs held here after `after`, newest first, filtered: a page of at most `limit`."""
        chosen = (
            r
            for r in self.records.values()
            if (deployment is None or r.deployment == deployment)
            and (status is None or r.status.value == status)
        )
        return page(chosen, after, limit)

    def held(self) -> dict[str, dict[str, int]]:
        """Jobs held here per deployment, by status (the dashboard's jobs panel)."""
        held: dict[str, dict[str, int]] = {}
        for record in self.records.values():
            statuses = held.setdefault(record.deployment, {})
            statuses[record.status.value] = statuses.get(record.status.value, 0) + 1
        return held

    def stats(self, now_ms: int) -> dict[str, Any]:
        """Jobs held here by (deployment, status), and the oldest queued job's age per deployment."""
        held: collections.Counter[tuple[str, str]] = collections.Counter()
        oldest_ms: dict[str, int] = {}
        for record in self.records.values():
            held[(record.deployment, record.status.value)] += 1
            if record.status == JobStatus.QUEUED:
                oldest_ms[record.deployment] = min(
                    oldest_ms.get(record.deployment, now_ms), record.created_ms
                )
        return {
            "held": dict(held),
            "queue_age_s": {name: max(now_ms - created, 0) / 1000 for name, created in oldest_ms.items()},
        }

    async def serve_peer(self, call: Call) -> AsyncIterator[Envelope]:
        """Answer a holder's job message (``job_peers.JOBS_CHANNEL``)."""
        try:
            answer = await self._peer_op(call.body)
        except (JobWireError, MeshnodeError, KeyError, TypeError, ValueError) as exc:
            yield Failure(call.request_id, "bad_request", f"job message refused: {exc}", False)
            return
        yield Reply(call.request_id, answer, "application/json")

    async def _peer_op(self, body: dict[str, Any]) -> dict[str, Any]:
        match body.get("op"):
            case "put":
                raws = body["records"]
                if not isinstance(raws, list) or len(raws) > MAX_RECORDS_PER_MESSAGE:
                    raise ValueError(f"records must be a list of at most {MAX_RECORDS_PER_MESSAGE}")
                await self.merge([JobRecord.from_wire(raw) for raw in raws])
                return {"ok": True}
            case "get":
                record = self.records.get(str(body["id"]))
                return {"record": None if record is None else record.to_wire()}
            case "list":
                limit = body.get("limit")
                if type(limit) is not int or not 1 <= limit <= MAX_RECORDS_PER_MESSAGE:
                    raise ValueError(f"limit must be an integer from 1 to {MAX_RECORDS_PER_MESSAGE}")
                after = None if body.get("after") is None else JobCursor.from_wire(body["after"])
                found = self.listing(body.get("deployment"), body.get("status"), limit, after)
                listed = [listing_form(record) for record in found.records]
                fits = fitting(listed, self._message_bytes)
                return Page(tuple(listed[:fits]), found.more or fits < len(listed)).to_wire()
            case "file_put" | "file_get":
                return await self.files.serve(body)
            case "sync":  # what does not fit one answer comes at the next sync (job_sync_s)
                newer = await self._newer_for(body)
                newer = newer[: fitting(newer, self._message_bytes)]
                return {"records": [record.to_wire() for record in newer]}
            case op:
                raise ValueError(f"unknown job op {op!r}")

    async def sync_with(self, node: NodeId) -> bool:
        """Pull from `node` the copies it has further along than this node's, and those this node
        should hold and lacks (anti-entropy: what a write missed while this node was down or
        starting, or before it became a holder); whether `node` answered."""
        standing = {
            job_id: [record.status.terminal, record.version, record.writer]
            async for job_id, record in _sliced(list(self.records.items()))
            if node in self.holders(job_id)
        }
        answered = False
        for chunk in _chunks(list(standing.items()), MAX_RECORDS_PER_MESSAGE) or [[]]:
            answer = await self._peers.ask(node, {"op": "sync", "asker": self.me, "standing": dict(chunk)})
            answered = answered or isinstance(answer, dict)
            raws = answer.get("records", []) if isinstance(answer, dict) else []
            records = []
            for raw in raws[:MAX_RECORDS_PER_MESSAGE]:
                try:
                    records.append(JobRecord.from_wire(raw))
                except JobWireError:
                    continue
            await self.merge(records)
        return answered

    async def _newer_for(self, body: dict[str, Any]) -> list[JobRecord]:
        """The copies a syncing peer lacks: further along than its standing, or not listed by it
        while it is one of their holders."""
        standing = body["standing"]
        if not isinstance(standing, dict) or len(standing) > MAX_RECORDS_PER_MESSAGE:
            raise ValueError(f"standing must be a map of at most {MAX_RECORDS_PER_MESSAGE} jobs")
        asker = body.get("asker")
        if isinstance(asker, str) and any(
            _behind(self.records.get(job_id), theirs) for job_id, theirs in standing.items()
        ):
            self._on_ahead(NodeId(asker))  # it holds copies further along than these: pull them
        newer: list[JobRecord] = []
        async with contextlib.aclosing(_sliced(list(self.records.items()))) as held:
            async for job_id, record in held:
                theirs = standing.get(job_id)
                if theirs is None:
                    if asker is not None and NodeId(str(asker)) in self.holders(job_id):
                        newer.append(record)
                elif _further(record, theirs):
                    newer.append(record)
                if len(newer) >= MAX_RECORDS_PER_MESSAGE:
                    break
        return newer

    def _opened(self) -> JobStore:
        if self._store is None:
            raise RuntimeError("JobTable.open() has not run")
        return self._store

    async def _in_thread(self, call: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, call)


async def _sliced(items: Iterable[_T]) -> AsyncGenerator[_T, None]:
    """`items` one by one, yielding the event loop every ``_SLICE_S`` of the caller's work."""
    until = time.monotonic() + _SLICE_S
    for item in items:
        yield item
        if time.monotonic() >= until:
            await asyncio.sleep(0)
            until = time.monotonic() + _SLICE_S


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _further(record: JobRecord, standing: object) -> bool:
    """Whether `record` is further along than a peer's ``[terminal, version, writer]`` of it."""
    theirs = _standing(standing)
    return theirs is not None and (record.status.terminal, record.version, record.writer) > theirs


def _behind(record: JobRecord | None, standing: object) -> bool:
    """Whether a peer's ``[terminal, version, writer]`` of a job is further along than `record`
    (None: this node lacks the job, which the peer lists because this node is one of its holders)."""
    theirs = _standing(standing)
    if theirs is None:
        return False
    return record is None or theirs > (record.status.terminal, record.version, record.writer)


def _standing(standing: object) -> tuple[bool, int, str] | None:
    """A peer's ``[terminal, version, writer]`` of a job, or None when it is not one."""
    if not isinstance(standing, list) or len(standing) != 3:
        return None
    terminal, version, writer = standing
    if not isinstance(terminal, bool) or isinstance(version, bool) or not isinstance(version, int):
        return None
    return terminal, version, str(writer)
