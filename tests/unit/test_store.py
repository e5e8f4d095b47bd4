"""NodeStore: a stable node id and an incarnation that only ever goes up across restarts."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from meshnode.mesh.access import ApiKey, Scope
from meshnode.mesh.bounds import MAX_INCARNATION, MAX_STAMP
from meshnode.mesh.deployment import DeploymentSpec
from meshnode.mesh.records import Record
from meshnode.mesh.types import NodeId
from meshnode.store import DB_FILENAME, Identity, NodeStore, StoreError


def test_first_load_creates_directory_id_and_incarnation_zero(tmp_path: Path) -> None:
    data_dir = tmp_path / "a" / "b"
    store = NodeStore(data_dir)
    try:
        identity = store.load_identity()
    finally:
        store.close()
    assert (data_dir / DB_FILENAME).is_file()
    assert identity.incarnation == 0
    assert len(identity.node_id) == 32 and int(identity.node_id, 16) >= 0


def test_every_restart_comes_back_higher_with_the_same_id(tmp_path: Path) -> None:
    seen: list[Identity] = []
    for _ in range(3):
        store = NodeStore(tmp_path)
        seen.append(store.load_identity())
        store.close()
    assert len({identity.node_id for identity in seen}) == 1
    assert [identity.incarnation for identity in seen] == [0, 1, 2]


def test_saved_incarnation_is_the_floor_for_the_next_start(tmp_path: Path) -> None:
    store = NodeStore(tmp_path)
    first = store.load_identity()
    store.save_incarnation(7)
    store.save_incarnation(3)  # lower: ignored
    store.close()
    store = NodeStore(tmp_path)
    try:
        assert store.load_identity() == Identity(first.node_id, 8)
    finally:
        store.close()


def test_two_stores_on_one_directory_never_share_an_incarnation(tmp_path: Path) -> None:
    first, second = NodeStore(tmp_path), NodeStore(tmp_path)
    try:
        numbers = [store.load_identity().incarnation for store in (first, second, first, second)]
    finally:
        first.close()
        second.close()
    assert numbers == [0, 1, 2, 3]


def test_save_before_load_is_an_error(tmp_path: Path) -> None:
    store = NodeStore(tmp_path)
    try:
        with pytest.raises(StoreError, match="load_identity"):
            store.save_incarnation(1)
    finally:
        store.close()


def test_corrupt_file_raises_a_clear_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / DB_FILENAME
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=str(path)):
        NodeStore(tmp_path)


def test_data_dir_that_is_a_file_raises_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="data directory"):
        NodeStore(blocker)


def test_deployment_records_and_tombstones_survive_a_reopen(tmp_path: Path) -> None:
    spec = DeploymentSpec("apps/echo.py:Echo", min_replicas=2, max_replicas=3, spread="zone")
    newer = replace(spec, min_replicas=1, max_replicas=1)
    store = NodeStore(tmp_path)
    store.save_record(Record("echo", 7 << 16, NodeId("a"), spec))
    store.save_record(Record("gone", 5 << 16, NodeId("b"), None))
    store.save_record(Record("echo", 9 << 16, NodeId("b"), newer))  # newer wins the row
    store.close()
    store = NodeStore(tmp_path)
    try:
        assert store.load_records() == [
            Record("echo", 9 << 16, NodeId("b"), newer),
            Record("gone", 5 << 16, NodeId("b"), None),
        ]
        store.forget_records(["gone"])
        assert [r.name for r in store.load_records()] == ["echo"]
    finally:
        store.close()


def test_a_saved_deployment_that_no_longer_validates_is_skipped_not_fatal(tmp_path: Path) -> None:
    store = NodeStore(tmp_path)
    store.save_record(Record("echo", 1, NodeId("a"), DeploymentSpec("a.py:A")))
    store.close()
    db = sqlite3.connect(tmp_path / DB_FILENAME)
    with db:
        db.execute("""insert into deployments values ('bad', 2, 'a', '{"app": ""}')""")
    db.close()
    store = NodeStore(tmp_path)
    try:
        assert [r.name for r in store.load_records()] == ["echo"]
    finally:
        store.close()


# -- bounds (mesh/bounds.py): every value the wire accepts is stored; nothing else ever is --------


def test_the_maximum_incarnation_round_trips_and_a_restart_there_keeps_it(tmp_path: Path) -> None:
    store = NodeStore(tmp_path)
    first = store.load_identity()
    store.save_incarnation(MAX_INCARNATION)
    store.close()
    store = NodeStore(tmp_path)
    try:
        # One more would be past what any peer decodes: the restart keeps the maximum.
        assert store.load_identity() == Identity(first.node_id, MAX_INCARNATION)
    finally:
        store.close()


@pytest.mark.parametrize("value", [MAX_INCARNATION + 1, 2**64 - 1, -1, True])
def test_an_incarnation_past_the_maximum_is_refused_before_any_write(tmp_path: Path, value: int) -> None:
    store = NodeStore(tmp_path)
    try:
        store.load_identity()
        store.save_incarnation(12)
        with pytest.raises(StoreError, match="outside"):
            store.save_incarnation(value)
    finally:
        store.close()
    store = NodeStore(tmp_path)
    try:
        assert store.load_identity().incarnation == 13
    finally:
        store.close()


def test_a_record_stamped_at_the_maximum_round_trips(tmp_path: Path) -> None:
    record = Record("echo", MAX_STAMP, NodeId("a"), DeploymentSpec("a.py:A"))
    store = NodeStore(tmp_path)
    store.save_record(record)
    store.close()
    store = NodeStore(tmp_path)
    try:
        assert store.load_records() == [record]
    finally:
        store.close()


@pytest.mark.parametrize("stamp", [MAX_STAMP + 1, 2**64 - 1, -1])
def test_a_record_stamped_past_the_maximum_is_refused_before_any_write(tmp_path: Path, stamp: int) -> None:
    held = Record("echo", 5 << 16, NodeId("a"), None)
    store = NodeStore(tmp_path)
    try:
        store.save_record(held)
        with pytest.raises(StoreError, match="outside"):
            store.save_record(Record("echo", stamp, NodeId("b"), DeploymentSpec("a.py:A")))
        assert store.load_records() == [held]
    finally:
        store.close()


def test_a_saved_row_outside_the_bounds_is_skipped_and_an_identity_outside_them_is_an_error(
    tmp_path: Path,
) -> None:
    store = NodeStore(tmp_path)
    store.load_identity()
    store.close()
    db = sqlite3.connect(tmp_path / DB_FILENAME)
    with db:  # as only a hand edit could leave them
        db.execute("insert into deployments values ('negative', -1, 'a', null)")
        db.execute("update identity set incarnation = -5")
    db.close()
    store = NodeStore(tmp_path)
    try:
        assert store.load_records() == []
        with pytest.raises(StoreError, match="outside"):
            store.load_identity()
    finally:
        store.close()


def test_api_keys_and_revocations_survive_a_reopen_and_bad_rows_are_skipped(tmp_path: Path) -> None:
    active = ApiKey("0123456789ab", "ci", Scope.INVOKE, bytes(range(32)), 1_800_000_000_000)
    gone = ApiKey("ba9876543210", "", Scope.ADMIN, bytes(32), 1_800_000_000_001, revoked=True)
    store = NodeStore(tmp_path)
    assert store.load_keys() == []
    store.save_key(active)
    store.save_key(gone)
    store.save_key(replace(active, name="renamed"))  # one row per id
    store.close()
    with sqlite3.connect(tmp_path / DB_FILENAME) as db:
        db.execute("insert into api_keys values ('zzzz', 'x', 'root', '00', 1, 0)")
    reopened = NodeStore(tmp_path)
    assert reopened.load_keys() == [replace(active, name="renamed"), gone]
    reopened.close()
