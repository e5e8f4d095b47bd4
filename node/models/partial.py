"""A pull's partial folder: the chunks written so far, and the record of which, so a pull resumes.

Layout, inside the store (``store.py``):

    .partial/<digest>/          the model's files as they fill, each chunk written at its offset
    .partial/<digest>.chunks    the chunks written: 4 bytes each, the chunk's number in manifest
                                order (big-endian), appended once its bytes are written

The record lives beside the folder, not in it: every relative path but the manifest's own name may
be a model file, and the folder becomes the model when ``ModelStore.install`` renames it.

Invariants: a chunk's bytes are checked against its sha256 before they are written, and its number
is appended only after they are; on resume (``resume``) every listed chunk is read back and hashed
again, so a record whose write was lost (a power cut before the page cache reached the disk, a
torn last record) costs that chunk again, never a wrong byte. A crash of the process (SIGKILL)
loses nothing written. Every method is blocking file I/O, for a thread.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..mesh.model_manifest import Chunk, Manifest

__all__ = ["PartialFolder"]

_RECORD = struct.Struct(">I")
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)
# Bytes hashed or written between two yields of the CPU: ~40 us of sha256 here, and ~0.16 ms of
# writing into new page-cache pages in this virtual machine, whose first touch costs ~10 us a page.
YIELD_BYTES = 64 * 1024
# The file threads run at nice 19, yet Linux's scheduler (EEVDF) may pick one over a serving thread
# that just woke and leave it running until its next tick (4 ms at HZ=250). Measured here: a nice-19
# thread hashing 4 MiB at a time put 2.4 ms on the p99 of a nice-0 thread's wakeups (from another
# process as well: the CPU, not the GIL); yielding after each 256 KiB, 0.3 ms, as with nothing.
_yield_cpu = getattr(os, "sched_yield", lambda: None)


class PartialFolder:
    """The files of one model being pulled, and the record of the chunks they hold."""

    def __init__(self, folder: Path, manifest: Manifest) -> None:
        self.folder = folder
        self.record = folder.with_name(folder.name + ".chunks")
        self.manifest = manifest
        self._chunks = list(manifest.chunks())

    def chunk(self, index: int) -> Chunk:
        """Chunk number `index`, in manifest order."""
        return self._chunks[index]

    def resume(self) -> set[int]:
        """Make the folder and its files; the chunks already there whose bytes match their hash."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for item in self.manifest.files:
            path = self.folder / item.path
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | _NO_FOLLOW, 0o644)
            try:
                # Every file at its size from the start: unwritten ranges are holes, not missing bytes.
                if os.fstat(fd).st_size != item.size:
                    os.ftruncate(fd, item.size)
            finally:
                os.close(fd)
        listed = self._listed()
        good = {index for index in listed if self._holds(index)}
        if good != listed:  # forget the ones that did not survive; the rest keep their records
            self.record.write_bytes(b"".join(_RECORD.pack(index) for index in sorted(good)))
        return good

    def write(self, index: int, pieces: Sequence[bytes]) -> bool:
        """Write chunk `index` (its bytes: `pieces` in order) if they match its sha256, and record it.

        False (nothing written) if not. The pieces are hashed and written as they came from the
        data plane, never joined: a chunk is megabytes, and a join is one more copy of it.
        """
        chunk = self._chunks[index]
        if sum(map(len, pieces)) != chunk.length or _sha256(pieces) != chunk.sha256:
            return False
        path = self.folder / self.manifest.files[chunk.file_index].path
        fd = os.open(path, os.O_WRONLY | _NO_FOLLOW)
        try:
            offset = chunk.offset
            for part in _parts(pieces):  # pwrite may write less than all: each part to its end
                written = 0
                while written < len(part):
                    written += os.pwrite(fd, part[written:], offset + written)
                offset += len(part)
                _yield_cpu()
        finally:
            os.close(fd)
        # One small append per chunk: O_APPEND writes of 4 bytes never interleave between threads.
        fd = os.open(self.record, os.O_WRONLY | os.O_CREAT | os.O_APPEND | _NO_FOLLOW, 0o644)
        try:
            os.write(fd, _RECORD.pack(index))
        finally:
            os.close(fd)
        return True

    def forget_record(self) -> None:
        """The folder was installed as a model: its record has no use left."""
        self.record.unlink(missing_ok=True)

    def discard(self) -> None:
        """Delete the folder and its record (its content cannot become the model)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.forget_record()

    def _listed(self) -> set[int]:
        try:
            raw = self.record.read_bytes()
        except FileNotFoundError:
            return set()
        whole = len(raw) - len(raw) % _RECORD.size  # a torn last record is dropped
        indexes = {value for (value,) in _RECORD.iter_unpack(raw[:whole])}
        return {index for index in indexes if index < len(self._chunks)}

    def _holds(self, index: int) -> bool:
        chunk = self._chunks[index]
        path = self.folder / self.manifest.files[chunk.file_index].path
        try:
            with path.open("rb") as source:
                source.seek(chunk.offset)
                data = source.read(chunk.length)
        except OSError:
            return False
        return len(data) == chunk.length and _sha256([data]) == chunk.sha256


def _parts(pieces: Sequence[bytes]) -> Iterator[memoryview]:
    """The bytes of `pieces` in order, as views of at most ``YIELD_BYTES`` (no copies)."""
    for piece in pieces:
        view = memoryview(piece)
        for start in range(0, len(view), YIELD_BYTES):
            yield view[start : start + YIELD_BYTES]


def _sha256(pieces: Sequence[bytes]) -> str:
    """The sha256 of the pieces' bytes, yielding the CPU between parts (see ``_yield_cpu``)."""
    digest = hashlib.sha256()
    for part in _parts(pieces):
        digest.update(part)
        _yield_cpu()
    return digest.hexdigest()
