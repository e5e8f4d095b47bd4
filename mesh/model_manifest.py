"""A model's manifest: the size and sha256 of each of its files and of each chunk of them.

A model in a node's store (``meshnode.models``) is a folder identified by a name and by the digest
of its manifest: the sha256 of the manifest's canonical JSON (``to_wire`` with sorted keys, no
spaces, ASCII only). Two folders with the same files at the same paths have the same digest on every
node, whatever their timestamps or permissions; one changed byte anywhere changes it. Gossip carries
``short(digest)``, its first 16 hex characters; a pull fetches the full manifest from a holder and
checks it against both.

Each file is cut into ``chunk_bytes`` pieces (the last one shorter; an empty file has none), each
with its own sha256, so a puller checks every piece it receives before writing it, and can take
pieces of one file from several peers.

Invariants of every ``Manifest`` (``from_wire`` enforces them on anything from a peer, ``create``
on what this node builds):

- paths are relative POSIX paths: no leading "/", no "." or ".." or empty part, no backslash, no
  control character, at most ``MAX_PATH_CHARS``; not the manifest file's own name at the top; no
  path is a folder of another (``a`` and ``a/b`` cannot both be files);
- files are sorted by path, without duplicates, at most ``MAX_FILES``;
- each file's size is at most ``MAX_FILE_BYTES`` and its chunk count is ``ceil(size/chunk_bytes)``;
  all chunks together are at most ``MAX_CHUNKS``;
- ``chunk_bytes`` lies in ``[MIN_CHUNK_BYTES, MAX_CHUNK_BYTES]``; hashes are 64 lowercase hex.

Bounds, and why: ``MAX_CHUNKS`` (131,072 chunks, 512 GiB at the default chunk size) keeps the
manifest's wire form under ~10 MB, well inside one data-plane frame (``max_frame_bytes``, 64 MiB);
``MAX_FILES`` (10,000) covers checkpoints sharded in hundreds of files; ``MAX_FILE_BYTES``
(256 GiB) the largest single weight files published; ``MAX_PATH_CHARS`` (512) any real layout.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise
from typing import Any

from .deployment import NAME_PATTERN

__all__ = [
    "CHUNK_BYTES",
    "FORMAT",
    "MANIFEST_FILE",
    "MAX_CHUNKS",
    "MAX_CHUNK_BYTES",
    "MAX_FILES",
    "MAX_FILE_BYTES",
    "MAX_PATH_CHARS",
    "MIN_CHUNK_BYTES",
    "SHORT_CHARS",
    "Chunk",
    "Manifest",
    "ManifestError",
    "ModelFile",
    "canonical_json",
    "check_name",
    "check_path",
    "is_digest",
    "is_short",
    "short",
]

# 4 MiB: large enough that per-chunk overhead (a round trip, a hash check) is small against the
# transfer, small enough that a lost peer costs little to fetch again and several peers share a file.
CHUNK_BYTES = 4 * 1024 * 1024
MIN_CHUNK_BYTES = 4 * 1024
MAX_CHUNK_BYTES = 16 * 1024 * 1024
MAX_FILES = 10_000
MAX_FILE_BYTES = 256 * 1024**3
MAX_CHUNKS = 131_072
MAX_PATH_CHARS = 512
# The manifest lives inside the model's folder under this name and is not itself listed in it.
MANIFEST_FILE = ".meshnode-manifest.json"
# The wire form's version: a node refuses a manifest of a format it does not know.
FORMAT = 1
SHORT_CHARS = 16

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX16 = re.compile(r"[0-9a-f]{16}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


class ManifestError(ValueError):
    """A manifest (or one of its parts) that is malformed or out of bounds."""


@dataclass(frozen=True)
class ModelFile:
    """One file of a model: its path in the folder, size, sha256 and the sha256 of each chunk."""

    path: str
    size: int
    sha256: str
    chunks: tuple[str, ...]

    def to_wire(self) -> dict[str, Any]:
        """A JSON- and msgpack-ready dict."""
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "chunks": list(self.chunks)}


@dataclass(frozen=True)
class Chunk:
    """One piece of one file: where it sits and the sha256 its bytes must have."""

    file_index: int
    chunk_index: int
    offset: int
    length: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """Every file of a model, sorted by path; ``digest`` identifies the model's content."""

    chunk_bytes: int
    files: tuple[ModelFile, ...]

    @classmethod
    def create(cls, files: Iterable[ModelFile], chunk_bytes: int = CHUNK_BYTES) -> Manifest:
        """A manifest of `files` in any order, sorted and checked like one from the wire."""
        ordered = sorted(files, key=lambda item: item.path)
        return cls.from_wire(cls(chunk_bytes, tuple(ordered)).to_wire())

    @cached_property
    def digest(self) -> str:
        """The model's content hash: sha256 hex of the canonical JSON of ``to_wire()``."""
        return hashlib.sha256(canonical_json(self.to_wire())).hexdigest()

    @property
    def total_bytes(self) -> int:
        """The size of all files together."""
        return sum(item.size for item in self.files)

    @property
    def chunk_count(self) -> int:
        """The number of chunks of all files together."""
        return sum(len(item.chunks) for item in self.files)

    def chunks(self) -> Iterator[Chunk]:
        """Every chunk in order: file by file, and within a file by offset."""
        for file_index, item in enumerate(self.files):
            for chunk_index, sha in enumerate(item.chunks):
                offset = chunk_index * self.chunk_bytes
                length = min(self.chunk_bytes, item.size - offset)
                yield Chunk(file_index, chunk_index, offset, length, sha)

    def chunk(self, file_index: int, chunk_index: int) -> Chunk:
        """One chunk by its indexes; IndexError when either is out of range."""
        if not 0 <= file_index < len(self.files):
            raise IndexError(f"file index {file_index} is not in 0..{len(self.files) - 1}")
        item = self.files[file_index]
        if not 0 <= chunk_index < len(item.chunks):
            raise IndexError(f"chunk index {chunk_index} is not in 0..{len(item.chunks) - 1}")
        offset = chunk_index * self.chunk_bytes
        length = min(self.chunk_bytes, item.size - offset)
        return Chunk(file_index, chunk_index, offset, length, item.chunks[chunk_index])

    def to_wire(self) -> dict[str, Any]:
        """A JSON- and msgpack-ready dict; its canonical JSON is what ``digest`` hashes."""
        return {
            "format": FORMAT,
            "chunk_bytes": self.chunk_bytes,
            "files": [item.to_wire() for item in self.files],
        }

    @classmethod
    def from_wire(cls, raw: object) -> Manifest:
        """Validate a decoded manifest strictly (it comes from peers); ManifestError on any fault."""
        if not isinstance(raw, dict):
            raise ManifestError("a manifest must be a map")
        if set(raw) != {"format", "chunk_bytes", "files"}:
            raise ManifestError("a manifest must have exactly the keys format, chunk_bytes and files")
        if raw["format"] != FORMAT or isinstance(raw["format"], bool):
            raise ManifestError(f"manifest format {raw['format']!r} is not {FORMAT}")
        chunk_bytes = raw["chunk_bytes"]
        if not _is_int(chunk_bytes) or not MIN_CHUNK_BYTES <= chunk_bytes <= MAX_CHUNK_BYTES:
            raise ManifestError(f"chunk_bytes must be an integer in {MIN_CHUNK_BYTES}..{MAX_CHUNK_BYTES}")
        items = raw["files"]
        if not isinstance(items, list | tuple) or len(items) > MAX_FILES:
            raise ManifestError(f"files must be a list of at most {MAX_FILES} entries")
        files: list[ModelFile] = []
        chunk_total = 0
        for index, item in enumerate(items):
            model_file = _model_file(item, chunk_bytes, index, MAX_CHUNKS - chunk_total)
            chunk_total += len(model_file.chunks)
            files.append(model_file)
        _check_layout([item.path for item in files])
        return cls(chunk_bytes, tuple(files))


def canonical_json(value: object) -> bytes:
    """The one byte form of `value` that ``digest`` hashes: sorted keys, no spaces, ASCII."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def short(digest: str) -> str:
    """The first ``SHORT_CHARS`` (16) hex characters of a digest: what gossip carries."""
    return digest[:SHORT_CHARS]


def is_digest(value: object) -> bool:
    """Whether `value` is a full digest: 64 lowercase hex characters."""
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def is_short(value: object) -> bool:
    """Whether `value` is a short digest: 16 lowercase hex characters."""
    return isinstance(value, str) and _HEX16.fullmatch(value) is not None


def check_name(name: object) -> str:
    """A valid model name (the pattern of deployment names), or ValueError saying the rule."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError("a model name must be 1-64 of A-Z a-z 0-9 _ . - and start with a letter or digit")
    return name


def check_path(path: object) -> str:
    """A valid file path inside a model's folder, or ManifestError naming the rule it breaks."""
    if not isinstance(path, str) or not path:
        raise ManifestError("a file path must be a non-empty string")
    if len(path) > MAX_PATH_CHARS:
        raise ManifestError(f"file path is longer than {MAX_PATH_CHARS} characters")
    if _CONTROL.search(path):
        raise ManifestError(f"file path {path!r} holds a backslash or a control character")
    if path.startswith("/"):
        raise ManifestError(f"file path {path!r} is absolute")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise ManifestError(f"file path {path!r} has an empty, '.' or '..' part")
    if path == MANIFEST_FILE:
        raise ManifestError(f"file path {path!r} is the manifest's own name")
    return path


def _model_file(raw: object, chunk_bytes: int, index: int, chunks_left: int) -> ModelFile:
    if not isinstance(raw, dict) or set(raw) != {"path", "size", "sha256", "chunks"}:
        raise ManifestError(f"files[{index}] must be a map of exactly path, size, sha256 and chunks")
    path = check_path(raw["path"])
    size = raw["size"]
    if not _is_int(size) or not 0 <= size <= MAX_FILE_BYTES:
        raise ManifestError(f"{path}: size must be an integer in 0..{MAX_FILE_BYTES}")
    if not is_digest(raw["sha256"]):
        raise ManifestError(f"{path}: sha256 must be 64 lowercase hex characters")
    chunks = raw["chunks"]
    expected = -(-size // chunk_bytes)
    if not isinstance(chunks, list | tuple) or len(chunks) != expected:
        raise ManifestError(f"{path}: must list {expected} chunk hashes for {size} bytes")
    if expected > chunks_left:
        raise ManifestError(f"the manifest has more than {MAX_CHUNKS} chunks")
    if not all(is_digest(chunk) for chunk in chunks):
        raise ManifestError(f"{path}: every chunk hash must be 64 lowercase hex characters")
    return ModelFile(path, size, raw["sha256"], tuple(chunks))


def _check_layout(paths: list[str]) -> None:
    """Sorted, unique, and no file where another needs a folder."""
    for before, after in pairwise(paths):
        if after <= before:
            raise ManifestError(f"files must be sorted by path without duplicates ({after!r})")
    names = set(paths)
    for path in paths:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder in names:
                raise ManifestError(f"{folder!r} is a file and a folder of {path!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
