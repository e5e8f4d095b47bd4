"""The transmit-limited broadcast queue: what gets piggybacked, in which order, and for how long."""

from __future__ import annotations

import random
from typing import Any

import pytest

from meshnode.mesh.broadcast_queue import CARRY_TRANSMITS, BroadcastQueue
from meshnode.mesh.load_news import Load
from meshnode.mesh.metadata import NodeMeta
from meshnode.mesh.types import Address, NodeId
from meshnode.mesh.wire import Alive, Dead, Gossip, Suspect, encoded_size

LIMIT = 3
BIG_BUDGET = 1 << 20
ACCUSER = NodeId("accuser")


def suspect(node: str, incarnation: int = 1) -> Suspect:
    return Suspect(NodeId(node), incarnation, ACCUSER)


def alive(node: str, incarnation: int = 1, *, padding: int = 0) -> Alive:
    """An alive message; ``padding`` grows its metadata to make it big."""
    meta = NodeMeta(name=node, device={"pad": "x" * padding})
    return Alive(NodeId(node), incarnation, Address("10.0.0.1:8471"), 0, meta)


def queue_of(*messages: Gossip) -> BroadcastQueue:
    queue = BroadcastQueue()
    for message in messages:
        queue.push(message)
    return queue


def pop_one(queue: BroadcastQueue, limit: int = LIMIT) -> Gossip:
    """What a packet with room for one suspect about a node of up to 3 characters carries."""
    (message,) = queue.pop_for_packet(encoded_size(suspect("xyz")), limit)
    return message


# -- empty ---------------------------------------------------------------------------------


def test_an_empty_queue_hands_out_nothing() -> None:
    queue = BroadcastQueue()
    assert len(queue) == 0
    assert queue.queued() == []
    assert queue.pop_for_packet(BIG_BUDGET, LIMIT) == []


def test_a_queue_drained_by_its_limit_is_empty_again() -> None:
    queue = queue_of(suspect("a"))
    for _ in range(LIMIT):
        queue.pop_for_packet(BIG_BUDGET, LIMIT)
    assert len(queue) == 0
    assert queue.pop_for_packet(BIG_BUDGET, LIMIT) == []


# -- one message per node ------------------------------------------------------------------


def test_newer_news_about_a_node_replaces_older() -> None:
    refutation = alive("a", incarnation=7)
    queue = queue_of(suspect("a", incarnation=6), refutation)
    assert len(queue) == 1
    assert queue.queued() == [refutation]
    assert queue.pop_for_packet(BIG_BUDGET, LIMIT) == [refutation]


def test_replacement_works_across_message_kinds() -> None:
    death = Dead(NodeId("a"), 6, ACCUSER)
    queue = queue_of(alive("a", 5), suspect("a", 6), death)
    assert queue.queued() == [death]


def test_news_about_other_nodes_is_kept() -> None:
    queue = queue_of(suspect("a"), suspect("b"), suspect("a", 2))
    assert len(queue) == 2
    assert set(queue.queued()) == {suspect("a", 2), suspect("b")}


def test_replacing_news_gets_a_full_transmit_allowance() -> None:
    queue = queue_of(suspect("a", 1))
    queue.pop_for_packet(BIG_BUDGET, LIMIT)
    queue.pop_for_packet(BIG_BUDGET, LIMIT)
    queue.push(alive("a", 2))
    sent = [queue.pop_for_packet(BIG_BUDGET, LIMIT) for _ in range(LIMIT + 1)]
    assert sent == [[alive("a", 2)]] * LIMIT + [[]]


# -- order ---------------------------------------------------------------------------------


def test_newest_goes_first_among_equally_transmitted() -> None:
    queue = queue_of(suspect("a"), suspect("b"), suspect("c"))
    assert queue.pop_for_packet(BIG_BUDGET, LIMIT) == [suspect("c"), suspect("b"), suspect("a")]


def test_least_transmitted_goes_first() -> None:
    queue = queue_of(suspect("a"), suspect("b"))
    assert pop_one(queue) == suspect("b")  # both untransmitted: newest first
    assert pop_one(queue) == suspect("a")  # a has been sent less often than b
    assert pop_one(queue) == suspect("b")  # both sent once: newest first again
    queue.push(suspect("c"))
    assert pop_one(queue) == suspect("c")  # fresh news overtakes everything sent before


# -- background news (load only) -------------------------------------------------------------


def test_background_news_waits_for_all_other_news_however_often_that_went_out() -> None:
    queue = BroadcastQueue()
    queue.push(suspect("a"))
    queue.push(suspect("b"))
    for _ in range(2):
        queue.pop_for_packet(BIG_BUDGET, 10)  # a and b sent twice each
    queue.push(alive("load"), background=True)  # fresh, never sent: still after them
    assert queue.pop_for_packet(BIG_BUDGET, 10) == [suspect("b"), suspect("a"), alive("load")]


def test_a_packet_may_take_background_news_first() -> None:
    queue = BroadcastQueue()
    queue.push(suspect("a"))
    queue.push(alive("load"), background=True)
    room = encoded_size(alive("load"))
    assert queue.pop_for_packet(room, LIMIT, background_first=True) == [alive("load")]
    assert queue.pop_for_packet(room, LIMIT) == [suspect("a")]


def test_background_news_replacing_news_that_barely_went_out_stays_in_the_foreground() -> None:
    # The replaced news (a new replica state, say) reached fewer than CARRY_TRANSMITS peers: the load
    # news after it carries the change too, so it goes out as the change would have.
    queue = BroadcastQueue()
    queue.push(alive("x", 1))
    queue.push(suspect("z"))
    queue.push(alive("x", 2), background=True)
    assert queue.pop_for_packet(BIG_BUDGET, 10) == [alive("x", 2), suspect("z")]  # x: foreground, newest
    for _ in range(CARRY_TRANSMITS - 1):
        queue.pop_for_packet(BIG_BUDGET, 10)
    queue.push(alive("x", 3), background=True)  # x's news went out CARRY_TRANSMITS times: enough
    assert queue.pop_for_packet(BIG_BUDGET, 10) == [suspect("z"), alive("x", 3)]


def test_the_queue_counts_its_news_by_class() -> None:
    queue = BroadcastQueue()
    assert queue.counts() == {"foreground": 0, "background": 0}
    queue.push(suspect("a"))
    queue.push(alive("b"), background=True)
    queue.push(alive("c"), background=True)
    assert queue.counts() == {"foreground": 1, "background": 2}


# -- transmit limit ------------------------------------------------------------------------


def test_a_message_leaves_after_limit_transmits() -> None:
    queue = queue_of(suspect("a"))
    for _ in range(LIMIT):
        assert queue.pop_for_packet(BIG_BUDGET, LIMIT) == [suspect("a")]
    assert queue.pop_for_packet(BIG_BUDGET, LIMIT) == []
    assert len(queue) == 0


def test_limit_one_sends_each_message_once() -> None:
    queue = queue_of(suspect("a"), suspect("b"))
    assert len(queue.pop_for_packet(BIG_BUDGET, 1)) == 2
    assert len(queue) == 0


# -- byte budget ---------------------------------------------------------------------------


def test_messages_that_fit_the_budget_exactly_all_go() -> None:
    messages: list[Gossip] = [suspect("a"), alive("b"), suspect("c")]
    queue = queue_of(*messages)
    budget = sum(encoded_size(m) for m in messages)
    assert len(queue.pop_for_packet(budget, LIMIT)) == 3


def test_one_byte_short_leaves_a_message_behind() -> None:
    messages = [suspect("a"), suspect("b"), suspect("c")]
    queue = queue_of(*messages)
    budget = sum(encoded_size(m) for m in messages) - 1
    assert queue.pop_for_packet(budget, LIMIT) == [suspect("c"), suspect("b")]


def test_the_total_size_handed_out_never_exceeds_the_budget() -> None:
    queue = queue_of(*(alive(f"n{i}", padding=i * 7) for i in range(40)))
    for budget in (0, 1, 50, 200, 1400, 5000):
        for _ in range(3):
            sent = queue.pop_for_packet(budget, LIMIT)
            assert sum(encoded_size(m) for m in sent) <= budget


def test_a_message_that_does_not_fit_is_skipped_and_smaller_ones_still_go() -> None:
    big = alive("big", padding=2000)
    small = [suspect("a"), suspect("b")]
    queue = queue_of(*small, big)  # big is newest, so it is considered first
    budget = sum(encoded_size(m) for m in small) + 10
    assert encoded_size(big) > budget
    assert set(queue.pop_for_packet(budget, LIMIT)) == set(small)


def test_a_skipped_message_is_not_counted_as_transmitted() -> None:
    big = alive("big", padding=2000)
    queue = queue_of(big, suspect("a"))
    assert queue.pop_for_packet(encoded_size(suspect("a")), LIMIT) == [suspect("a")]
    # With room, big goes first (sent less often than a) and is still sent its full LIMIT times.
    assert queue.pop_for_packet(BIG_BUDGET, LIMIT) == [big, suspect("a")]
    sends_of_big = 1
    while batch := queue.pop_for_packet(BIG_BUDGET, LIMIT):
        sends_of_big += batch.count(big)
    assert sends_of_big == LIMIT


# -- news larger than a packet's budget (a gossip round sends it alone) ----------------------


def test_news_larger_than_the_budget_goes_alone_when_next_in_line_and_asked() -> None:
    big = alive("big", padding=2000)
    queue = queue_of(suspect("a"), big)  # big is newest: next in line
    budget = encoded_size(big) - 1
    assert queue.pop_for_packet(budget, LIMIT) == [suspect("a")]  # piggybacked: never big
    assert queue.pop_for_packet(budget, LIMIT, oversized_alone=True) == [big]  # a packet of its own


def test_news_larger_than_the_budget_waits_for_its_turn_behind_news_that_fits() -> None:
    big = alive("big", padding=2000)
    queue = queue_of(big, suspect("a"), suspect("b"))  # the suspects are newer: first in line
    budget = encoded_size(big) // 2
    assert queue.pop_for_packet(budget, LIMIT, oversized_alone=True) == [suspect("b"), suspect("a")]
    assert queue.pop_for_packet(budget, LIMIT, oversized_alone=True) == [big]


def test_news_larger_than_the_budget_is_sent_its_limit_times_then_leaves() -> None:
    big = alive("big", padding=2000)
    queue = queue_of(big)
    sent = [queue.pop_for_packet(100, LIMIT, oversized_alone=True) for _ in range(LIMIT + 1)]
    assert sent == [[big]] * LIMIT + [[]]
    assert len(queue) == 0


def test_no_budget_sends_nothing_and_uses_up_nothing() -> None:
    queue = queue_of(suspect("a"))
    assert queue.pop_for_packet(0, 1) == []
    assert queue.pop_for_packet(-10, 1) == []
    assert queue.queued() == [suspect("a")]


# -- the order, against a plain sort of the whole queue ------------------------------------


class SortedQueue:
    """The rule written as plainly as possible: sort everything by (class, transmits, newest) per packet."""

    def __init__(self) -> None:
        # node -> [message, transmits, background]; oldest push first
        self.entries: dict[NodeId, list[Any]] = {}

    def push(self, message: Alive | Suspect, background: bool = False) -> None:
        replaced = self.entries.pop(message.node, None)
        carried = replaced is not None and not replaced[2] and replaced[1] < CARRY_TRANSMITS
        self.entries[message.node] = [message, 0, background and not carried]

    def pop_for_packet(
        self, budget: int, limit: int, oversized_alone: bool = False, background_first: bool = False
    ) -> list[Gossip]:
        chosen, used = [], 0
        ranked = sorted(reversed(self.entries.values()), key=lambda e: (e[2] != background_first, e[1]))
        for index, entry in enumerate(ranked):
            size = encoded_size(entry[0])
            if index == 0 and oversized_alone and size > budget > 0:
                entry[1] += 1
                if entry[1] >= limit:
                    del self.entries[entry[0].node]
                return [entry[0]]
            if used + size > budget:
                continue
            used += size
            chosen.append(entry[0])
            entry[1] += 1
            if entry[1] >= limit:
                del self.entries[entry[0].node]
        return chosen


@pytest.mark.parametrize("seed", range(30))
def test_the_heap_hands_out_what_a_sort_of_the_whole_queue_would(seed: int) -> None:
    """Random pushes (replacing news about the same nodes, of varied sizes, foreground or background)
    and packets of varied room, piggybacks and gossip rounds (where news larger than the room goes
    alone when next in line), some taking background news first."""
    rng = random.Random(seed)
    queue, plain = BroadcastQueue(), SortedQueue()
    nodes = [f"n{index}" for index in range(rng.randrange(2, 60))]
    for _ in range(400):
        if rng.random() < 0.55:
            node = rng.choice(nodes)
            message: Alive | Suspect = (
                alive(node, rng.randrange(9), padding=rng.choice((0, 10, 300, 900)))
                if rng.random() < 0.7
                else suspect(node, rng.randrange(9))
            )
            background = rng.random() < 0.5
            queue.push(message, background=background)
            plain.push(message, background)
        else:
            budget, limit = rng.choice((0, 90, 400, 1400, BIG_BUDGET)), rng.randrange(1, 6)
            alone = rng.random() < 0.5  # a gossip round's packet, else a piggyback
            first = rng.random() < 0.25
            handed = queue.pop_for_packet(budget, limit, oversized_alone=alone, background_first=first)
            assert handed == plain.pop_for_packet(budget, limit, alone, first), seed
        assert queue.queued() == [entry[0] for entry in plain.entries.values()]


def load(node: str, version: int = 2) -> Load:
    return Load(NodeId(node), 1, version, 1, {"load": {"cpu": version}, "replicas": {}})


def test_load_news_has_a_slot_beside_the_node_news_it_cannot_replace() -> None:
    """A delta of load does not carry the change a queued alive may: both go out, the alive first."""
    queue = queue_of(alive("a"))
    queue.push(load("a"), background=True)
    queue.push(load("a", 3), background=True)  # newer load news replaces the older
    assert queue.queued() == [alive("a"), load("a", 3)]
    assert queue.pop_for_packet(BIG_BUDGET, LIMIT) == [alive("a"), load("a", 3)]


def test_an_alive_or_a_dead_of_the_node_empties_its_load_slot() -> None:
    queue = queue_of(load("a"), load("b"))
    queue.push(alive("a", 2))
    queue.push(Dead(NodeId("b"), 1, NodeId("b")))
    assert queue.queued() == [alive("a", 2), Dead(NodeId("b"), 1, NodeId("b"))]
    queue.push(suspect("c"))
    queue.push(load("c"), background=True)
    queue.push(suspect("c", 2))  # a suspicion says nothing of load: the load news stays
    assert load("c") in queue.queued()


def test_dropping_load_news_leaves_the_rest_and_every_slot_can_fill_again() -> None:
    queue = queue_of(alive("a"), suspect("b"))
    for node in "abc":
        queue.push(load(node), background=True)
    queue.drop_load_news()
    assert queue.queued() == [alive("a"), suspect("b")]
    queue.push(load("c"), background=True)
    handed = queue.pop_for_packet(BIG_BUDGET, LIMIT)
    assert handed[2] == load("c")  # background: after the rest, which goes newest first
    assert handed[:2] == [suspect("b"), alive("a")]
