"""A pull's partial folder on real files: only chunks with the right hash are written and kept on resume."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from meshnode.mesh.model_manifest import MIN_CHUNK_BYTES, Manifest, ModelFile
from meshnode.models import partial
from meshnode.models.partial import PartialFolder

SIZE = MIN_CHUNK_BYTES


def manifest_of(files: dict[str, bytes]) -> Manifest:
    entries = []
    for path, data in files.items():
        chunks = tuple(hashlib.sha256(data[i : i + SIZE]).hexdigest() for i in range(0, len(data), SIZE))
        entries.append(ModelFile(path, len(data), hashlib.sha256(data).hexdigest(), chunks))
    return Manifest.create(entries, chunk_bytes=SIZE)


FILES = {"a/weights.bin": bytes(range(256)) * 40, "config.json": b"{}", "empty": b""}
MANIFEST = manifest_of(FILES)
PIECES = [FILES[MANIFEST.files[c.file_index].path][c.offset : c.offset + c.length] for c in MANIFEST.chunks()]


def test_every_file_is_made_at_its_size_and_only_good_chunks_are_written(tmp_path: Path) -> None:
    folder = PartialFolder(tmp_path / ".partial" / MANIFEST.digest, MANIFEST)
    assert folder.resume() == set()
    sizes = {item.path: (folder.folder / item.path).stat().st_size for item in MANIFEST.files}
    assert sizes == {"a/weights.bin": 10240, "config.json": 2, "empty": 0}
    assert not folder.write(1, [b"x" * len(PIECES[1])])  # wrong bytes: refused, nothing written
    assert not folder.write(1, [PIECES[1][:-1]])  # short
    assert not folder.write(1, [PIECES[1], b"x"])  # long
    assert not folder.write(1, [PIECES[1][100:], PIECES[1][:100]])  # the right bytes, out of order
    assert (folder.folder / "a/weights.bin").read_bytes() == bytes(10240)
    for index, piece in enumerate(PIECES):
        # As the data plane delivers a chunk: in pieces (of uneven sizes here), never joined.
        assert folder.write(index, [piece[:1000], piece[1000:1001], piece[1001:]])
    assert (folder.folder / "a/weights.bin").read_bytes() == FILES["a/weights.bin"]
    assert folder.record.is_file() and folder.record.parent == folder.folder.parent


def test_resume_keeps_recorded_chunks_whose_bytes_still_match(tmp_path: Path) -> None:
    folder = PartialFolder(tmp_path / MANIFEST.digest, MANIFEST)
    folder.resume()
    for index in (0, 2, 3):
        folder.write(index, [PIECES[index]])
    # A chunk whose bytes were lost after its record was written (a power cut), and a torn record.
    with (folder.folder / "a/weights.bin").open("r+b") as target:
        target.seek(MANIFEST.chunk(0, 2).offset)
        target.write(b"\0" * 16)
    with folder.record.open("ab") as record:
        record.write(b"\0\0")
    again = PartialFolder(tmp_path / MANIFEST.digest, MANIFEST)
    kept = again.resume()
    index_of_lost = list(MANIFEST.chunks()).index(MANIFEST.chunk(0, 2))
    assert kept == {0, 2, 3} - {index_of_lost}
    assert again.resume() == kept  # the record was rewritten without the lost one


def test_discard_removes_the_folder_and_its_record(tmp_path: Path) -> None:
    folder = PartialFolder(tmp_path / MANIFEST.digest, MANIFEST)
    folder.resume()
    folder.write(0, [PIECES[0]])
    folder.discard()
    assert not folder.folder.exists() and not folder.record.exists()


def test_pieces_larger_than_a_yield_are_hashed_and_written_in_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between parts the file thread yields the CPU; the parts must still be every byte, in order."""
    monkeypatch.setattr(partial, "YIELD_BYTES", 7)
    folder = PartialFolder(tmp_path / MANIFEST.digest, MANIFEST)
    folder.resume()
    for index, piece in enumerate(PIECES):
        assert folder.write(index, [piece[:1000], piece[1000:]])
    assert not folder.write(0, [PIECES[0][:-1] + b"?"])
    assert (folder.folder / "a/weights.bin").read_bytes() == FILES["a/weights.bin"]
    again = PartialFolder(tmp_path / MANIFEST.digest, MANIFEST)
    assert again.resume() == set(range(len(PIECES)))  # read back and hashed in parts as well
