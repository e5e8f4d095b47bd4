"""The deployment table: last writer wins by hybrid logical clock, tombstones, one table everywhere."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.mesh.bounds import MAX_STAMP
from meshnode.mesh.deployment import DeploymentSpec
from meshnode.mesh.records import COUNTER_BITS, DeploymentTable, HybridClock, Record
from meshnode.mesh.types import NodeId

A, B = NodeId("node-a"), NodeId("node-b")


def spec(app: str = "a.py:A", replicas: int = 1) -> DeploymentSpec:
    return DeploymentSpec(app, min_replicas=replicas, max_replicas=replicas)


def test_the_clock_never_runs_backwards_and_passes_what_it_observed() -> None:
    clock = HybridClock()
    first = clock.stamp(1000)
    assert clock.stamp(999) > first  # wall clock stepped back: still forward
    clock.observe((5000 << COUNTER_BITS) | 7)  # a peer whose clock is ahead
    assert clock.stamp(1001) > (5000 << COUNTER_BITS) | 7


def test_65536_writes_in_one_millisecond_borrow_the_next_one() -> None:
    clock = HybridClock()
    stamps = [clock.stamp(1000) for _ in range(1 << COUNTER_BITS)]
    assert stamps[-1] == (1000 << COUNTER_BITS) | 0xFFFF
    assert clock.stamp(1000) == 1001 << COUNTER_BITS


def test_the_clock_stamps_up_to_the_maximum_and_never_past_it() -> None:
    clock = HybridClock()
    clock.observe(MAX_STAMP - 1)
    assert clock.stamp(0) == MAX_STAMP
    with pytest.raises(OverflowError):
        clock.stamp(0)
    assert clock.last == MAX_STAMP  # the failed write left the clock as it was
    with pytest.raises(OverflowError):
        HybridClock().stamp(1 << 47)  # a wall clock past the year 6429


# Wall clocks as a broken machine could read them, and stamps anywhere in the documented range.
WALLS = st.integers(-(2**63), 2**63) | st.sampled_from([0, (1 << 47) - 2, (1 << 47) - 1, 1 << 47])
STAMPS = st.integers(0, MAX_STAMP) | st.sampled_from([0, MAX_STAMP - 0xFFFF, MAX_STAMP - 1, MAX_STAMP])


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.tuples(st.booleans(), WALLS, STAMPS), max_size=30))
def test_the_clock_never_issues_a_stamp_past_the_maximum(steps: list[tuple[bool, int, int]]) -> None:
    clock = HybridClock()
    for write, wall_ms, seen in steps:
        if not write:
            clock.observe(seen)
            continue
        before = clock.last
        try:
            stamp = clock.stamp(wall_ms)
        except OverflowError:
            # Only when no stamp up to the maximum is both later than the last and the wall clock.
            assert before == MAX_STAMP or wall_ms << COUNTER_BITS > MAX_STAMP
            assert clock.last == before
            continue
        assert before < stamp <= MAX_STAMP and clock.last == stamp


def test_a_write_after_seeing_a_record_wins_even_with_a_slow_wall_clock() -> None:
    fast, slow = DeploymentTable(), DeploymentTable()
    first = fast.write("echo", spec(replicas=1), A, wall_ms=10_000)
    slow.merge(first)
    second = slow.write("echo", spec(replicas=3), B, wall_ms=2_000)  # B's clock is 8 s behind
    fast.merge(second)
    for table in (fast, slow):
        record = table.get("echo")
        assert record is not None and record.spec == spec(replicas=3)


def test_a_removal_is_a_tombstone_that_wins_then_expires() -> None:
    table = DeploymentTable()
    declared = table.write("echo", spec(), A, wall_ms=1_000)
    table.write("echo", None, A, wall_ms=2_000)
    assert table.live() == []
    assert not table.merge(declared)  # the old declaration, arriving late, cannot resurrect it
    assert table.expire(wall_ms=2_000 + 59_000, tombstone_ttl_s=60) == []
    assert table.expire(wall_ms=2_000 + 61_000, tombstone_ttl_s=60) == ["echo"]
    assert table.get("echo") is None


def test_stamp_zero_loses_to_any_real_declaration() -> None:
    table = DeploymentTable()
    real = Record("echo", table.clock.stamp(1), B, spec(replicas=2))
    pinned = Record("echo", 0, NodeId("zzzz"), spec(replicas=0))
    assert table.merge(pinned) and table.merge(real)
    assert not table.merge(pinned)


records = st.builds(
    Record,
    st.sampled_from(["echo", "sd", "embed"]),
    st.integers(0, 50),
    st.sampled_from([A, B]),
    st.one_of(st.none(), st.integers(1, 3).map(lambda n: spec(replicas=n))),
)


@given(st.lists(records, max_size=30), st.randoms())
def test_every_order_of_the_same_records_gives_the_same_table(
    batch: list[Record], rng: random.Random
) -> None:
    one, other = DeploymentTable(), DeploymentTable()
    for record in batch:
        one.merge(record)
    shuffled = batch * 2  # duplicates too: merging is idempotent
    rng.shuffle(shuffled)
    for record in shuffled:
        other.merge(record)
    assert one.records == other.records
