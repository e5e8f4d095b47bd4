"""The restart backoff: doubling from the first delay to the cap, reset by a long healthy run."""

from __future__ import annotations

import pytest

from meshnode.mesh.backoff import RESET_AFTER_S, Backoff


def crash_loop(backoff: Backoff, crashes: int, *, run_s: float = 1.0) -> list[float]:
    """The delays chosen for `crashes` runs of `run_s` each, time advancing by run plus delay."""
    now, delays = 0.0, []
    for _ in range(crashes):
        delay = backoff.after_exit(now, now + run_s)
        delays.append(delay)
        now += run_s + delay
    return delays


def test_delays_double_from_the_first_up_to_the_cap() -> None:
    assert crash_loop(Backoff(0.5, 30.0), 9) == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_a_long_enough_run_starts_over_at_the_first_delay() -> None:
    backoff = Backoff(0.5, 30.0, reset_after_s=60.0)
    assert crash_loop(backoff, 4) == [0.5, 1.0, 2.0, 4.0]
    assert backoff.after_exit(100.0, 160.0) == 0.5  # exactly reset_after_s counts as healthy
    assert backoff.after_exit(200.0, 201.0) == 1.0  # and doubling resumes from there


def test_a_run_just_short_of_the_reset_keeps_doubling() -> None:
    backoff = Backoff(1.0, 100.0, reset_after_s=10.0)
    assert crash_loop(backoff, 3, run_s=9.99) == [1.0, 2.0, 4.0]


def test_the_default_reset_is_a_minute() -> None:
    backoff = Backoff(2.0, 8.0)
    assert crash_loop(backoff, 3) == [2.0, 4.0, 8.0]
    assert backoff.after_exit(0.0, RESET_AFTER_S) == 2.0
    assert RESET_AFTER_S == 60.0


def test_a_zero_first_delay_stays_zero() -> None:
    assert crash_loop(Backoff(0.0, 5.0), 3) == [0.0, 0.0, 0.0]


def test_a_first_delay_above_the_cap_is_used_once() -> None:
    # A supervisor told to hold off a long time first (a test, an operator) gets that, then the cap.
    backoff = Backoff(60.0, 30.0, reset_after_s=100.0)
    assert crash_loop(backoff, 3) == [60.0, 30.0, 30.0]
    assert backoff.after_exit(0.0, 100.0) == 60.0


@pytest.mark.parametrize(
    ("initial_s", "max_s", "reset_after_s"), [(-1.0, 5.0, 60.0), (0.5, -1.0, 60.0), (0.5, 5.0, -1.0)]
)
def test_negative_times_are_refused(initial_s: float, max_s: float, reset_after_s: float) -> None:
    with pytest.raises(ValueError):
        Backoff(initial_s, max_s, reset_after_s)
