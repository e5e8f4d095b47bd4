"""mesh/queueing.py: the wait a replica predicts for one more request, and admission under deadlines."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.mesh.queueing import (
    QueueState,
    Refusal,
    RefusalReason,
    admit,
    counts_as_service,
    margin_s,
    retry_after_s,
    start_wait_s,
)


def state(
    in_flight: int, *, slots: int = 1, capacity: int = 100, service_s: float | None = 0.1
) -> QueueState:
    return QueueState(in_flight, slots, capacity, service_s)


def test_no_wait_while_a_slot_is_free() -> None:
    assert start_wait_s(state(0)) == 0.0
    assert start_wait_s(state(3, slots=4)) == 0.0


def test_the_wait_is_the_queue_ahead_shared_over_the_slots() -> None:
    # One slot busy, two queued: the new request starts after three service times.
    assert start_wait_s(state(3)) == pytest.approx(0.3)
    # Four slots, six in flight: three must finish first; all four running may have just started, so
    # the last of those three may take a whole service time (one wave), not three quarters of one.
    assert start_wait_s(state(6, slots=4)) == pytest.approx(0.1)
    # Sixteen slots, forty in flight: 25 ahead, in two waves of 16 after the running ones.
    assert start_wait_s(state(40, slots=16)) == pytest.approx(0.2)


def test_an_unmeasured_replica_predicts_no_wait_and_admits() -> None:
    assert start_wait_s(state(50, service_s=None)) == 0.0
    assert admit(state(50, service_s=None), time_left_s=0.01) is None


def test_a_request_that_would_finish_in_time_is_admitted() -> None:
    # Two ahead (0.2 s) plus its own 0.1 s: done at 0.3 s, with the 10 ms margin before its deadline.
    assert admit(state(2), time_left_s=0.32) is None
    assert admit(state(2), time_left_s=0.3) is not None


def test_a_request_that_would_finish_late_is_refused_at_once() -> None:
    refusal = admit(state(3), time_left_s=0.35)
    assert refusal == Refusal(RefusalReason.DEADLINE, 1.0, pytest.approx(0.3), 0.35)
    assert refusal.explain("echo", state(3)) == (
        "echo would start this request in 0.300 s and finish it after its deadline (0.350 s left)"
    )


def test_a_full_replica_refuses_whatever_the_deadline() -> None:
    refusal = admit(state(5, capacity=5), time_left_s=3600)
    assert refusal is not None and refusal.reason is RefusalReason.FULL


def test_retry_after_is_the_backlog_in_whole_seconds_at_least_one() -> None:
    assert retry_after_s(0.0) == 1.0
    assert retry_after_s(1.2) == 2.0
    refusal = admit(state(40, capacity=40), time_left_s=1.0)
    assert refusal is not None and refusal.retry_after_s == 4.0


@given(
    in_flight=st.integers(0, 10_000),
    slots=st.integers(1, 64),
    capacity=st.integers(1, 10_000),
    service_s=st.floats(1e-4, 100.0),
    time_left_s=st.floats(1e-3, 3600.0),
)
def test_an_admitted_request_finishes_by_its_deadline_at_the_measured_speed(
    in_flight: int, slots: int, capacity: int, service_s: float, time_left_s: float
) -> None:
    queue = QueueState(in_flight, slots, capacity, service_s)
    refusal = admit(queue, time_left_s)
    if refusal is None:
        assert in_flight < capacity
        wait = start_wait_s(queue)
        assert wait == 0 or wait + service_s + margin_s(service_s) <= time_left_s
    else:
        assert refusal.retry_after_s >= 1.0


def test_only_a_request_that_found_a_free_slot_measures_the_service_time() -> None:
    assert counts_as_service(0, slots=1)
    assert not counts_as_service(1, slots=1)
    assert counts_as_service(3, slots=4)
    assert not counts_as_service(4, slots=4)


def test_a_request_that_finds_a_free_slot_is_admitted_even_on_a_slow_estimate() -> None:
    """It starts at once, and its answer corrects an estimate that a busy spell inflated."""
    assert admit(state(0, service_s=5.0), time_left_s=0.3) is None
    assert admit(state(3, slots=4, service_s=5.0), time_left_s=0.3) is None
    assert admit(state(4, slots=4, service_s=5.0), time_left_s=0.3) is not None
