"""Model manifests: a stable content hash, and nothing malformed or out of bounds from a peer."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import msgpack
import pytest

from meshnode.mesh.model_manifest import (
    CHUNK_BYTES,
    MANIFEST_FILE,
    MAX_CHUNK_BYTES,
    MAX_CHUNKS,
    MAX_FILE_BYTES,
    MAX_FILES,
    MAX_PATH_CHARS,
    MIN_CHUNK_BYTES,
    Chunk,
    Manifest,
    ManifestError,
    ModelFile,
    check_name,
    is_digest,
    is_short,
    short,
)

SMALL = MIN_CHUNK_BYTES


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_file(path: str, data: bytes, chunk_bytes: int = SMALL) -> ModelFile:
    pieces = [data[i : i + chunk_bytes] for i in range(0, len(data), chunk_bytes)]
    return ModelFile(path, len(data), sha(data), tuple(sha(piece) for piece in pieces))


def sample() -> Manifest:
    return Manifest.create(
        [
            model_file("unet/weights.bin", b"w" * (2 * SMALL + 10)),
            model_file("model_index.json", b'{"a": 1}'),
            model_file("empty.txt", b""),
        ],
        chunk_bytes=SMALL,
    )


def test_create_sorts_files_and_counts_chunks_and_bytes() -> None:
    manifest = sample()
    assert [item.path for item in manifest.files] == ["empty.txt", "model_index.json", "unet/weights.bin"]
    assert manifest.total_bytes == 2 * SMALL + 10 + 8
    assert manifest.chunk_count == 0 + 1 + 3


def test_chunks_in_order_with_offsets_and_a_short_last_one() -> None:
    manifest = sample()
    chunks = list(manifest.chunks())
    weights = manifest.files[2]
    assert chunks == [
        Chunk(1, 0, 0, 8, manifest.files[1].chunks[0]),
        Chunk(2, 0, 0, SMALL, weights.chunks[0]),
        Chunk(2, 1, SMALL, SMALL, weights.chunks[1]),
        Chunk(2, 2, 2 * SMALL, 10, weights.chunks[2]),
    ]
    assert manifest.chunk(2, 2) == chunks[-1]
    for bad in ((3, 0), (-1, 0), (0, 0), (2, 3)):
        with pytest.raises(IndexError):
            manifest.chunk(*bad)


def test_digest_is_stable_across_file_order_and_a_wire_round_trip() -> None:
    manifest = sample()
    reordered = Manifest.create(reversed(manifest.files), chunk_bytes=SMALL)
    assert reordered.digest == manifest.digest
    packed = msgpack.unpackb(msgpack.packb(manifest.to_wire(), use_bin_type=True), raw=False)
    assert Manifest.from_wire(packed).digest == manifest.digest
    assert Manifest.from_wire(packed) == manifest
    assert is_digest(manifest.digest)


def test_digest_is_pinned_so_every_version_hashes_the_same_bytes() -> None:
    # The digest names a model on every node: a change in the canonical form would split the mesh.
    manifest = Manifest.create([model_file("a.txt", b"hello")], chunk_bytes=SMALL)
    expected = sha(
        b'{"chunk_bytes":4096,"files":[{"chunks":["'
        + sha(b"hello").encode()
        + b'"],"path":"a.txt","sha256":"'
        + sha(b"hello").encode()
        + b'","size":5}],"format":1}'
    )
    assert manifest.digest == expected


def test_one_changed_byte_or_path_or_chunk_size_changes_the_digest() -> None:
    base = Manifest.create([model_file("a.txt", b"hello")], chunk_bytes=SMALL)
    other_bytes = Manifest.create([model_file("a.txt", b"hellp")], chunk_bytes=SMALL)
    other_path = Manifest.create([model_file("b.txt", b"hello")], chunk_bytes=SMALL)
    other_chunking = Manifest.create([model_file("a.txt", b"hello", 2 * SMALL)], chunk_bytes=2 * SMALL)
    assert len({base.digest, other_bytes.digest, other_path.digest, other_chunking.digest}) == 4


def test_empty_manifest_is_valid() -> None:
    manifest = Manifest.create([])
    assert manifest.chunk_bytes == CHUNK_BYTES
    assert manifest.total_bytes == 0
    assert list(manifest.chunks()) == []


def test_short_digest_is_its_first_16_characters() -> None:
    digest = sample().digest
    assert short(digest) == digest[:16]
    assert is_short(short(digest))
    assert not is_short(digest)
    assert not is_digest(short(digest))
    assert not is_digest(digest.upper())
    assert not is_short(None)


@pytest.mark.parametrize(
    "path",
    [
        "../etc/passwd",
        "a/../../b",
        "/etc/passwd",
        "a//b",
        "a/./b",
        ".",
        "..",
        "a/",
        "",
        "a\\b",
        "..\\x",
        "a\x00b",
        "a\nb",
        MANIFEST_FILE,
        "x" * (MAX_PATH_CHARS + 1),
    ],
)
def test_malicious_or_malformed_paths_are_refused(path: str) -> None:
    wire = sample().to_wire()
    wire["files"] = [model_file(path, b"x").to_wire()]
    with pytest.raises(ManifestError):
        Manifest.from_wire(wire)


def test_the_manifest_name_inside_a_subfolder_is_an_ordinary_file() -> None:
    manifest = Manifest.create([model_file(f"sub/{MANIFEST_FILE}", b"x")], chunk_bytes=SMALL)
    assert manifest.files[0].path == f"sub/{MANIFEST_FILE}"


def test_a_file_that_is_also_a_folder_is_refused() -> None:
    with pytest.raises(ManifestError, match="is a file and a folder"):
        Manifest.create([model_file("a", b"x"), model_file("a/b", b"y")], chunk_bytes=SMALL)


def test_duplicates_and_unsorted_files_from_the_wire_are_refused() -> None:
    one = model_file("a", b"x").to_wire()
    two = model_file("b", b"y").to_wire()
    for files in ([one, one], [two, one]):
        wire = {"format": 1, "chunk_bytes": SMALL, "files": files}
        with pytest.raises(ManifestError, match="sorted"):
            Manifest.from_wire(wire)


def mutated(change: Any) -> dict[str, Any]:
    wire = copy.deepcopy(sample().to_wire())
    change(wire)
    return wire


GARBAGE = [
    None,
    b"bytes",
    "text",
    [],
    42,
    {},
    {"format": 1, "chunk_bytes": SMALL},
    mutated(lambda w: w.update(extra=1)),
    mutated(lambda w: w.update(format=2)),
    mutated(lambda w: w.update(format=True)),
    mutated(lambda w: w.update(chunk_bytes=MIN_CHUNK_BYTES - 1)),
    mutated(lambda w: w.update(chunk_bytes=MAX_CHUNK_BYTES + 1)),
    mutated(lambda w: w.update(chunk_bytes="4096")),
    mutated(lambda w: w.update(chunk_bytes=4096.0)),
    mutated(lambda w: w.update(files="nope")),
    mutated(lambda w: w.update(files={"a": 1})),
    mutated(lambda w: w["files"].append(None)),
    mutated(lambda w: w["files"][1].pop("sha256")),
    mutated(lambda w: w["files"][1].update(mode=0o777)),
    mutated(lambda w: w["files"][1].update(size=-1)),
    mutated(lambda w: w["files"][1].update(size=True)),
    mutated(lambda w: w["files"][1].update(size=MAX_FILE_BYTES + 1)),
    mutated(lambda w: w["files"][1].update(sha256="A" * 64)),
    mutated(lambda w: w["files"][1].update(sha256="a" * 63)),
    mutated(lambda w: w["files"][1].update(sha256=None)),
    mutated(lambda w: w["files"][2].update(chunks=w["files"][2]["chunks"][:2])),
    mutated(lambda w: w["files"][2].update(chunks=[*w["files"][2]["chunks"], "0" * 64])),
    mutated(lambda w: w["files"][2].update(chunks=["zz" * 32] * 3)),
    mutated(lambda w: w["files"][2].update(chunks="abc")),
    mutated(lambda w: w["files"][0].update(chunks=["0" * 64])),  # an empty file has no chunk
    mutated(lambda w: w["files"][1].update(path=b"model_index.json")),
]


@pytest.mark.parametrize("raw", GARBAGE)
def test_garbage_from_the_wire_is_refused_with_manifest_error(raw: object) -> None:
    with pytest.raises(ManifestError):
        Manifest.from_wire(raw)


def test_a_size_that_keeps_its_chunk_count_is_accepted_as_written() -> None:
    # from_wire checks shape and bounds; whether the bytes match is the store's check on install.
    wire = mutated(lambda w: w["files"][1].update(size=9))
    assert Manifest.from_wire(wire).files[1].size == 9


def test_too_many_files_are_refused() -> None:
    empty = ModelFile("f", 0, sha(b""), ()).to_wire()
    files = [{**empty, "path": f"f{index:05d}"} for index in range(MAX_FILES + 1)]
    with pytest.raises(ManifestError, match="at most"):
        Manifest.from_wire({"format": 1, "chunk_bytes": SMALL, "files": files})


def test_too_many_chunks_in_total_are_refused() -> None:
    per_file = MAX_CHUNKS // 2 + 1
    hashes = ["0" * 64] * per_file
    files = [
        {"path": name, "size": per_file * SMALL, "sha256": "0" * 64, "chunks": hashes} for name in ("a", "b")
    ]
    with pytest.raises(ManifestError, match=f"more than {MAX_CHUNKS} chunks"):
        Manifest.from_wire({"format": 1, "chunk_bytes": SMALL, "files": files})


@pytest.mark.parametrize("name", ["tiny-sd", "all-MiniLM-L6-v2", "a", "m.v1_2", "x" * 64])
def test_model_names_like_deployment_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", ".partial", "..", "-a", "a/b", "a b", "x" * 65, None, 3, "é"])
def test_bad_model_names_are_refused(name: object) -> None:
    with pytest.raises(ValueError, match="model name"):
        check_name(name)
