"""The token bucket: bytes move at once within the burst, then at the rate, in order."""

from __future__ import annotations

import pytest

from meshnode.mesh.token_bucket import TokenBucket


def test_within_the_burst_there_is_no_wait() -> None:
    bucket = TokenBucket(rate=100.0, burst=300.0, now=0.0)
    assert [bucket.reserve(100, 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]


def test_past_the_burst_each_reservation_waits_its_turn_at_the_rate() -> None:
    bucket = TokenBucket(rate=100.0, burst=100.0, now=0.0)
    assert bucket.reserve(100, 0.0) == 0.0
    assert bucket.reserve(50, 0.0) == pytest.approx(0.5)
    assert bucket.reserve(50, 0.0) == pytest.approx(1.0)  # behind the one before
    assert bucket.reserve(100, 1.5) == pytest.approx(0.5)  # the debt was paid at t=1; 50 earned since


def test_a_reservation_larger_than_the_burst_still_goes_through() -> None:
    bucket = TokenBucket(rate=10.0, burst=5.0, now=0.0)
    assert bucket.reserve(25, 0.0) == pytest.approx(2.0)


def test_tokens_never_pile_up_beyond_the_burst() -> None:
    bucket = TokenBucket(rate=100.0, burst=100.0, now=0.0)
    assert bucket.reserve(100, 1000.0) == 0.0
    assert bucket.reserve(100, 1000.0) == pytest.approx(1.0)


def test_the_rate_over_a_long_run_is_the_rate() -> None:
    bucket = TokenBucket(rate=1000.0, burst=500.0, now=0.0)
    now = 0.0
    for _ in range(100):
        now += bucket.reserve(250, now)  # the caller waits, then moves its bytes
    assert 100 * 250 / now == pytest.approx(1000.0, rel=0.03)


def test_rate_zero_means_no_limit_and_a_clock_going_back_is_harmless() -> None:
    assert TokenBucket(rate=0.0, burst=0.0, now=0.0).reserve(10**12, 0.0) == 0.0
    bucket = TokenBucket(rate=10.0, burst=10.0, now=5.0)
    assert bucket.reserve(10, 4.0) == 0.0
    assert bucket.reserve(10, 4.0) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        TokenBucket(rate=-1.0, burst=0.0, now=0.0)
