"""The pull schedule: holders chosen by digest, chunks spread over holders, failures and bad chunks."""

from __future__ import annotations

import random

import pytest

from meshnode.mesh.pull_plan import Ask, PullPlan, choose_holders


def test_the_digest_most_nodes_hold_wins_and_ties_go_to_the_smaller() -> None:
    assert choose_holders({}) is None
    assert choose_holders({"a": "ff", "b": "aa", "c": "ff"}) == ("ff", ["a", "c"])
    assert choose_holders({"b": "bb", "a": "aa"}) == ("aa", ["a"])
    assert choose_holders({"z": "11", "y": "11"}) == ("11", ["y", "z"])


def test_chunks_go_in_order_to_every_holder_up_to_its_slots() -> None:
    plan = PullPlan(10, (), ["a", "b"], per_holder=2)
    asks = plan.next_asks()
    assert asks == [Ask("a", 0), Ask("b", 1), Ask("a", 2), Ask("b", 3)]
    assert plan.next_asks() == []  # every slot taken
    assert plan.in_flight == 4 and sorted(plan.in_use()) == ["a", "b"]
    plan.received(Ask("b", 1))
    assert plan.next_asks() == [Ask("b", 4)]  # the holder that answered first gets the next


def test_chunks_already_done_are_never_asked_for() -> None:
    plan = PullPlan(5, [0, 2, 4, 99], ["a"], per_holder=8)
    assert [ask.chunk for ask in plan.next_asks()] == [1, 3]
    assert plan.done == {0, 2, 4}
    plan.received(Ask("a", 1))
    plan.received(Ask("a", 3))
    assert plan.finished and plan.stuck() is None


def test_a_failed_holder_is_set_aside_and_its_chunks_go_to_the_others() -> None:
    plan = PullPlan(6, (), ["a", "b"], per_holder=2)
    plan.next_asks()  # a: 0, 2; b: 1, 3
    plan.failed("a", "connection lost")
    assert plan.holders == ["b"] and plan.aside == {"a": "connection lost"}
    plan.received(Ask("b", 1))
    assert plan.next_asks() == [Ask("b", 0)]  # a's chunks first, in order
    assert not plan.received(Ask("a", 2))  # a late answer of the holder set aside counts for nothing
    assert 2 not in plan.done
    plan.add_holders(["a", "c"])  # a stays aside; c is new
    assert plan.holders == ["b", "c"]
    assert plan.next_asks() == [Ask("c", 2), Ask("c", 4)]


def test_a_bad_chunk_is_asked_again_from_another_holder() -> None:
    plan = PullPlan(4, (), ["a", "b"], per_holder=1)
    assert plan.next_asks() == [Ask("a", 0), Ask("b", 1)]
    plan.refused(Ask("a", 0))
    # a is free but sent bad bytes for chunk 0: it takes chunk 2; chunk 0 waits for b.
    assert plan.next_asks() == [Ask("a", 2)]
    plan.received(Ask("b", 1))
    assert plan.next_asks() == [Ask("b", 0)]
    assert plan.bad_by_holder == {"a": 1}


def test_with_one_holder_a_bad_chunk_is_asked_again_from_it_a_bounded_number_of_times() -> None:
    plan = PullPlan(2, [1], ["a"], per_holder=1, max_bad_per_chunk=3, max_bad_per_holder=10)
    for _ in range(2):
        assert plan.next_asks() == [Ask("a", 0)]
        plan.refused(Ask("a", 0))
    assert plan.next_asks() == [Ask("a", 0)]
    plan.refused(Ask("a", 0))
    assert plan.next_asks() == []
    assert plan.stuck() == "chunk 0 had wrong bytes 3 times (from every holder asked)"


def test_a_holder_that_sends_several_bad_chunks_is_set_aside() -> None:
    plan = PullPlan(8, (), ["a", "b"], per_holder=4, max_bad_per_holder=2)
    plan.next_asks()  # a: 0 2 4 6; b: 1 3 5 7
    plan.refused(Ask("a", 0))
    plan.refused(Ask("a", 2))
    assert plan.aside == {"a": "sent 2 chunks with wrong bytes"}
    assert plan.holders == ["b"]
    for chunk in (1, 3, 5, 7):
        plan.received(Ask("b", chunk))
    assert [ask.chunk for ask in plan.next_asks()] == [0, 2, 4, 6]


def test_stuck_names_the_holders_set_aside_when_none_is_left() -> None:
    plan = PullPlan(3, (), ["a"], per_holder=1)
    assert plan.stuck() is None
    plan.next_asks()
    assert plan.stuck() is None  # a request is in flight
    plan.failed("a", "did not answer")
    assert plan.stuck() == "no holder left to ask (a: did not answer)"
    assert PullPlan(1, (), [], per_holder=1).stuck() == "no holder left to ask (none was known)"
    assert PullPlan(0, (), [], per_holder=1).stuck() is None  # an empty model is done at once


def test_returned_chunks_go_back_without_blame() -> None:
    plan = PullPlan(2, (), ["a"], per_holder=2)
    plan.next_asks()
    plan.returned(Ask("a", 1))
    assert plan.bad_by_holder == {} and plan.in_flight == 1
    assert plan.next_asks() == [Ask("a", 1)]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        PullPlan(-1, (), ["a"], per_holder=1)
    with pytest.raises(ValueError):
        PullPlan(1, (), ["a"], per_holder=0)


@pytest.mark.parametrize("seed", range(20))
def test_every_chunk_is_done_exactly_once_whatever_happens(seed: int) -> None:
    """Random answers, failures, bad bytes and new holders: the invariants hold and the pull ends."""
    rng = random.Random(seed)
    done = rng.sample(range(40), 5)
    plan = PullPlan(40, done, ["a", "b", "c"], per_holder=3, max_bad_per_chunk=50, max_bad_per_holder=99)
    outstanding: list[Ask] = []
    for step in range(2000):
        outstanding += plan.next_asks()
        flying = {ask.chunk for ask in outstanding if ask.holder in plan.holders}
        assert not flying & plan.done
        if plan.finished or plan.stuck() is not None:
            break
        ask = outstanding.pop(rng.randrange(len(outstanding)))
        roll = rng.random()
        if roll < 0.1:
            plan.refused(ask)
        elif roll < 0.13:
            plan.failed(ask.holder, "lost")
            plan.add_holders([f"new{step}"])
        else:
            plan.received(ask)
    assert plan.finished, plan.stuck()
    assert plan.done == set(range(40)) and plan.in_flight == 0
