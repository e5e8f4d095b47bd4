"""InlinePolicy: a predictor earns inline calls by being fast, and loses them with one slow call."""

from __future__ import annotations

import pytest

from meshnode.inference.inline_calls import MAX_PROBATION, InlinePolicy

FAST, SLOW = 0.0001, 0.01


def test_a_replica_starts_on_the_pool_and_runs_inline_after_its_probation() -> None:
    policy = InlinePolicy(max_s=0.001, probation=3)
    for _ in range(2):
        policy.record(FAST)
        assert not policy.inline
    policy.record(FAST)
    assert policy.inline


def test_a_slow_call_on_probation_starts_it_again_without_doubling() -> None:
    policy = InlinePolicy(max_s=0.001, probation=3)
    policy.record(FAST)
    policy.record(FAST)
    policy.record(SLOW)
    assert not policy.inline and policy.probation == 3
    for _ in range(3):
        policy.record(FAST)
    assert policy.inline


def test_a_slow_inline_call_sends_it_back_to_the_pool_for_twice_the_probation() -> None:
    policy = InlinePolicy(max_s=0.001, probation=2)
    policy.record(FAST)
    policy.record(FAST)
    policy.record(SLOW)
    assert not policy.inline and policy.probation == 4
    for _ in range(3):
        policy.record(FAST)
    assert not policy.inline
    policy.record(FAST)
    assert policy.inline


def test_a_call_of_exactly_the_limit_counts_as_slow() -> None:
    policy = InlinePolicy(max_s=0.001, probation=1)
    policy.record(0.001)
    assert not policy.inline


def test_the_probation_stops_growing_at_its_ceiling() -> None:
    policy = InlinePolicy(max_s=0.001, probation=MAX_PROBATION // 2)
    for _ in range(3):
        for _ in range(policy.probation):
            policy.record(FAST)
        assert policy.inline
        policy.record(SLOW)
    assert policy.probation == MAX_PROBATION


@pytest.mark.parametrize(("max_s", "probation"), [(0.0, 1), (-1.0, 1), (0.001, 0)])
def test_nonsense_settings_are_refused(max_s: float, probation: int) -> None:
    with pytest.raises(ValueError, match="max_s"):
        InlinePolicy(max_s=max_s, probation=probation)
