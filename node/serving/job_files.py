"""Large job results as files: ``<data dir>/job-results/<sha256>``, kept on two nodes, not in every copy.

A result over ``job_inline_result_bytes`` would be copied with its record to every holder and sent
again with each later write of the record (webhook delivery, say). Instead the node that made it
keeps it as a file named by the SHA-256 of its bytes, gives one other node a copy, and the record
names both (``mesh/jobs.StoredFile``); any node reads it from one of them when asked. A file is
written beside its final name and renamed, so a reader never sees half of one, and checked against
its name when it arrives from a peer. Calls block: the job table runs them on its own thread.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..mesh.jobs import SHA256_PATTERN

__all__ = ["JobFiles"]


class JobFiles:
    """Result files by their SHA-256."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def put(self, data: bytes, sha256: str | None = None) -> str:
        """Keep `data`; its SHA-256, which must equal `sha256` when given (ValueError otherwise)."""
        digest = hashlib.sha256(data).hexdigest()
        if sha256 is not None and sha256 != digest:
            raise ValueError("the file's bytes do not match its name")
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / digest
        if not path.exists():
            scratch = path.with_name(f".{digest}.{os.getpid()}")
            scratch.write_bytes(data)
            scratch.replace(path)
        return digest

    def get(self, sha256: str) -> bytes | None:
        """The file's bytes, or None when this node does not have it."""
        path = self._path(sha256)
        try:
            return path.read_bytes() if path is not None else None
        except FileNotFoundError:
            return None

    def delete(self, sha256: str) -> None:
        """Forget the file (nothing when it is not here)."""
        path = self._path(sha256)
        if path is not None:
            path.unlink(missing_ok=True)

    def _path(self, sha256: str) -> Path | None:
        # Names come from records and peers: only a digest may become a path.
        return self.folder / sha256 if SHA256_PATTERN.fullmatch(sha256) else None
