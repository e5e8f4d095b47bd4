"""ModelStore on real folders: add hashes what it copies, a model appears whole, bad sources are refused."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from meshnode.mesh.model_manifest import MANIFEST_FILE, MIN_CHUNK_BYTES, Manifest, short
from meshnode.models.hashing import SourceError
from meshnode.models.store import ModelStore

SMALL = MIN_CHUNK_BYTES


def write(root: Path, files: dict[str, bytes]) -> Path:
    for path, data in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root


FILES = {
    "model_index.json": b'{"name": "tiny"}',
    "unet/diffusion_pytorch_model.bin": bytes(range(256)) * 40,  # 10240 bytes: 3 chunks of 4096
    "empty": b"",
}


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    store = ModelStore(tmp_path / "data" / "model-store")
    store.scan()
    return store


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write(tmp_path / "src", FILES)


def test_add_copies_every_file_and_hashes_it(store: ModelStore, source: Path) -> None:
    model = store.add("tiny", source, chunk_bytes=SMALL)
    assert model.path == store.folder / "tiny"
    for path, data in FILES.items():
        assert (model.path / path).read_bytes() == data
    weights = model.manifest.files[2]
    assert weights.path == "unet/diffusion_pytorch_model.bin"
    assert weights.sha256 == hashlib.sha256(FILES[weights.path]).hexdigest()
    assert len(weights.chunks) == 3
    assert model.total_bytes == sum(len(data) for data in FILES.values())
    assert model.file_count == 3
    assert store.held() == {"tiny": model.digest}
    assert store.gossip() == {"tiny": {"digest": short(model.digest), "bytes": model.total_bytes}}
    # The source is untouched and the manifest sits beside the files.
    assert sorted(p.name for p in source.iterdir()) == ["empty", "model_index.json", "unet"]
    on_disk = Manifest.from_wire(json.loads((model.path / MANIFEST_FILE).read_text()))
    assert on_disk.digest == model.digest


def test_a_fresh_store_reads_what_another_added(store: ModelStore, source: Path) -> None:
    model = store.add("tiny", source, chunk_bytes=SMALL)
    again = ModelStore(store.folder)
    assert again.scan() == {"tiny": model}
    assert again.get("tiny") == model
    assert again.by_digest(model.digest) == model
    assert again.by_digest("0" * 64) is None
    assert again.get("other") is None


def test_same_content_has_the_same_digest_under_any_name_or_folder(
    store: ModelStore, source: Path, tmp_path: Path
) -> None:
    copy = shutil.copytree(source, tmp_path / "elsewhere")
    os.utime(copy / "empty", (1, 1))
    one = store.add("one", source, chunk_bytes=SMALL)
    two = store.add("two", copy, chunk_bytes=SMALL)
    assert one.digest == two.digest


def test_adding_another_content_under_a_name_replaces_it(store: ModelStore, source: Path) -> None:
    first = store.add("tiny", source, chunk_bytes=SMALL)
    (source / "model_index.json").write_bytes(b'{"name": "changed"}')
    second = store.add("tiny", source, chunk_bytes=SMALL)
    assert second.digest != first.digest
    assert (store.folder / "tiny" / "model_index.json").read_bytes() == b'{"name": "changed"}'
    assert store.held() == {"tiny": second.digest}
    assert store.by_digest(first.digest) is None
    # Nothing left behind from the build or the old copy.
    assert not any((store.folder / ".tmp").iterdir())


def test_adding_the_same_content_again_keeps_the_model(store: ModelStore, source: Path) -> None:
    first = store.add("tiny", source, chunk_bytes=SMALL)
    assert store.add("tiny", source, chunk_bytes=SMALL) == first


def test_link_hard_links_instead_of_copying(store: ModelStore, source: Path) -> None:
    model = store.add("tiny", source, link=True, chunk_bytes=SMALL)
    linked = model.path / "unet/diffusion_pytorch_model.bin"
    assert linked.stat().st_ino == (source / "unet/diffusion_pytorch_model.bin").stat().st_ino
    assert store.add("copy", source, chunk_bytes=SMALL).digest == model.digest


def test_remove_deletes_the_folder(store: ModelStore, source: Path) -> None:
    store.add("tiny", source, chunk_bytes=SMALL)
    assert store.remove("tiny") is True
    assert not (store.folder / "tiny").exists()
    assert store.held() == {}
    assert store.remove("tiny") is False


def test_scan_skips_folders_that_are_not_whole_models(store: ModelStore, source: Path) -> None:
    model = store.add("tiny", source, chunk_bytes=SMALL)
    write(store.folder / "no-manifest", {"a": b"x"})
    shutil.copytree(model.path, store.folder / "truncated")
    (store.folder / "truncated" / "model_index.json").write_bytes(b"{}")
    shutil.copytree(model.path, store.folder / "bad name!")
    write(store.folder / "garbage", {MANIFEST_FILE: b"not json"})
    write(store.folder / "evil", {MANIFEST_FILE: json.dumps({"format": 1, "chunk_bytes": SMALL, "files": [
        {"path": "../../etc/passwd", "size": 0, "sha256": "0" * 64, "chunks": []}
    ]}).encode()})  # fmt: skip
    (store.folder / "a-file").write_bytes(b"x")
    assert set(store.scan()) == {"tiny"}
    assert set(store.skipped) == {"no-manifest", "truncated", "bad name!", "garbage", "evil", "a-file"}
    assert "has 2 bytes, not 16" in store.skipped["truncated"]
    assert "meshnode models add" in store.skipped["no-manifest"]


def test_scan_clears_what_dead_adds_left_and_keeps_live_ones(store: ModelStore) -> None:
    temp = store.folder / ".tmp"
    dead = write(temp / "add-x-999999999-abcd", {"a": b"x"})
    live = write(temp / f"add-y-{os.getpid()}-abcd", {"a": b"x"})
    store.scan()
    assert not dead.exists()
    assert live.exists()


@pytest.mark.parametrize("name", ["", ".partial", "../x", "a/b", "x" * 65, "-x"])
def test_bad_names_are_refused(store: ModelStore, source: Path, name: str) -> None:
    with pytest.raises(ValueError, match="model name"):
        store.add(name, source)
    with pytest.raises(ValueError, match="model name"):
        store.remove(name)
    assert not any(store.folder.iterdir())


def test_a_link_outside_the_source_is_refused(store: ModelStore, source: Path, tmp_path: Path) -> None:
    secret = write(tmp_path / "private", {"key": b"secret"})
    (source / "leak").symlink_to(secret / "key")
    with pytest.raises(SourceError, match="links outside"):
        store.add("tiny", source)
    (source / "leak").unlink()
    (source / "leakdir").symlink_to(secret)
    with pytest.raises(SourceError, match="links outside"):
        store.add("tiny", source)
    assert store.held() == {}


def test_links_inside_the_source_are_followed(store: ModelStore, source: Path) -> None:
    (source / "alias.json").symlink_to(source / "model_index.json")
    (source / "weights").symlink_to("unet")
    model = store.add("tiny", source, chunk_bytes=SMALL)
    paths = [item.path for item in model.manifest.files]
    assert paths == [
        "alias.json",
        "empty",
        "model_index.json",
        "unet/diffusion_pytorch_model.bin",
        "weights/diffusion_pytorch_model.bin",
    ]
    assert not (model.path / "alias.json").is_symlink()
    assert (model.path / "alias.json").read_bytes() == FILES["model_index.json"]
    assert (model.path / "weights" / "diffusion_pytorch_model.bin").is_file()


def test_a_link_loop_and_a_broken_link_are_refused(store: ModelStore, source: Path) -> None:
    (source / "unet" / "loop").symlink_to(source)
    with pytest.raises(SourceError, match="a loop"):
        store.add("tiny", source)
    (source / "unet" / "loop").unlink()
    # Two folders linking to each other: no link points to its own parent, yet walking loops.
    (source / "other").mkdir()
    (source / "unet" / "to-other").symlink_to(source / "other")
    (source / "other" / "to-unet").symlink_to(source / "unet")
    with pytest.raises(SourceError, match="a loop"):
        store.add("tiny", source)
    shutil.rmtree(source / "other")
    (source / "unet" / "to-other").unlink()
    (source / "broken").symlink_to(source / "nowhere")
    with pytest.raises(SourceError, match="broken link"):
        store.add("tiny", source)


def test_special_files_and_missing_sources_are_refused(
    store: ModelStore, source: Path, tmp_path: Path
) -> None:
    with pytest.raises(SourceError, match="not a folder"):
        store.add("tiny", tmp_path / "missing")
    with pytest.raises(SourceError, match="not a folder"):
        store.add("tiny", source / "model_index.json")
    os.mkfifo(source / "fifo")
    with pytest.raises(SourceError, match="not a regular file"):
        store.add("tiny", source)
    os.unlink(source / "fifo")
    # A socket's path must be short (108 bytes): pytest's tmp_path can be longer.
    short_dir = Path(tempfile.mkdtemp(prefix="mn-", dir="/tmp"))
    try:
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(short_dir / "sock"))
            with pytest.raises(SourceError, match="not a regular file"):
                store.add("tiny", short_dir)
    finally:
        shutil.rmtree(short_dir)


def test_the_store_itself_cannot_be_added(store: ModelStore, source: Path) -> None:
    model = store.add("tiny", source, chunk_bytes=SMALL)
    with pytest.raises(SourceError, match="inside the store"):
        store.add("again", model.path)
    with pytest.raises(SourceError, match="inside the store"):
        store.add("again", store.folder)


def test_a_model_folder_from_another_store_is_added_without_its_manifest(
    store: ModelStore, source: Path, tmp_path: Path
) -> None:
    model = store.add("tiny", source, chunk_bytes=SMALL)
    exported = shutil.copytree(model.path, tmp_path / "exported")
    assert store.add("again", exported, chunk_bytes=SMALL).digest == model.digest


def test_open_chunk_reads_one_chunk_and_checks_its_bounds(store: ModelStore, source: Path) -> None:
    model = store.add("tiny", source, chunk_bytes=SMALL)
    data = FILES["unet/diffusion_pytorch_model.bin"]
    assert store.open_chunk(model.digest, 2, 0) == data[:SMALL]
    assert store.open_chunk(model.digest, 2, 2) == data[2 * SMALL :]
    for chunk in model.manifest.chunks():
        piece = store.open_chunk(model.digest, chunk.file_index, chunk.chunk_index)
        assert hashlib.sha256(piece).hexdigest() == chunk.sha256
    with pytest.raises(KeyError):
        store.open_chunk("0" * 64, 0, 0)
    for file_index, chunk_index in ((0, 0), (3, 0), (-1, 0), (2, 3), (1, -1)):
        with pytest.raises(IndexError):
            store.open_chunk(model.digest, file_index, chunk_index)
    # A piece of a chunk (what a paced chunk server reads), never beyond the chunk.
    assert store.open_chunk(model.digest, 2, 1, 10, 20) == data[SMALL + 10 : SMALL + 30]
    assert store.open_chunk(model.digest, 2, 1, SMALL - 5) == data[2 * SMALL - 5 : 2 * SMALL]
    for start, length in ((-1, 4), (0, SMALL + 1), (SMALL, 1), (5, -1)):
        with pytest.raises(IndexError):
            store.open_chunk(model.digest, 2, 1, start, length)


def test_install_checks_the_pulled_files_and_holds_them(store: ModelStore, source: Path) -> None:
    model = store.add("tiny", source, chunk_bytes=SMALL)
    partial = store.partial_dir(model.digest)
    assert partial == store.folder / ".partial" / model.digest
    write(partial, {**FILES, ".pull-state.json": b"{}", "stray/file": b"x"})
    installed = store.install("copy", model.manifest, partial)
    assert installed.digest == model.digest
    assert installed.path == store.folder / "copy"
    assert not partial.exists()
    assert sorted(p.name for p in installed.path.iterdir()) == [
        MANIFEST_FILE,
        "empty",
        "model_index.json",
        "unet",
    ]
    assert ModelStore(store.folder).scan()["copy"] == installed


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_index.json": b'{"name": "tinY"}'}, "does not match its sha256"),
        ({"model_index.json": b"short"}, "has 5 bytes"),
    ],
)
def test_install_refuses_files_that_do_not_match(
    store: ModelStore, source: Path, change: dict[str, bytes], message: str
) -> None:
    model = store.add("tiny", source, chunk_bytes=SMALL)
    partial = write(store.partial_dir(model.digest), {**FILES, **change})
    with pytest.raises(ValueError, match=message):
        store.install("copy", model.manifest, partial)
    assert store.get("copy") is None
    assert not (store.folder / "copy").exists()


def test_install_after_a_pull_checks_presence_and_sizes_not_hashes_again(
    store: ModelStore, source: Path
) -> None:
    model = store.add("tiny", source, chunk_bytes=SMALL)
    short = write(store.partial_dir(model.digest), {**FILES, "model_index.json": b"short"})
    with pytest.raises(ValueError, match="has 5 bytes"):
        store.install("copy", model.manifest, short, chunks_checked=True)
    # Same sizes, other bytes: a pull never gets here (each chunk was hashed as it was written),
    # so what the caller vouches for is taken without reading every byte a second time.
    same_size = {**FILES, "model_index.json": FILES["model_index.json"].upper()}
    partial = write(store.partial_dir(model.digest), same_size)
    assert store.install("copy", model.manifest, partial, chunks_checked=True).digest == model.digest


def test_install_refuses_a_missing_file_and_a_folder_outside_the_store(
    store: ModelStore, source: Path, tmp_path: Path
) -> None:
    model = store.add("tiny", source, chunk_bytes=SMALL)
    partial = write(store.partial_dir(model.digest), {"model_index.json": FILES["model_index.json"]})
    with pytest.raises(ValueError, match="missing"):
        store.install("copy", model.manifest, partial)
    with pytest.raises(ValueError, match="not a folder inside the model store"):
        store.install("copy", model.manifest, source)
    with pytest.raises(ValueError, match="digest"):
        store.partial_dir("../../etc")
