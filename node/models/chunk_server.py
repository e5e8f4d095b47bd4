"""The ``@models`` channel: what this node answers to peers that pull a model it holds.

Pull messages are calls to the reserved name ``MODELS_CHANNEL`` (a deployment name starts with a
letter or digit, so no deployment can take it), which the agent hands here instead of to a replica
(``agent.py``'s ``_serve_local``), as job messages go to the job service. They travel like every
request between members: on the authenticated, encrypted data plane, so only members ask.

Two operations, each body checked before anything is read:

- ``{"op": "manifest", "name": NAME}`` -> ``{"name", "digest", "manifest": wire form}`` of the model
  held under NAME (``not_found`` when none is);
- ``{"op": "chunk", "digest": DIGEST, "file": I, "chunk": J}`` -> the bytes of chunk J of file I of
  the model held with that full digest (``not_found`` for a digest not held here, ``bad_request``
  for an index out of the manifest's range). Nothing from the wire becomes a path: the digest picks
  a model of the store's table, the indexes a file of its manifest.

Reads go to a thread. Under a bound the thread also encodes each piece's envelope (``Encoded``):
the event loop only sends it, never allocates and copies a piece (~0.1 ms each, the new pages'
first touch in this virtual machine). A chunk is at most ``MAX_CHUNK_BYTES`` (16 MiB). With the node's serving
``Throttle`` bounded (``model_pull_bytes_per_s``), it leaves as pieces of ``piece_bytes``
(``forward_chunk_bytes``), each read and sent only once the throttle lets its bytes go: the bytes
move at the bound at every moment, not as a chunk at full speed and then a pause. A burst costs the
node that receives it a run of its I/O thread decrypting megabytes, which the kernel may not
preempt for a serving thread before its next tick (docs/benchmarks.md, "Model pulls"); a piece is a
fraction of a millisecond of it. Holding one piece per stream, not the chunk, also bounds what a
slow or greedy puller can make this node keep in memory. Unbounded (a rate of 0), the pull's speed
comes first: the chunk is read at once and the data plane splits it into frames of the same size,
encoded on the loop (the file threads run at nice 19: on a busy core they would hold the pull back).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from ..mesh.envelope import Call, Chunk, Encoded, Envelope, Failure, Reply, encode_envelope
from ..mesh.model_manifest import Chunk as ModelChunk
from ..mesh.model_manifest import check_name, is_digest
from .store import ModelStore
from .throttle import Throttle

__all__ = ["MODELS_CHANNEL", "ChunkServer"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

MODELS_CHANNEL = "@models"
_OCTETS = "application/octet-stream"
# A chunk or file index from the wire: far beyond MAX_CHUNKS and MAX_FILES, far inside msgpack's ints.
_MAX_INDEX = 1 << 31


class _Refused(Exception):
    """A pull message answered with a non-retryable failure of `kind`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class ChunkServer:
    """Answers peers' manifest and chunk requests from this node's model store."""

    def __init__(
        self,
        store: ModelStore,
        throttle: Throttle,
        executor: Executor | None = None,
        *,
        piece_bytes: int = 256 * 1024,
    ) -> None:
        self._store = store
        self._throttle = throttle
        self._executor = executor  # None: asyncio's default one
        self._piece_bytes = max(1, piece_bytes)
        self.served_chunks = 0
        self.served_bytes = 0
        self.refused: dict[str, int] = {}  # by kind, for /metrics

    async def serve_peer(self, call: Call) -> AsyncIterator[Envelope]:
        """Answer one pull message (see the module docstring)."""
        rid = call.request_id
        try:
            match call.body.get("op"):
                case "manifest":
                    yield Reply(rid, self._manifest(call.body), "application/json")
                case "chunk":
                    digest, chunk = self._chunk(call.body)
                    async for envelope in self._send_chunk(rid, digest, chunk):
                        yield envelope
                    self.served_chunks += 1
                case op:
                    raise _Refused("bad_request", f"unknown models op {op!r}")
        except _Refused as exc:
            self.refused[exc.kind] = self.refused.get(exc.kind, 0) + 1
            yield Failure(rid, exc.kind, str(exc), False)
        except OSError as exc:
            # The file changed or vanished on disk under the store: the puller asks another holder.
            log.warning("models: cannot read a chunk for a peer: %s", exc)
            self.refused["unreadable"] = self.refused.get("unreadable", 0) + 1
            yield Failure(rid, "unreadable", f"this node cannot read that chunk: {exc}", False)

    def _manifest(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            name = check_name(body.get("name"))
        except ValueError as exc:
            raise _Refused("bad_request", str(exc)) from exc
        model = self._store.get(name)
        if model is None:
            raise _Refused("not_found", f"this node holds no model named {name!r}")
        return {"name": name, "digest": model.digest, "manifest": model.manifest.to_wire()}

    def _chunk(self, body: dict[str, Any]) -> tuple[str, ModelChunk]:
        """The full digest and the chunk a chunk request names, checked against the store."""
        digest, file_index, chunk_index = body.get("digest"), body.get("file"), body.get("chunk")
        if not is_digest(digest) or not _is_index(file_index) or not _is_index(chunk_index):
            raise _Refused("bad_request", "a chunk request needs a full digest and two indexes")
        assert isinstance(digest, str) and isinstance(file_index, int) and isinstance(chunk_index, int)
        model = self._store.by_digest(digest)
        if model is None:
            raise _Refused("not_found", f"this node holds no model with digest {digest[:16]}")
        try:
            return digest, model.manifest.chunk(file_index, chunk_index)
        except IndexError as exc:
            raise _Refused("bad_request", str(exc)) from exc

    async def _send_chunk(self, rid: str, digest: str, chunk: ModelChunk) -> AsyncIterator[Envelope]:
        """The chunk's bytes: paced pieces under a bound, else all at once (module docstring)."""
        where = (digest, chunk.file_index, chunk.chunk_index)
        if self._throttle.bytes_per_s <= 0:
            # No bound: the pull's speed first. One read, and the data plane splits and encodes the
            # pieces on the loop, at its priority, not at the file threads' nice 19.
            data = await self._in_thread(digest, self._store.open_chunk, *where, 0, chunk.length)
            self.served_bytes += len(data)
            yield Reply(rid, data, _OCTETS)
            return
        for seq, start in enumerate(range(0, max(1, chunk.length), self._piece_bytes)):
            length = min(self._piece_bytes, chunk.length - start)
            await self._throttle.take(length)
            last = start + length >= chunk.length
            piece = await self._in_thread(digest, self._encoded_piece, rid, where, seq, start, length, last)
            self.served_bytes += length
            yield piece

    def _encoded_piece(
        self, rid: str, where: tuple[str, int, int], seq: int, start: int, length: int, last: bool
    ) -> Encoded:
        """One piece read and encoded, in a thread: the loop only sends it (see ``Encoded``)."""
        data = self._store.open_chunk(*where, start, length)
        return Encoded(rid, encode_envelope(Reply(rid, data, _OCTETS) if last else Chunk(rid, seq, data)))

    async def _in_thread(self, digest: str, work: Callable[..., _T], *args: Any) -> _T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)
        except (KeyError, IndexError) as exc:  # removed or replaced while we waited
            raise _Refused("not_found", f"the model {digest[:16]} is no longer held here") from exc


def _is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _MAX_INDEX
