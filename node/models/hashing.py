"""Reading a folder into a manifest: which files it has, and their sha256 per file and per chunk.

Blocking file I/O throughout: the agent calls it in a thread, the CLI directly. Files are read once,
chunk by chunk: copying a model into the store hashes the bytes it writes, so the manifest always
describes the copy, even if the source changes meanwhile.

What a source folder may hold (``list_files``): regular files and folders. A symbolic link is
followed only when it resolves inside the source folder (a link to a file elsewhere could copy a
private file into a store that peers read); anything else (a link outside, a socket, a device) is
refused with a ``SourceError`` naming it. A manifest file at the source's top is left out, so a
model folder of another store can be added as it is.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..mesh.model_manifest import (
    MANIFEST_FILE,
    MAX_FILE_BYTES,
    MAX_FILES,
    ManifestError,
    ModelFile,
    check_path,
)

__all__ = ["SourceError", "SourceFile", "copy_file", "hash_file", "list_files"]


class SourceError(ValueError):
    """A folder that cannot be added as a model, and why."""


@dataclass(frozen=True)
class SourceFile:
    """One file of a source folder: its path in the model, and where its bytes are read from."""

    path: str
    source: Path
    size: int


def list_files(root: Path) -> list[SourceFile]:
    """Every file under `root`, sorted by path; SourceError on a link outside it or a special file."""
    if not root.is_dir():
        raise SourceError(f"{root} is not a folder")
    real_root = root.resolve()
    # The real folder behind each folder walked: linked folders are walked through their links
    # (so their files keep the link's path), and a link back to a folder on its own walked path
    # would loop forever, so it is refused.
    real_of = {real_root: real_root}
    found: list[SourceFile] = []
    for folder, dirs, names in os.walk(real_root, followlinks=True):
        here = Path(folder)
        walked = {real_of[step] for step in (here, *here.parents) if step in real_of}
        for name in dirs:
            real = _inside(real_root, here / name)
            if real in walked:
                raise SourceError(f"{here / name} links to a folder that holds it (a loop)")
            real_of[here / name] = real
        for name in names:
            found.append(_source_file(real_root, here / name))
        if len(found) > MAX_FILES:
            raise SourceError(f"{root} has more than {MAX_FILES} files")
    found = [item for item in found if item.path != MANIFEST_FILE]
    found.sort(key=lambda item: item.path)
    for item in found:
        try:
            check_path(item.path)
        except ManifestError as exc:
            raise SourceError(str(exc)) from exc
    return found


def hash_file(path: Path, chunk_bytes: int) -> ModelFile:
    """The manifest entry of one file, read chunk by chunk (its path is the file's name)."""
    with path.open("rb") as source:
        return _hash_stream(path.name, source, None, chunk_bytes)


def copy_file(item: SourceFile, target: Path, chunk_bytes: int, *, link: bool = False) -> ModelFile:
    """Copy (or hard-link) one file to `target` and return its manifest entry, hashed as written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(item.source, target)
        except OSError as exc:
            raise SourceError(f"cannot hard-link {item.source} into the store: {exc.strerror}") from exc
        with target.open("rb") as linked:
            entry = _hash_stream(item.path, linked, None, chunk_bytes)
    else:
        with item.source.open("rb") as source, target.open("wb") as copy:
            entry = _hash_stream(item.path, source, copy, chunk_bytes)
    if entry.size > MAX_FILE_BYTES:
        raise SourceError(f"{item.source} is larger than {MAX_FILE_BYTES} bytes")
    return entry


def _hash_stream(path: str, source: BinaryIO, copy: BinaryIO | None, chunk_bytes: int) -> ModelFile:
    whole = hashlib.sha256()
    chunks: list[str] = []
    size = 0
    while True:
        block = _read_exactly(source, chunk_bytes)
        if not block:
            break
        whole.update(block)
        chunks.append(hashlib.sha256(block).hexdigest())
        size += len(block)
        if copy is not None:
            copy.write(block)
        if size > MAX_FILE_BYTES:
            break  # the caller refuses it; reading on would only cost time
    return ModelFile(path, size, whole.hexdigest(), tuple(chunks))


def _read_exactly(source: BinaryIO, count: int) -> bytes:
    """Up to `count` bytes, short only at the end of the file (a raw read may return fewer)."""
    parts: list[bytes] = []
    left = count
    while left:
        block = source.read(left)
        if not block:
            break
        parts.append(block)
        left -= len(block)
    return b"".join(parts)


def _source_file(root: Path, path: Path) -> SourceFile:
    info = path.lstat()
    source = path
    if stat.S_ISLNK(info.st_mode):
        source = _inside(root, path)
        try:
            info = source.stat()
        except OSError as exc:
            raise SourceError(f"{path} is a broken link ({exc.strerror})") from exc
    if not stat.S_ISREG(info.st_mode):
        raise SourceError(f"{path} is not a regular file (only files and folders can be added)")
    return SourceFile(path.relative_to(root).as_posix(), source, info.st_size)


def _inside(root: Path, path: Path) -> Path:
    """The link's target when it lies inside `root`, else SourceError."""
    target = path.resolve()
    if target != root and root not in target.parents:
        raise SourceError(f"{path} links outside the folder being added (to {target})")
    return target
