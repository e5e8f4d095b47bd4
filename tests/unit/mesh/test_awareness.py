"""Lifeguard's local health: a struggling node stretches its own timeouts, within bounds."""

from __future__ import annotations

import pytest

from meshnode.mesh.awareness import Awareness

MAX_MULTIPLIER = 8


def test_a_healthy_node_uses_its_timeouts_unchanged() -> None:
    assert Awareness(MAX_MULTIPLIER).scale(0.5) == 0.5


def test_each_point_of_trouble_adds_one_base_timeout() -> None:
    awareness = Awareness(MAX_MULTIPLIER)
    awareness.apply(1)
    assert awareness.scale(0.5) == 1.0
    awareness.apply(2)
    assert awareness.scale(0.5) == 2.0


def test_recovery_brings_the_timeout_back_down() -> None:
    awareness = Awareness(MAX_MULTIPLIER)
    awareness.apply(3)
    awareness.apply(-1)
    assert awareness.scale(1.0) == 3.0
    awareness.apply(-2)
    assert awareness.scale(1.0) == 1.0


def test_the_stretch_is_capped_at_max_multiplier() -> None:
    awareness = Awareness(MAX_MULTIPLIER)
    awareness.apply(1000)
    assert awareness.scale(1.0) == MAX_MULTIPLIER
    awareness.apply(1)
    assert awareness.scale(0.25) == MAX_MULTIPLIER * 0.25


def test_the_score_never_goes_below_zero() -> None:
    awareness = Awareness(MAX_MULTIPLIER)
    awareness.apply(-5)
    assert awareness.scale(1.0) == 1.0
    # No hidden credit: one sign of trouble after many successes still counts.
    awareness.apply(1)
    assert awareness.scale(1.0) == 2.0


def test_a_capped_score_recovers_from_the_cap_not_from_the_excess() -> None:
    awareness = Awareness(MAX_MULTIPLIER)
    awareness.apply(100)
    awareness.apply(-1)
    assert awareness.scale(1.0) == MAX_MULTIPLIER - 1


def test_max_multiplier_one_disables_awareness() -> None:
    awareness = Awareness(1)
    awareness.apply(5)
    assert awareness.scale(0.5) == 0.5


@pytest.mark.parametrize("deltas", [[1, 1, -1, 4, -2, 9, -20, 3], [-1, -1, 7, 7, -3], [2] * 10])
def test_the_multiplier_stays_between_one_and_max(deltas: list[int]) -> None:
    awareness = Awareness(MAX_MULTIPLIER)
    for delta in deltas:
        awareness.apply(delta)
        assert 1.0 <= awareness.scale(1.0) <= MAX_MULTIPLIER
