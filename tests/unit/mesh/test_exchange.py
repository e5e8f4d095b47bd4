"""A full state in parts: every row once, in order, each part under the bound, the flags on the first."""

from __future__ import annotations

import random

import pytest

from meshnode.mesh.access import ApiKey, Scope
from meshnode.mesh.exchange import push_pull_parts
from meshnode.mesh.keyring_record import KeyringRecord
from meshnode.mesh.metadata import NodeMeta
from meshnode.mesh.records import Record
from meshnode.mesh.types import Address, NodeId, Status
from meshnode.mesh.wire import MemberState, Packet, PushPull, decode, encode, encoded_size

SENDER = NodeId("sender")
RING = KeyringRecord(("a" * 32, "b" * 43), 7 << 16, SENDER)


def state(index: int, hints: int) -> MemberState:
    meta = NodeMeta(
        name=f"n{index}", hints=tuple(f"hint-{index}-{i:03d}".ljust(32, "x") for i in range(hints))
    )
    addr = Address(f"10.0.{index // 250}.{index % 250}:8471")
    return MemberState(NodeId(f"node-{index:05d}"), addr, index % 3, Status.ALIVE, index, meta)


def key(index: int) -> ApiKey:
    return ApiKey(f"{index:012x}", f"key {index}", Scope.INVOKE, bytes(32), 1_700_000_000_000 + index)


def whole_state(rng: random.Random, members: int, records: int, keys: int) -> PushPull:
    states = tuple(state(i, rng.choice((0, 5, 60))) for i in range(members))
    tombstones = tuple(Record(f"deployment-{i}", i + 1, SENDER, None) for i in range(records))
    return PushPull(True, True, states, tombstones, tuple(key(i) for i in range(keys)), RING)


def test_a_state_that_fits_goes_whole() -> None:
    whole = whole_state(random.Random(1), 10, 3, 2)
    assert push_pull_parts(whole, encoded_size(whole)) == [whole]


@pytest.mark.parametrize("seed", range(12))
def test_parts_hold_every_row_once_in_order_each_under_the_bound(seed: int) -> None:
    rng = random.Random(seed)
    whole = whole_state(rng, rng.randrange(1, 300), rng.randrange(0, 40), rng.randrange(0, 12))
    bound = rng.choice((4_000, 20_000, 100_000))
    parts = push_pull_parts(whole, bound)
    assert len(parts) > 1 or encoded_size(whole) <= bound
    assert [row for part in parts for row in part.states] == list(whole.states)
    assert [row for part in parts for row in part.records] == list(whole.records)
    assert [row for part in parts for row in part.keys] == list(whole.keys)
    for part in parts:
        # What the receiver decodes is the part, within its limit: the sizes are the wire's own.
        packet = encode_packet(part)
        assert len(packet) <= bound + 200, (seed, len(packet), bound)
        assert encoded_size(part) <= bound or len(part.states) + len(part.records) + len(part.keys) == 1
    first, rest = parts[0], parts[1:]
    assert (first.reply_wanted, first.join, first.keyring) == (True, True, RING)
    assert all(not part.reply_wanted and not part.join and part.keyring is None for part in rest)


def test_a_row_larger_than_the_bound_goes_alone() -> None:
    big, small = state(1, 200), state(2, 0)
    whole = PushPull(False, False, (small, big, small))
    bound = encoded_size(PushPull(False, False, (big,))) - 1
    parts = push_pull_parts(whole, bound)
    assert [part.states for part in parts] == [(small,), (big,), (small,)]


def encode_packet(part: PushPull) -> bytes:
    """The part in a packet, as sent; it decodes to itself."""
    data = encode(Packet(SENDER, Address("10.9.9.9:8471"), (part,)), "mesh")
    assert decode(data, "mesh", max_bytes=len(data), max_members=20_000).messages == (part,)
    return data
