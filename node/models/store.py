"""``ModelStore``: the models this node holds, as folders under ``<data dir>/model-store``.

Layout (docs/models.md, "The store"):

    model-store/
      <name>/                      one model: its files as the manifest lists them, and
        .meshnode-manifest.json    its manifest (not itself listed), whose digest names the content
      .partial/<digest>/           a pull in progress (``pulls.py`` fills it, ``install`` ends it)
      .tmp/                        folders being added or removed (named with the pid of the
                                   process at work: a scan deletes those whose process is gone)

Invariants: a ``<name>`` folder appears whole or not at all (models are built in ``.tmp`` or
``.partial`` and renamed into place; a replaced or removed one is renamed away before it is
deleted), so a reader, a replica or a peer asking for a chunk, never sees half a model. The same
holds across a power cut: every file and folder of a model is flushed to the disk (fsync) before
the rename that makes it the model, and the store's folder after it (``_sync_tree``,
``_sync_folder``), so a ``<name>`` folder found at start is one whose bytes reached the disk, and
checking the files' sizes there is enough. Only folders whose name is a valid model name and whose
manifest parses and matches the files' sizes are held; anything else is skipped with the reason in
``skipped``. Names and digests come in checked (a name from the network is a ``check_name`` name,
a digest 64 hex), so no path built here leaves the folder.

Every method is blocking file I/O: the agent calls them in a thread. Changes of the folder's set of
models (scan, placing a model, removing one) take turns, so a scan never drops a model installed
meanwhile; the long parts (copying and hashing in ``add`` and ``install``) run before the turn. A
second lock guards only the table, so a chunk read for a peer never waits for a scan.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..mesh.model_manifest import (
    CHUNK_BYTES,
    MANIFEST_FILE,
    Manifest,
    ManifestError,
    check_name,
    is_digest,
    short,
)
from .hashing import SourceError, copy_file, hash_file, list_files

__all__ = ["PARTIAL_DIR", "TEMP_DIR", "ModelStore", "SourceError", "StoredModel"]

log = logging.getLogger(__name__)

PARTIAL_DIR = ".partial"
TEMP_DIR = ".tmp"
# A manifest of MAX_CHUNKS hashes is ~10 MB as JSON; a larger file is not one this version wrote.
MAX_MANIFEST_FILE_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class StoredModel:
    """One model held here: its name, content digest, folder and manifest."""

    name: str
    digest: str
    path: Path
    manifest: Manifest

    @property
    def total_bytes(self) -> int:
        """The size of all its files together."""
        return self.manifest.total_bytes

    @property
    def file_count(self) -> int:
        """How many files it has."""
        return len(self.manifest.files)


class ModelStore:
    """The one owner of the table of models held in `folder` (``<data dir>/model-store``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()  # the table
        self._changing = threading.Lock()  # scan, place, remove: one at a time
        self._models: dict[str, StoredModel] = {}
        # Folders under `folder` that are not held, and why (shown by the CLI and logged).
        self.skipped: dict[str, str] = {}

    def scan(self) -> dict[str, StoredModel]:
        """Re-read the folder: the models held now, by name."""
        with self._changing:
            self.folder.mkdir(parents=True, exist_ok=True)
            _clear_stale_temp(self.folder / TEMP_DIR)
            models: dict[str, StoredModel] = {}
            skipped: dict[str, str] = {}
            for entry in sorted(self.folder.iterdir()):
                if entry.name.startswith("."):
                    continue  # .partial, .tmp: the store's own work folders
                try:
                    models[entry.name] = _read_model(entry)
                except (OSError, ValueError) as exc:
                    # Said to HTTP callers: the store's own path stays out of it.
                    skipped[entry.name] = str(exc).replace(str(self.folder), "model-store")
                    log.warning("model store: %s is not held: %s", entry, exc)
            with self._lock:
                self._models = models
                self.skipped = skipped
            return dict(models)

    def get(self, name: str) -> StoredModel | None:
        """The model held under `name`, if any."""
        with self._lock:
            return self._models.get(name)

    def by_digest(self, digest: str) -> StoredModel | None:
        """A model held here whose full digest is `digest`, if any."""
        with self._lock:
            return next((model for model in self._models.values() if model.digest == digest), None)

    def held(self) -> dict[str, str]:
        """Every model held here: name -> full digest."""
        with self._lock:
            return {name: model.digest for name, model in sorted(self._models.items())}

    def models(self) -> list[StoredModel]:
        """Every model held here, sorted by name."""
        with self._lock:
            return [self._models[name] for name in sorted(self._models)]

    def gossip(self) -> dict[str, dict[str, Any]]:
        """What ``NodeMeta.store`` carries: name -> {"digest": short digest, "bytes": total size}."""
        return {
            model.name: {"digest": short(model.digest), "bytes": model.total_bytes} for model in self.models()
        }

    def add(
        self, name: str, source: Path, *, link: bool = False, chunk_bytes: int = CHUNK_BYTES
    ) -> StoredModel:
        """Copy (or hard-link) the folder `source` in as `name`; SourceError when it cannot be."""
        check_name(name)
        source = source.expanduser()
        if source.resolve() == self.folder.resolve() or self.folder.resolve() in source.resolve().parents:
            raise SourceError(f"{source} is inside the store itself")
        files = list_files(source)
        building = self._temp_dir(f"add-{name}")
        try:
            entries = [copy_file(item, building / item.path, chunk_bytes, link=link) for item in files]
            try:
                manifest = Manifest.create(entries, chunk_bytes=chunk_bytes)
            except ManifestError as exc:
                raise SourceError(f"{source} cannot be a model: {exc}") from exc
            existing = self.get(name)
            if existing is not None and existing.digest == manifest.digest:
                return existing
            return self._place(name, manifest, building)
        finally:
            shutil.rmtree(building, ignore_errors=True)

    def remove(self, name: str) -> bool:
        """Delete the model held under `name`; False when none is."""
        check_name(name)
        target = self.folder / name
        with self._changing:
            with self._lock:
                model = self._models.pop(name, None)
            if model is None and not target.exists():
                return False
            away = self._temp_dir(f"rm-{name}")
            away.rmdir()
            target.rename(away)  # gone from <name> at once; the bytes go after, outside the turn
            _sync_folder(self.folder)  # removed for good, not back after a power cut
        shutil.rmtree(away, ignore_errors=True)
        return True

    def partial_dir(self, digest: str) -> Path:
        """Where a pull of the model `digest` keeps its files and resume state (not created here)."""
        if not is_digest(digest):
            raise ValueError("a digest must be 64 lowercase hex characters")
        return self.folder / PARTIAL_DIR / digest

    def install(
        self, name: str, manifest: Manifest, partial: Path, *, chunks_checked: bool = False
    ) -> StoredModel:
        """Check every file of `partial` against `manifest`, then hold it as `name`; ValueError if not.

        Anything in `partial` the manifest does not list (a pull's resume state) is deleted first.
        With `chunks_checked` (a pull: every chunk's bytes were hashed against the manifest as they
        were written, or again on resume, and the chunks tile each file) only the files' presence and
        sizes are checked: the whole-file hash would read every byte again and prove nothing more.
        """
        check_name(name)
        partial = partial.resolve()
        if self.folder.resolve() not in partial.parents or not partial.is_dir():
            raise ValueError(f"{partial} is not a folder inside the model store")
        listed = {item.path for item in manifest.files}
        _remove_unlisted(partial, listed)
        for item in manifest.files:
            path = partial / item.path
            if path.is_symlink() or not path.is_file():
                raise ValueError(f"{item.path} is missing from the pulled files")
            if path.stat().st_size != item.size:
                raise ValueError(f"{item.path} has {path.stat().st_size} bytes, not {item.size}")
            if not chunks_checked and hash_file(path, manifest.chunk_bytes).sha256 != item.sha256:
                raise ValueError(f"{item.path} does not match its sha256 in the manifest")
        return self._place(name, manifest, partial)

    def open_chunk(
        self, digest: str, file_index: int, chunk_index: int, start: int = 0, length: int | None = None
    ) -> bytes:
        """Bytes of one chunk of a held model (all, or `length` from `start` within it), for a peer.

        KeyError (unknown digest), IndexError (bad index, or a range outside the chunk).
        """
        model = self.by_digest(digest)
        if model is None:
            raise KeyError(digest)
        chunk = model.manifest.chunk(file_index, chunk_index)
        length = chunk.length - start if length is None else length
        if start < 0 or length < 0 or start + length > chunk.length:
            raise IndexError(f"bytes {start}..{start + length} are outside a chunk of {chunk.length}")
        path = model.path / model.manifest.files[file_index].path
        with path.open("rb") as source:
            source.seek(chunk.offset + start)
            data = source.read(length)
        if len(data) != length:
            raise OSError(f"{path} is shorter than its manifest says: changed on disk")
        return data

    def _place(self, name: str, manifest: Manifest, folder: Path) -> StoredModel:
        """Write the manifest into `folder` and rename it to ``<name>``, replacing any model there."""
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest.to_wire(), sort_keys=True))
        # Flushed before the turn: writing back a pulled model's gigabytes takes seconds on a slow disk.
        _sync_tree(folder)
        target = self.folder / name
        away: Path | None = None
        with self._changing:
            if target.exists():
                away = self._temp_dir(f"old-{name}")
                away.rmdir()
                target.rename(away)
            folder.rename(target)
            _sync_folder(self.folder)
            model = StoredModel(name, manifest.digest, target, manifest)
            with self._lock:
                self._models[name] = model
        if away is not None:
            shutil.rmtree(away, ignore_errors=True)
        return model

    def _temp_dir(self, label: str) -> Path:
        """A new empty folder under ``.tmp`` (same filesystem as the store, so renames are atomic)."""
        path = self.folder / TEMP_DIR / f"{label}-{os.getpid()}-{secrets.token_hex(4)}"
        path.mkdir(parents=True)
        return path


def _read_model(folder: Path) -> StoredModel:
    """A model folder as held: valid name, a manifest that parses, files of the listed sizes."""
    check_name(folder.name)
    if folder.is_symlink() or not folder.is_dir():
        raise ValueError("not a folder")
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ValueError(f"no {MANIFEST_FILE} (add folders with `meshnode models add`)")
    if manifest_path.stat().st_size > MAX_MANIFEST_FILE_BYTES:
        raise ValueError(f"{MANIFEST_FILE} is larger than {MAX_MANIFEST_FILE_BYTES} bytes")
    try:
        manifest = Manifest.from_wire(json.loads(manifest_path.read_bytes()))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{MANIFEST_FILE} is not JSON: {exc}") from exc
    for item in manifest.files:
        path = folder / item.path
        if not path.is_file():
            raise ValueError(f"{item.path} is missing")
        if path.stat().st_size != item.size:
            raise ValueError(f"{item.path} has {path.stat().st_size} bytes, not {item.size}")
    return StoredModel(folder.name, manifest.digest, folder, manifest)


def _sync_tree(root: Path) -> None:
    """Flush every file and folder under `root` to the disk, `root` last (its bytes, then its names)."""
    for folder, _dirs, names in os.walk(root, topdown=False):
        for name in names:
            _fsync(os.path.join(folder, name), os.O_RDONLY)
        _sync_folder(Path(folder))


def _sync_folder(folder: Path) -> None:
    """Flush `folder`'s entries (the names created, renamed or removed in it) to the disk."""
    _fsync(str(folder), os.O_RDONLY | os.O_DIRECTORY)


def _fsync(path: str, flags: int) -> None:
    # O_NOFOLLOW: a model's files are regular files; a link found here was never written by the store.
    fd = os.open(path, flags | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _clear_stale_temp(folder: Path) -> None:
    """Delete what processes that died mid-add left in ``.tmp``; a live one's work stays."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        pid = entry.name.rsplit("-", 2)[-2] if entry.name.count("-") >= 2 else ""
        if pid.isdigit() and _alive(int(pid)):
            continue
        shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True


def _remove_unlisted(root: Path, listed: set[str]) -> None:
    """Delete every file under `root` not in `listed`, and the folders left empty."""
    for folder, dirs, names in os.walk(root, topdown=False):
        here = Path(folder)
        for name in names:
            path = here / name
            if path.relative_to(root).as_posix() not in listed:
                path.unlink()
        for name in dirs:
            path = here / name
            if path.is_symlink():
                path.unlink()
            elif not any(path.iterdir()):
                path.rmdir()
