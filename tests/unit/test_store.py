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
from meshnode.store import DB_FILENAME, SCHEMA_VERSION, Identity, NodeStore, StoreError


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


# -- a file that is there but cannot be this node's state stops the start; nothing is lost silently --


def refused(tmp_path: Path, match: str) -> str:
    """Open the store on `tmp_path` expecting a refusal; the message, checked to say what to do."""
    path = tmp_path / DB_FILENAME
    before = path.read_bytes()
    with pytest.raises(StoreError, match=match) as caught:
        NodeStore(tmp_path)
    message = caught.value.message
    assert str(path) in message and "move the file aside" in message, message
    assert path.read_bytes() == before, "the refused file was changed"
    return message


def saved_node(tmp_path: Path) -> Identity:
    """A data dir with an identity and one deployment, as a node that ran leaves it."""
    store = NodeStore(tmp_path)
    identity = store.load_identity()
    store.save_record(Record("echo", 1, NodeId("a"), DeploymentSpec("a.py:A")))
    store.close()
    return identity


def test_a_zero_length_file_is_refused_not_taken_for_a_new_node(tmp_path: Path) -> None:
    (tmp_path / DB_FILENAME).write_bytes(b"")
    refused(tmp_path, "is empty")


def test_garbage_bytes_are_refused(tmp_path: Path) -> None:
    (tmp_path / DB_FILENAME).write_bytes(bytes(range(256)) * 40)
    refused(tmp_path, "unreadable")


def test_a_truncated_file_is_refused(tmp_path: Path) -> None:
    saved_node(tmp_path)
    path = tmp_path / DB_FILENAME
    path.write_bytes(path.read_bytes()[:5000])  # past the header, short of its pages
    refused(tmp_path, "unreadable|damaged")


def test_a_file_from_a_newer_schema_is_refused_and_says_so(tmp_path: Path) -> None:
    saved_node(tmp_path)
    with sqlite3.connect(tmp_path / DB_FILENAME) as db:
        db.execute(f"pragma user_version = {SCHEMA_VERSION + 1}")
    db.close()
    message = refused(tmp_path, "newer meshnode")
    assert "run the meshnode that wrote it" in message


def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / DB_FILENAME) as db:
        db.execute("create table photos (id integer primary key, path text)")
    db.close()
    refused(tmp_path, "no node identity")


def test_an_identity_table_of_another_layout_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / DB_FILENAME) as db:
        db.execute("create table identity (id integer primary key, name text)")
    db.close()
    refused(tmp_path, "without incarnation, node_id")


def test_a_new_data_dir_and_an_interrupted_first_start_are_new_nodes(tmp_path: Path) -> None:
    for _ in range(2):  # the second open finds the empty tables the first one made
        store = NodeStore(tmp_path)
        store.close()
    store = NodeStore(tmp_path)
    try:
        assert store.load_identity().incarnation == 0
    finally:
        store.close()


def test_a_file_from_before_schema_versions_opens_and_is_marked(tmp_path: Path) -> None:
    identity = saved_node(tmp_path)
    with sqlite3.connect(tmp_path / DB_FILENAME) as db:
        db.execute("pragma user_version = 0")
    db.close()
    store = NodeStore(tmp_path)
    try:
        assert store.load_identity() == Identity(identity.node_id, 1)
        assert [record.name for record in store.load_records()] == ["echo"]
    finally:
        store.close()
    with sqlite3.connect(tmp_path / DB_FILENAME) as db:
        assert db.execute("pragma user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()
