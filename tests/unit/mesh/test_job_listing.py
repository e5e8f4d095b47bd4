"""Paging the mesh's job listing: pages from many nodes merge into the one order, nothing repeated or lost."""

from __future__ import annotations

import dataclasses
import random

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.mesh.job_listing import JobCursor, Page, fitting, listing_form, merged_page, page
from meshnode.mesh.jobs import MAX_MS, JobRecord, JobStatus
from meshnode.mesh.types import NodeId


def job(index: int, created_ms: int) -> JobRecord:
    return JobRecord(
        id=f"{index:022d}",
        deployment="echo",
        body={},
        accept="",
        hint=None,
        created_ms=created_ms,
        max_attempts=3,
        timeout_ms=60_000,
    )


def in_order(records: list[JobRecord]) -> list[str]:
    return [r.id for r in sorted(records, key=lambda r: (-r.created_ms, r.id))]


def answer(held: list[JobRecord], after: JobCursor | None, limit: int, budget: int) -> Page:
    """A node's answer as job_table.py makes it: its page, in listing form, cut to `budget` bytes."""
    found = page(held, after, limit)
    listed = [listing_form(record) for record in found.records]
    fits = fitting(listed, budget)
    return Page(tuple(listed[:fits]), found.more or fits < len(listed))


def read_all(nodes: list[list[JobRecord]], limit: int, budget: int = 1 << 30) -> list[str]:
    """Every page in turn, as GET /v1/jobs with each next_cursor serves them; the ids in page order."""
    seen: list[str] = []
    after: JobCursor | None = None
    for _ in range(1000):
        answers = [answer(held, after, limit, budget).to_wire() for held in nodes]
        wire = [msgpack.unpackb(msgpack.packb(sent)) for sent in answers]
        found = merged_page([Page.from_wire(received) for received in wire], after, limit)
        assert len(found.records) <= limit
        seen += [r.id for r in found.records]
        following = found.next_cursor
        if following is None:
            assert not found.more
            return seen
        after = JobCursor.parse(str(following))
    raise AssertionError("paging never ended")


# Jobs with few distinct creation times (ties broken by id), each held by one to three of five nodes;
# some answers cut short by bytes (a budget of one to a few records) as large bodies would be.
@given(
    st.lists(st.integers(0, 5), min_size=0, max_size=40),
    st.integers(1, 7),
    st.sampled_from([1, 300, 700, 1 << 30]),
    st.randoms(use_true_random=False),
)
def test_paging_through_every_node_reads_each_job_once_in_order(
    times: list[int], limit: int, budget: int, rng: random.Random
) -> None:
    jobs = [job(index, 1_000 + created) for index, created in enumerate(times)]
    nodes: list[list[JobRecord]] = [[] for _ in range(5)]
    for record in jobs:
        for holder in rng.sample(range(5), rng.randint(1, 3)):
            nodes[holder].append(record)
    assert read_all(nodes, limit, budget) == in_order(jobs)


def test_an_answer_cut_short_ends_the_page_where_it_ends() -> None:
    # Node a could send only its first job of three (bytes); b sent its two: the page may not run past
    # a's first, or a's second and third, which come before b's second, would be skipped.
    cut = Page((job(1, 9),), True)
    whole = Page((job(4, 8), job(5, 6)), False)
    found = merged_page([cut, whole], None, 3)
    assert [r.id for r in found.records] == [job(1, 9).id] and found.more


def test_a_listed_job_carries_no_body_or_result_and_answers_fit_their_budget() -> None:
    big = dataclasses.replace(job(1, 9), body={"image": "x" * 100_000})
    listed = listing_form(big)
    assert listed.body == {} and listed.result is None and listed.id == big.id
    assert len(msgpack.packb(listed.to_wire())) < 1_000
    records = [job(i, 9) for i in range(10)]
    one = len(msgpack.packb(records[0].to_wire()))
    assert fitting(records, 3 * one) == 3
    assert fitting(records, 1) == 1  # one record at least, whatever the budget
    assert fitting(records, 1 << 30) == 10 and fitting([], 1) == 0


def test_copies_of_one_job_merge_into_the_furthest_along() -> None:
    queued = job(1, 5)
    done = queued.written(NodeId("a" * 32), status=JobStatus.COMPLETED)
    found = merged_page([Page((queued,), False), Page((done,), False)], None, 10)
    assert [r.status for r in found.records] == [JobStatus.COMPLETED]


def test_more_follow_when_a_node_says_so_though_the_union_fits() -> None:
    # The node held a third job beyond the two it answered: the page is full and another follows.
    found = merged_page([Page((job(1, 9), job(2, 8)), True)], None, 2)
    assert found.more and found.next_cursor == JobCursor(8, job(2, 8).id)


def test_an_answer_that_ignores_the_cursor_is_filtered_again() -> None:
    # A node of an older version answers from the start: what lies before the cursor is left out.
    answer = Page((job(1, 9), job(2, 8), job(3, 7)), False)
    found = merged_page([answer], JobCursor(8, job(2, 8).id), 5)
    assert [r.id for r in found.records] == [job(3, 7).id] and found.next_cursor is None


def test_a_malformed_record_in_an_answer_is_left_out() -> None:
    good = job(1, 9).to_wire()
    found = Page.from_wire({"records": [good, {"id": "nope"}, 5], "more": "yes"})
    assert [r.id for r in found.records] == [job(1, 9).id] and not found.more
    assert Page.from_wire(None) == Page((), False)


def test_a_cursor_reads_back_from_its_text_and_its_wire_form() -> None:
    cursor = JobCursor.of(job(4, 1_700_000_000_123))
    assert JobCursor.parse(str(cursor)) == cursor == JobCursor.from_wire(cursor.to_wire())
    assert str(cursor) == f"1700000000123.{job(4, 0).id}"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "123",
        ".AAAAAAAAAAAAAAAAAAAAAA",
        "12a.AAAAAAAAAAAAAAAAAAAAAA",
        "-1.AAAAAAAAAAAAAAAAAAAAAA",
        "١٢.AAAAAAAAAAAAAAAAAAAAAA",  # Arabic-Indic digits: isdigit() is True for them
        f"{MAX_MS + 1}.AAAAAAAAAAAAAAAAAAAAAA",
        "9" * 5000 + ".AAAAAAAAAAAAAAAAAAAAAA",
        "12.short",
        "12.AAAAAAAAAAAAAAAAAAAAA!",
    ],
)
def test_a_cursor_that_no_listing_gave_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="cursor"):
        JobCursor.parse(text)


@pytest.mark.parametrize(
    "raw",
    [
        *(None, 5, [], [1], [1, "A" * 22, 3], [True, "A" * 22], [1.0, "A" * 22], [-1, "A" * 22]),
        *([1, 22], [1, "A"], [2**60, "A" * 22]),
    ],
)
def test_a_cursor_from_a_peer_is_checked(raw: object) -> None:
    with pytest.raises(ValueError, match="cursor"):
        JobCursor.from_wire(raw)


def test_a_page_holds_at_least_one_job() -> None:
    with pytest.raises(ValueError):
        page([], None, 0)
    assert Page((), True).next_cursor is None
