"""Prefix affinity: one conversation, one replica, chosen alike everywhere, falling back to load."""

from __future__ import annotations

import collections
import random
from dataclasses import replace

import pytest

from meshnode.mesh.affinity import MAX_KEY_CHARS, conversation_key, preferred
from meshnode.mesh.routing import Candidate, Locality, RouteRequest, ordered, rank
from meshnode.mesh.types import Status

from .test_routing import ME, replica

HERE = Locality(ME)
KEYS = [f"conversation-{i}" for i in range(4000)]


def first(pool: list[Candidate], request: RouteRequest, seed: int = 0, here: Locality = HERE) -> str:
    return ordered(rank(pool, request, {}, random.Random(seed), here))[0].name


def test_a_key_prefers_the_same_replica_whoever_asks_and_however_they_list_them() -> None:
    pool = [replica(f"n{i}") for i in range(6)]
    for key in KEYS[:200]:
        choice = preferred(key, pool)
        assert choice is not None
        assert preferred(key, list(reversed(pool))) == choice
        shuffled = pool[:]
        random.Random(key).shuffle(shuffled)
        assert preferred(key, shuffled) == choice
    assert preferred("k", []) is None


def test_many_keys_spread_about_evenly_and_by_slots() -> None:
    pool = [replica(f"n{i}") for i in range(5)]
    counts = collections.Counter(preferred(key, pool).name for key in KEYS)  # type: ignore[union-attr]
    expected = len(KEYS) / len(pool)
    assert set(counts) == {c.name for c in pool}
    assert all(abs(count - expected) < 0.12 * expected for count in counts.values()), counts
    # A replica that runs four requests at once draws about four times the conversations.
    weighted = [replica("big", slots=4), replica("small")]
    counts = collections.Counter(preferred(key, weighted).name for key in KEYS)  # type: ignore[union-attr]
    assert 3.3 < counts["big"] / counts["small"] < 4.8, counts


def test_a_replica_leaving_moves_only_its_own_conversations_and_one_joining_takes_a_fair_share() -> None:
    pool = [replica(f"n{i}") for i in range(5)]
    before = {key: preferred(key, pool).name for key in KEYS}  # type: ignore[union-attr]
    after = {key: preferred(key, pool[1:]).name for key in KEYS}  # type: ignore[union-attr]
    moved = {key for key in KEYS if before[key] != after[key]}
    assert moved == {key for key in KEYS if before[key] == "n0"}
    joined = {key: preferred(key, [*pool, replica("n5")]).name for key in KEYS}  # type: ignore[union-attr]
    taken = [key for key in KEYS if joined[key] != before[key]]
    assert all(joined[key] == "n5" for key in taken)
    assert abs(len(taken) - len(KEYS) / 6) < 0.15 * len(KEYS) / 6


def test_rank_puts_the_preferred_replica_first_for_every_seed_and_entry_node() -> None:
    # Uneven queues, each with a slot free: without a key, the order would vary by node and seed.
    pool = [replica(f"n{i}", queue=i % 2, slots=2) for i in range(5)]
    for key in KEYS[:50]:
        request = RouteRequest("chat", affinity=key)
        choice = preferred(key, pool)
        assert choice is not None
        for entry in pool:  # each node routes with its own replica marked as its own
            seen_from = [replace(c, is_self=c.node == entry.node) for c in pool]
            here = Locality(entry.node)
            assert {first(seen_from, request, seed, here) for seed in range(4)} == {choice.name}


def test_a_preferred_replica_without_a_free_slot_falls_back_to_power_of_two_choices() -> None:
    pool = [replica(f"n{i}", slots=2) for i in range(4)]
    key = KEYS[0]
    busy = preferred(key, pool)
    assert busy is not None
    # Its slots are taken (still below capacity): a key is no reason to queue behind it.
    loaded = [replace(c, queue=2) if c is busy else c for c in pool]
    request = RouteRequest("chat", affinity=key)
    for seed in range(20):
        with_key = ordered(rank(loaded, request, {}, random.Random(seed), HERE))
        without = ordered(rank(loaded, RouteRequest("chat"), {}, random.Random(seed), HERE))
        assert with_key == without and with_key[0] is not busy
    # What this node has in flight to it counts too (the same corrected queue as everywhere).
    in_flight = {busy.node: 2}
    assert ordered(rank(pool, request, in_flight, random.Random(1), HERE))[0] is not busy
    # Full or suspect: never promoted.
    for fallen in (replace(busy, queue=100), replace(busy, status=Status.SUSPECT)):
        swapped = [fallen if c is busy else c for c in pool]
        assert ordered(rank(swapped, request, {}, random.Random(1), HERE))[0] is not fallen


def test_without_a_key_the_order_is_unchanged() -> None:
    pool = [replica(f"n{i}", queue=i % 3, service_s=0.01 * (1 + i % 2)) for i in range(6)]
    for seed in range(30):
        plain = rank(pool, RouteRequest("chat"), {}, random.Random(seed), HERE)
        keyless = rank(pool, RouteRequest("chat", affinity=None), {}, random.Random(seed), HERE)
        assert plain == keyless


def test_a_hint_is_stronger_than_affinity() -> None:
    pool = [replica(f"n{i}") for i in range(4)]
    key = next(k for k in KEYS if preferred(k, pool).name != "n3")  # type: ignore[union-attr]
    hinted = [replace(c, hints=frozenset({"lora"})) if c.name == "n3" else c for c in pool]
    tiers = rank(hinted, RouteRequest("chat", hint="lora", affinity=key), {}, random.Random(0), HERE)
    assert [tier.name for tier in tiers] == ["hint", "any"]
    assert tiers[0].candidates[0].name == "n3"
    assert tiers[1].candidates[0] == preferred(key, hinted)  # first in its own tier


def test_the_choice_stays_in_this_nodes_region_while_the_region_has_replicas() -> None:
    here = Locality(ME, region="eu")
    pool = [replica(f"eu{i}", region="eu") for i in range(2)]
    pool += [replica(f"us{i}", region="us") for i in range(4)]
    chosen = {first(pool, RouteRequest("chat", affinity=key), here=here) for key in KEYS[:200]}
    assert chosen == {"eu0", "eu1"}
    # No replica in the region: the key chooses among all.
    away = [c for c in pool if c.region == "us"]
    assert {first(away, RouteRequest("chat", affinity=key), here=here) for key in KEYS[:200]} == {
        c.name for c in away
    }


SYSTEM = {"role": "system", "content": "You are terse."}
FIRST = {"role": "user", "content": "Name a prime."}


def test_every_turn_of_a_conversation_has_the_key_of_its_first() -> None:
    turn_one = [SYSTEM, FIRST]
    turn_two = [*turn_one, {"role": "assistant", "content": "7"}, {"role": "user", "content": "Another?"}]
    key = conversation_key(None, turn_one)
    assert key is not None and key == conversation_key(None, turn_two)
    assert len(key) <= MAX_KEY_CHARS
    assert conversation_key(None, [SYSTEM, {"role": "user", "content": "Name a fish."}]) != key
    assert conversation_key(None, [{"role": "system", "content": "Be verbose."}, FIRST]) != key
    assert conversation_key(None, [FIRST]) != key
    assert conversation_key(None, []) is None


@pytest.mark.parametrize("user", ["alice", "x" * 10_000])
def test_a_user_names_the_conversation_and_stays_bounded(user: str) -> None:
    key = conversation_key(user, [SYSTEM, FIRST])
    assert key is not None and len(key) <= MAX_KEY_CHARS
    assert key == conversation_key(user, [FIRST])  # the user decides, not the messages
    assert key != conversation_key(user + "!", [SYSTEM, FIRST])


def test_structured_content_keys_too() -> None:
    parts = {"role": "user", "content": [{"type": "text", "text": "hi"}]}
    key = conversation_key(None, [parts])
    assert key is not None and key == conversation_key(None, [parts, {"role": "assistant", "content": "yo"}])
