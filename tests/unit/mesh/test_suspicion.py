"""Lifeguard's dynamic suspicion timeout: a lone accuser waits long, many independent ones do not.

Expected values are memberlist's own (suspicion_test.go, TestSuspicion_remainingSuspicionTime: with
k = 3, min 2 s and max 30 s, remaining plus elapsed time is 30, 16, 7.81 and 2 s after 0, 1, 2 and 3
confirmations).
"""

from __future__ import annotations

import math

import pytest

from meshnode.mesh.config import MembershipConfig
from meshnode.mesh.suspicion import Suspicion, Suspicions
from meshnode.mesh.types import NodeId

START = 100.0
MIN_S = 2.0
MAX_S = 30.0
ACCUSER = NodeId("accuser")


def peers(count: int) -> list[NodeId]:
    return [NodeId(f"peer-{i}") for i in range(count)]


def suspicion(expected: int = 3, *, min_s: float = MIN_S, max_s: float = MAX_S) -> Suspicion:
    return Suspicion(ACCUSER, expected, min_s, max_s, START)


def lifeguard_timeout(confirmations: int, expected: int, min_s: float, max_s: float) -> float:
    """The formula from the Lifeguard paper, written out independently of the module."""
    fraction = math.log(confirmations + 1) / math.log(expected + 1)
    return max(min_s, max_s - fraction * (max_s - min_s))


def test_a_lone_accusation_waits_the_maximum() -> None:
    assert suspicion().deadline == START + MAX_S


def test_with_no_confirmations_expected_the_minimum_applies_at_once() -> None:
    only_one = suspicion(expected=0)
    assert only_one.deadline == START + MIN_S
    assert not only_one.confirm(NodeId("peer-0"))
    assert only_one.deadline == START + MIN_S


@pytest.mark.parametrize(("confirmations", "timeout_s"), [(0, 30.0), (1, 16.0), (2, 7.81), (3, 2.0)])
def test_confirmations_shrink_the_deadline_as_in_memberlist(confirmations: int, timeout_s: float) -> None:
    suspected = suspicion(expected=3)
    for peer in peers(confirmations):
        assert suspected.confirm(peer)
    # memberlist rounds down to whole milliseconds; the formula itself is not rounded.
    assert suspected.deadline - START == pytest.approx(timeout_s, abs=1e-3)


@pytest.mark.parametrize("expected", [1, 2, 5, 9])
def test_every_step_follows_the_lifeguard_formula(expected: int) -> None:
    suspected = suspicion(expected, min_s=1.0, max_s=6.0)
    for count, peer in enumerate(peers(expected), start=1):
        suspected.confirm(peer)
        assert suspected.deadline == pytest.approx(START + lifeguard_timeout(count, expected, 1.0, 6.0))


def test_half_the_expected_confirmations_in_log_terms_lands_halfway() -> None:
    # log(2 + 1) / log(8 + 1) == 1/2: two of eight expected confirmations halve the span.
    suspected = suspicion(expected=8, min_s=1.0, max_s=6.0)
    suspected.confirm(NodeId("peer-0"))
    suspected.confirm(NodeId("peer-1"))
    assert suspected.deadline == pytest.approx(START + 3.5)


def test_the_deadline_counts_from_the_start_of_the_suspicion() -> None:
    """Confirmations shorten the original deadline; they do not restart the clock."""
    suspected = suspicion(expected=1)
    suspected.confirm(NodeId("peer-0"))
    assert suspected.deadline == START + MIN_S
    assert suspected.start == START


def test_a_new_confirmation_reports_true_so_it_is_gossiped_on() -> None:
    assert suspicion().confirm(NodeId("peer-0")) is True


def test_duplicate_confirmers_do_not_count() -> None:
    suspected = suspicion(expected=3)
    assert suspected.confirm(NodeId("peer-0"))
    after_one = suspected.deadline
    assert not suspected.confirm(NodeId("peer-0"))
    assert suspected.deadline == after_one


def test_the_accuser_cannot_confirm_its_own_accusation() -> None:
    suspected = suspicion(expected=3)
    assert not suspected.confirm(ACCUSER)
    assert suspected.deadline == START + MAX_S


def test_confirmations_beyond_expected_are_ignored() -> None:
    suspected = suspicion(expected=2)
    first, second, third, fourth = peers(4)
    assert suspected.confirm(first)
    assert suspected.confirm(second)
    assert suspected.deadline == START + MIN_S
    assert not suspected.confirm(third)
    assert not suspected.confirm(fourth)
    assert suspected.deadline == START + MIN_S


@pytest.mark.parametrize("expected", [1, 2, 3, 10, 50])
def test_the_deadline_never_drops_below_the_minimum_and_never_grows(expected: int) -> None:
    suspected = suspicion(expected)
    previous = suspected.deadline
    for peer in peers(expected * 3):
        suspected.confirm(peer)
        assert START + MIN_S <= suspected.deadline <= previous
        previous = suspected.deadline
    assert suspected.deadline == pytest.approx(START + MIN_S)


# -- the table of open suspicions (Suspicions) ------------------------------------------------

CONFIG = MembershipConfig.local()  # suspicion_mult 4: memberlist expects k = 4 - 2 = 2 confirmations


def test_a_suspicion_in_a_big_mesh_expects_confirmations_and_waits_the_maximum() -> None:
    table = Suspicions(CONFIG)
    table.start(NodeId("a"), ACCUSER, 100, START)
    assert table["a"].expected == CONFIG.suspicion_mult - 2
    assert table.next_deadline() == START + CONFIG.suspicion_max_s(100)


def test_a_mesh_too_small_for_confirmations_gets_the_minimum_at_once() -> None:
    # memberlist: k = 0 when fewer than k + 2 members exist.
    table = Suspicions(CONFIG)
    table.start(NodeId("a"), ACCUSER, CONFIG.suspicion_mult - 1, START)
    assert table["a"].expected == 0
    assert table.next_deadline() == START + CONFIG.suspicion_min_s(CONFIG.suspicion_mult - 1)


def test_the_table_reports_its_earliest_deadline_as_suspicions_come_and_go() -> None:
    table = Suspicions(CONFIG)
    assert table.next_deadline() == math.inf
    table.start(NodeId("early"), ACCUSER, 100, START)
    table.start(NodeId("late"), ACCUSER, 100, START + 1.0)
    assert table.next_deadline() == table["early"].deadline
    table.discard(NodeId("early"))
    assert table.next_deadline() == table["late"].deadline
    assert table.confirm(NodeId("late"), NodeId("peer-0"))
    assert table.next_deadline() == table["late"].deadline < START + 1.0 + CONFIG.suspicion_max_s(100)
    table.discard(NodeId("late"))
    assert table.next_deadline() == math.inf and len(table) == 0


def test_only_suspicions_past_their_deadline_are_due() -> None:
    table = Suspicions(CONFIG)
    table.start(NodeId("a"), ACCUSER, 100, START)
    table.start(NodeId("b"), ACCUSER, 100, START + 1.0)
    deadline_a = table["a"].deadline
    assert table.due(deadline_a - 0.001) == []
    assert table.due(deadline_a) == ["a"]
    assert table.due(table["b"].deadline) == ["a", "b"]


def test_confirming_an_unknown_or_repeated_accusation_changes_nothing() -> None:
    table = Suspicions(CONFIG)
    assert not table.confirm(NodeId("nobody"), NodeId("peer-0"))
    table.start(NodeId("a"), ACCUSER, 100, START)
    assert table.confirm(NodeId("a"), NodeId("peer-0"))
    assert not table.confirm(NodeId("a"), NodeId("peer-0"))
    assert "a" in table and "nobody" not in table
