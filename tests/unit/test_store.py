"""NodeStore: a stable node id and an incarnation that only ever goes up across restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

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
