"""Gossip packets sealed and opened with the mesh's keys (node/trust/keyring.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.trust.keyring import SEAL_OVERHEAD_BYTES, Keyring, SealError, key_id

OLD = "the old token of this mesh, 32+ characters"
NEW = "the new token of this mesh, 32+ characters"
PACKET = b"\x95\x01\xa7default" + bytes(range(200))


def test_a_sealed_packet_opens_with_the_same_token_and_mesh_and_hides_its_bytes() -> None:
    ring = Keyring([OLD], "default")
    sealed = ring.seal(PACKET)
    assert len(sealed) == len(PACKET) + SEAL_OVERHEAD_BYTES
    assert PACKET[20:60] not in sealed
    assert Keyring([OLD], "default").open(sealed) == PACKET
    assert ring.seal(PACKET) != sealed  # a fresh nonce every time


@pytest.mark.parametrize(
    ("ring", "reason"),
    [
        (Keyring([NEW], "default"), "unknown_key"),  # another token
        (Keyring([OLD], "other-mesh"), "forged"),  # same token, another mesh id
    ],
)
def test_a_packet_of_another_mesh_does_not_open(ring: Keyring, reason: str) -> None:
    with pytest.raises(SealError) as refused:
        ring.open(Keyring([OLD], "default").seal(PACKET))
    assert refused.value.reason == reason


def test_every_flipped_bit_is_detected() -> None:
    ring = Keyring([OLD], "default")
    sealed = ring.seal(PACKET)
    for index in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[index] ^= 0x01
        with pytest.raises(SealError):
            ring.open(bytes(tampered))


@given(st.binary(max_size=300))
def test_bytes_from_a_non_member_never_open(data: bytes) -> None:
    with pytest.raises(SealError):
        Keyring([OLD], "default").open(data)


def test_a_plain_unsealed_packet_is_refused_as_unsealed() -> None:
    with pytest.raises(SealError) as refused:
        Keyring([OLD], "default").open(PACKET)
    assert refused.value.reason in ("unsealed", "unknown_key")
    with pytest.raises(SealError) as short:
        Keyring([OLD], "default").open(b"\x01abc")
    assert short.value.reason == "unsealed"


def test_during_a_rotation_both_keys_open_and_the_primary_seals() -> None:
    old_only, both_old_first, both_new_first, new_only = (
        Keyring([OLD], "m"),
        Keyring([OLD, NEW], "m"),
        Keyring([NEW, OLD], "m"),
        Keyring([NEW], "m"),
    )
    # Step 1 (new installed, old still primary) and step 2 (new primary) can talk to each other and
    # to the nodes one step behind or ahead, so no node is cut off while the change spreads.
    for sender, receivers in (
        (old_only, [both_old_first, both_new_first]),
        (both_old_first, [old_only, both_new_first]),
        (both_new_first, [both_old_first, new_only]),
        (new_only, [both_new_first]),
    ):
        for receiver in receivers:
            assert receiver.open(sender.seal(PACKET)) == PACKET
    assert both_new_first.key_ids == [key_id(NEW).hex(), key_id(OLD).hex()]
    with pytest.raises(SealError):
        new_only.open(old_only.seal(PACKET))


def test_a_keyring_holds_one_to_eight_keys() -> None:
    with pytest.raises(ValueError, match="1 to 8"):
        Keyring([], "m")
    with pytest.raises(ValueError, match="1 to 8"):
        Keyring([f"{i:040d}" for i in range(9)], "m")
