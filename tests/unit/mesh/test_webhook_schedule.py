"""The webhook retry schedule (mesh/webhook_schedule.py): 10 tries over about 2 hours."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.mesh.webhook_schedule import (
    DEFAULT_SCHEDULE,
    WebhookSchedule,
    delays_s,
    next_delay_s,
    outcome,
)

HOUR_S = 3600.0
NOMINAL_S = [15.0, 30.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 3600.0]  # the module docstring's


def test_without_jitter_the_schedule_is_the_documented_table() -> None:
    exact = WebhookSchedule(jitter=0.0)
    assert delays_s(random.Random(0), exact) == NOMINAL_S
    assert sum(NOMINAL_S) == 7425.0  # 2 h 3 min 45 s
    assert (DEFAULT_SCHEDULE.tries, DEFAULT_SCHEDULE.timeout_s) == (10, 15.0)


@given(st.integers(min_value=0, max_value=2**64))
def test_ten_tries_span_about_two_hours_with_any_seed(seed: int) -> None:
    waits = delays_s(random.Random(seed))
    assert len(waits) == DEFAULT_SCHEDULE.tries - 1
    assert 1.5 * HOUR_S < sum(waits) < 2.5 * HOUR_S
    # Jitter moves each wait by at most 10%, and never past the cap.
    for wait, nominal in zip(waits, NOMINAL_S, strict=True):
        assert 0.9 * nominal <= wait <= 1.1 * nominal


def test_the_same_seed_gives_the_same_schedule_and_others_spread_it() -> None:
    assert delays_s(random.Random(7)) == delays_s(random.Random(7))
    firsts = {round(delays_s(random.Random(seed))[0], 3) for seed in range(50)}
    assert len(firsts) > 40


def test_after_the_last_try_it_gives_up() -> None:
    rng = random.Random(1)
    assert next_delay_s(9, rng) is not None
    assert next_delay_s(10, rng) is None
    assert next_delay_s(11, rng) is None
    assert next_delay_s(1, rng, WebhookSchedule(tries=1)) is None
    with pytest.raises(ValueError):
        next_delay_s(0, rng)


def test_a_retry_after_lengthens_a_wait_but_never_past_the_cap() -> None:
    rng = random.Random(1)
    assert next_delay_s(1, rng, retry_after_s=120.0) == 120.0
    assert next_delay_s(1, rng, retry_after_s=86400.0) == DEFAULT_SCHEDULE.max_delay_s
    shorter = next_delay_s(8, rng, retry_after_s=1.0)
    assert shorter is not None and shorter > 1000.0  # a short Retry-After does not hurry the schedule


def test_a_long_schedule_stays_at_the_cap_without_overflowing() -> None:
    schedule = WebhookSchedule(tries=100_000, jitter=0.0)
    assert next_delay_s(99_999, random.Random(0), schedule) == schedule.max_delay_s


@pytest.mark.parametrize(
    "knobs",
    [
        {"tries": 0},
        {"first_delay_s": 0.0},
        {"first_delay_s": 7200.0},
        {"factor": 0.5},
        {"jitter": 1.0},
        {"jitter": -0.1},
        {"timeout_s": 0.0},
    ],
)
def test_nonsense_knobs_are_refused(knobs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        WebhookSchedule(**knobs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, "delivered"),
        (204, "delivered"),
        (299, "delivered"),
        (301, "retry"),
        (404, "retry"),
        (410, "gone"),
        (429, "retry"),
        (500, "retry"),
        (None, "retry"),
    ],
)
def test_outcome_of_a_receiver_s_answer(status: int | None, expected: str) -> None:
    assert outcome(status) == expected
