"""Large job results as files: ``<data dir>/job-results/<sha256>``, kept on two nodes, not in every copy.

A result over ``job_inline_result_bytes`` would be copied with its record to every holder and sent
again with each later write of the record (webhook delivery, say). Instead the node that made it
keeps it as a file named by the SHA-256 of its bytes, gives one other node a copy, and the record
names both (``mesh/jobs.StoredFile``); any node reads it from one of them when asked. A file is
written beside its final name and renamed, so a reader never sees half of one, and checked against
its name when it arrives from a peer. Calls block: the job table runs them on its own thread.

A copy from a peer arrives in pieces (``job_result_files.py``), each a message of its own, so a
result as large as a data-plane frame never makes a message larger than one. ``receive`` appends a
piece to its upload's scratch file and hashes it as it goes; the last piece checks the whole against
the name and renames. Uploads are few and short (one per result kept, a piece per round trip), so
at most ``MAX_UPLOADS`` are open at once, the least recently fed one dropped for a new one; one
left by a sender that died is dropped the same way, and scratch files left by a crash at ``sweep``.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..mesh.jobs import SHA256_PATTERN

__all__ = ["MAX_UPLOADS", "UPLOAD_PATTERN", "JobFiles"]

# Uploads from peers open at once: each result kept has one, for the few round trips of its pieces.
MAX_UPLOADS = 16
# An upload's id, chosen by its sender: it becomes part of a scratch file's name.
UPLOAD_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,64}")


@dataclass
class _Upload:
    sha256: str
    size: int
    scratch: Path
    hasher: Any  # hashlib's sha256 object, fed piece by piece
    received: int = 0


class JobFiles:
    """Result files by their SHA-256."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._uploads: dict[str, _Upload] = {}  # by upload id, least recently fed first

    def sweep(self) -> None:
        """Delete scratch files a crash left behind (names starting with a dot)."""
        if self.folder.is_dir():
            for leftover in self.folder.glob(".*"):
                leftover.unlink(missing_ok=True)

    def put(self, data: bytes, sha256: str | None = None) -> str:
        """Keep `data`; its SHA-256, which must equal `sha256` when given (ValueError otherwise)."""
        digest = hashlib.sha256(data).hexdigest()
        if sha256 is not None and sha256 != digest:
            raise ValueError("the file's bytes do not match its name")
        path = self.folder / digest
        if not path.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            scratch = path.with_name(f".{digest}.{os.getpid()}")
            scratch.write_bytes(data)
            scratch.replace(path)
        return digest

    def has(self, sha256: str) -> bool:
        """Whether this node keeps the file."""
        path = self._path(sha256)
        return path is not None and path.is_file()

    def receive(self, upload: str, sha256: str, size: int, offset: int, piece: bytes) -> bool:
        """Take the piece at `offset` of upload `upload` (the file `sha256`, `size` bytes in all);
        whether the file is now kept. ValueError for a piece out of order or bytes that do not
        match the name; a piece at offset 0 starts the upload over."""
        if not UPLOAD_PATTERN.fullmatch(upload) or self._path(sha256) is None:
            raise ValueError("an upload needs an id of 8 to 64 letters, digits, '-' or '_' and a sha256")
        if offset == 0:
            self._drop(upload)
            self._start(upload, sha256, size)
        started = self._uploads.pop(upload, None)
        if started is None or (started.sha256, started.size, started.received) != (sha256, size, offset):
            if started is not None:
                started.scratch.unlink(missing_ok=True)
            raise ValueError(f"piece at {offset} is not the next of upload {upload}: send it again from 0")
        if offset + len(piece) > size:
            started.scratch.unlink(missing_ok=True)
            raise ValueError(f"piece ends past the file's {size} bytes")
        with started.scratch.open("ab") as scratch:
            scratch.write(piece)
        started.hasher.update(piece)
        started.received += len(piece)
        if started.received < size:
            self._uploads[upload] = started  # now the most recently fed
            return False
        if started.hasher.hexdigest() != sha256:
            started.scratch.unlink(missing_ok=True)
            raise ValueError("the file's bytes do not match its name")
        started.scratch.replace(self.folder / sha256)
        return True

    def get(self, sha256: str) -> bytes | None:
        """The file's bytes, or None when this node does not have it."""
        path = self._path(sha256)
        try:
            return path.read_bytes() if path is not None else None
        except FileNotFoundError:
            return None

    def read(self, sha256: str, offset: int, length: int) -> tuple[bytes, int] | None:
        """Up to `length` bytes of the file from `offset`, and its size; None when it is not here."""
        path = self._path(sha256)
        try:
            if path is None:
                return None
            with path.open("rb") as file:
                size = os.fstat(file.fileno()).st_size
                file.seek(offset)
                return file.read(length), size
        except FileNotFoundError:
            return None

    def delete(self, sha256: str) -> None:
        """Forget the file (nothing when it is not here)."""
        path = self._path(sha256)
        if path is not None:
            path.unlink(missing_ok=True)

    def _start(self, upload: str, sha256: str, size: int) -> None:
        while len(self._uploads) >= MAX_UPLOADS:
            self._drop(next(iter(self._uploads)))  # the least recently fed: likely its sender died
        self.folder.mkdir(parents=True, exist_ok=True)
        scratch = self.folder / f".{sha256}.{upload}"
        scratch.write_bytes(b"")
        self._uploads[upload] = _Upload(sha256, size, scratch, hashlib.sha256())

    def _drop(self, upload: str) -> None:
        started = self._uploads.pop(upload, None)
        if started is not None:
            started.scratch.unlink(missing_ok=True)

    def _path(self, sha256: str) -> Path | None:
        # Names come from records and peers: only a digest may become a path.
        return self.folder / sha256 if SHA256_PATTERN.fullmatch(sha256) else None
