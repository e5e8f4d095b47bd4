"""Rotation steps, the ring kept on disk, and the ring gossip carries (trust/rotation.py)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from meshnode.errors import ConfigError
from meshnode.mesh.admission import Admission
from meshnode.mesh.effects import KeyringChanged
from meshnode.mesh.keyring_record import MAX_RING_TOKENS, KeyringRecord, check_ring
from meshnode.mesh.records import COUNTER_BITS
from meshnode.mesh.shared_tables import SharedTables
from meshnode.mesh.types import NodeId
from meshnode.trust.keyring import key_id
from meshnode.trust.rotation import load_ring, next_ring, ring_at_start, save_ring

OLD = "the old token of the mesh, 32 chars+"
NEW = "the new token of the mesh, 32 chars+"
WALL_MS = 1_800_000_000_000


def kid(token: str) -> str:
    return key_id(token).hex()


def test_the_three_steps_of_a_rotation() -> None:
    installed = next_ring((OLD,), "install", token=NEW, key=None)
    assert installed == (OLD, NEW)  # the old one still seals
    used = next_ring(installed, "use", token=None, key=kid(NEW))
    assert used == (NEW, OLD)
    assert next_ring(used, "remove", token=None, key=kid(OLD)) == (NEW,)
    assert next_ring(installed, "install", token=NEW, key=None) == installed  # again: no change


@pytest.mark.parametrize(
    ("ring", "op", "token", "key", "reason"),
    [
        ((OLD,), "remove", None, kid(OLD), "primary"),
        ((OLD, NEW), "remove", None, "00000000", "no token"),
        ((OLD,), "use", None, kid(NEW), "no token"),
        ((OLD,), "install", None, None, "needs the new token"),
        ((OLD,), "install", "short", None, "characters"),
        ((OLD,), "rotate", None, None, "install, use or remove"),
        (tuple(f"{i:040d}" for i in range(MAX_RING_TOKENS)), "install", NEW, None, "1 to"),
    ],
)
def test_a_wrong_step_says_why_and_never_shows_a_token(
    ring: tuple[str, ...], op: str, token: str | None, key: str | None, reason: str
) -> None:
    with pytest.raises(ValueError, match=reason) as refused:
        next_ring(ring, op, token=token, key=key)
    assert OLD not in str(refused.value) and NEW not in str(refused.value)


def test_the_ring_kept_on_disk_comes_back_and_only_its_user_reads_it(tmp_path: Path) -> None:
    record = KeyringRecord((NEW, OLD), 5 << COUNTER_BITS, NodeId("n1"))
    assert load_ring(tmp_path) is None
    save_ring(tmp_path, record)
    assert load_ring(tmp_path) == record
    assert stat.S_IMODE((tmp_path / "keyring").stat().st_mode) == 0o600
    (tmp_path / "keyring").write_text("{not json")
    assert load_ring(tmp_path) is None  # unusable: ignored with a warning, the token decides


def test_at_start_the_kept_ring_wins_over_a_stale_configured_token() -> None:
    kept = KeyringRecord((NEW,), 1, NodeId("n1"))
    assert ring_at_start(OLD, None) == (OLD,)
    assert ring_at_start(NEW, kept) == (NEW,)
    assert ring_at_start(OLD, kept) == (NEW, OLD)  # sealed with the new one; the old still opens
    full = KeyringRecord(tuple(f"{i:040d}" for i in range(MAX_RING_TOKENS)), 1, NodeId("n1"))
    with pytest.raises(ConfigError):
        ring_at_start(OLD, full)


@pytest.mark.parametrize(
    "tokens", [[], [OLD, OLD], ["x" * 31], [" " + OLD], [OLD, 5], "not a list", [OLD] * 9]
)
def test_a_ring_off_the_wire_is_checked(tokens: object) -> None:
    with pytest.raises(ValueError):
        check_ring(tokens)


def test_the_newest_ring_wins_and_one_stamped_far_ahead_is_refused() -> None:
    pushed: list[object] = []
    tables = SharedTables(NodeId("n1"), Admission(NodeId("n1"), 300.0), pushed.append)
    [changed] = tables.write_keyring((OLD, NEW), WALL_MS)
    assert isinstance(changed, KeyringChanged) and tables.keyring == changed.record
    older = KeyringRecord((OLD,), changed.record.stamp - 1, NodeId("n2"))
    assert tables.merge_keyring(older, WALL_MS) == []
    future = KeyringRecord((NEW,), (WALL_MS + 301_000) << COUNTER_BITS, NodeId("n2"))
    assert tables.merge_keyring(future, WALL_MS) == []
    assert tables.refused["stamp_ahead"] == 1
    newer = KeyringRecord((NEW,), changed.record.stamp + 1, NodeId("n2"))
    assert tables.merge_keyring(newer, WALL_MS) == [KeyringChanged(newer)]
    assert pushed == [changed.record, newer]
    assert OLD not in repr(newer)
