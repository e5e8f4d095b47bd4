"""One page of a job listing: the jobs after a cursor, newest first, and whether more follow.

``GET /v1/jobs`` lists what every node holds, merged (``serving/jobs.py``). Its order is the
total order ``(created_ms descending, id ascending)``: ids are unique, so no two jobs tie. A page
ends with a cursor naming its last job by that key (``JobCursor``), and the next page holds the
jobs strictly after it in the order. So paging never repeats or skips a job that existed when the
first page was read, whatever changes meanwhile: a job submitted later is newer than every cursor
and shows on a new first page only, and a job that ends or expires between two pages moves no
other job.

Merging pages from many nodes (``merged_page``): each node answers its own first ``limit`` jobs
after the cursor and whether it holds more. The mesh's first ``limit`` are among the union of
those answers (a job a node left out has ``limit`` of its own ahead of it), and more follow when
the union has more than ``limit`` or some node said it held more.

A node's answer must also fit one data-plane frame, whatever the records hold: it lists each job
without its request body and result (``listing_form``: the listing shows neither, and a body may be
1 MiB), and stops at ``budget_bytes`` (``fitting``), saying it holds more. The mesh's page then ends
where such a cut answer ends, so a job the answer left out is never skipped: it comes with the next
page.

Bounds: a cursor from a client or a peer is checked by ``JobCursor.parse`` and
``JobCursor.from_wire``: ``created_ms`` an integer in ``[0, MAX_MS]``, the id a job id.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import msgpack

from .jobs import JOB_ID_PATTERN, MAX_MS, JobRecord, JobWireError, merged

__all__ = ["JobCursor", "Page", "fitting", "listing_form", "merged_page", "page"]


@dataclass(frozen=True)
class JobCursor:
    """Where a page ended: its last job's creation time and id."""

    created_ms: int
    id: str

    def __post_init__(self) -> None:
        if type(self.created_ms) is not int or not 0 <= self.created_ms <= MAX_MS:
            raise ValueError(f"a cursor's time must be an integer from 0 to {MAX_MS}")
        if type(self.id) is not str or not JOB_ID_PATTERN.fullmatch(self.id):
            raise ValueError("a cursor's job id must be 22 characters of A-Z, a-z, 0-9, _ and -")

    @classmethod
    def of(cls, record: JobRecord) -> JobCursor:
        """The cursor that a page ending with `record` gives."""
        return cls(record.created_ms, record.id)

    @classmethod
    def parse(cls, text: str) -> JobCursor:
        """A cursor as ``str`` writes it (``next_cursor``); ValueError for anything else."""
        created, dot, job_id = text.partition(".")
        if not dot or not created.isascii() or not created.isdigit() or len(created) > len(str(MAX_MS)):
            raise ValueError("cursor must be a next_cursor that a listing gave")
        return cls(int(created), job_id)

    @classmethod
    def from_wire(cls, raw: object) -> JobCursor:
        """A cursor from a peer's message (``to_wire``); ValueError if it is not one."""
        if not isinstance(raw, list | tuple) or len(raw) != 2:
            raise ValueError("a cursor is [created_ms, id]")
        return cls(raw[0], raw[1])

    def to_wire(self) -> list[int | str]:
        """The msgpack-able form for a peer's ``list`` message."""
        return [self.created_ms, self.id]

    def precedes(self, record: JobRecord) -> bool:
        """Whether `record` comes after this cursor in the listing's order."""
        return (-record.created_ms, record.id) > (-self.created_ms, self.id)

    def __str__(self) -> str:
        return f"{self.created_ms}.{self.id}"


@dataclass(frozen=True)
class Page:
    """Jobs in the listing's order, and whether more follow them."""

    records: tuple[JobRecord, ...]
    more: bool

    @classmethod
    def from_wire(cls, answer: object) -> Page:
        """A peer's answer to ``list`` (``to_wire``); a malformed record in it is left out, not fatal."""
        raws = answer.get("records") if isinstance(answer, dict) else None
        records = []
        for raw in raws if isinstance(raws, list) else ():
            try:
                records.append(JobRecord.from_wire(raw))
            except JobWireError:
                continue
        return cls(tuple(records), isinstance(answer, dict) and answer.get("more") is True)

    def to_wire(self) -> dict[str, Any]:
        """The answer to a peer's ``list`` message."""
        return {"records": [record.to_wire() for record in self.records], "more": self.more}

    @property
    def next_cursor(self) -> JobCursor | None:
        """Where the next page starts; None when this one is the last."""
        return JobCursor.of(self.records[-1]) if self.more and self.records else None


def page(records: Iterable[JobRecord], after: JobCursor | None, limit: int) -> Page:
    """The first `limit` of `records` after `after` (from the start when None), in order."""
    if limit < 1:
        raise ValueError("a page holds at least one job")
    chosen = heapq.nsmallest(limit + 1, (r for r in records if after is None or after.precedes(r)), key=_key)
    return Page(tuple(chosen[:limit]), len(chosen) > limit)


def merged_page(pages: Iterable[Page], after: JobCursor | None, limit: int) -> Page:
    """One page of the mesh from each node's page of what it holds (copies of a job merged)."""
    found: dict[str, JobRecord] = {}
    more = False
    cut: tuple[int, str] | None = None  # where the earliest answer that holds more ends
    for answer in pages:
        more = more or answer.more
        if answer.more and answer.records:
            end = _key(answer.records[-1])
            cut = end if cut is None else min(cut, end)
        for record in answer.records:
            found[record.id] = merged(found.get(record.id), record)
    # A node that ignores the cursor (one of an older version) answers from the start: filtered again.
    whole = page(found.values(), after, limit)
    if cut is not None and whole.records and _key(whole.records[-1]) > cut:
        return Page(tuple(r for r in whole.records if _key(r) <= cut), True)
    return Page(whole.records, whole.more or more)


def listing_form(record: JobRecord) -> JobRecord:
    """`record` as a listing carries it: without its request body and result, which it never shows."""
    return replace(record, body={}, result=None)


def fitting(records: Sequence[JobRecord], budget_bytes: int) -> int:
    """How many of `records`, from the first, fit `budget_bytes` in their wire form (one at least)."""
    used = 0
    for count, record in enumerate(records):
        used += len(msgpack.packb(record.to_wire()))
        if used > budget_bytes and count > 0:
            return count
    return len(records)


def _key(record: JobRecord) -> tuple[int, str]:
    return (-record.created_ms, record.id)
