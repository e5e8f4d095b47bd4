"""The ``@models`` channel: what this node answers to peers that pull a model it holds.

Pull messages are calls to the reserved name ``MODELS_CHANNEL`` (a deployment name starts with a
letter or digit, so no deployment can take it), which the agent hands here instead of to a replica
(``agent.py``'s ``_serve_local``), as job messages go to the job service. They travel like every
request between members: on the CURVE-authenticated, encrypted data plane, so only members ask.

Two operations, each body checked before anything is read:

- ``{"op": "manifest", "name": NAME}`` -> ``{"name", "digest", "manifest": wire form}`` of the model
  held under NAME (``not_found`` when none is);
- ``{"op": "chunk", "digest": DIGEST, "file": I, "chunk": J}`` -> the bytes of chunk J of file I of
  the model held with that full digest (``not_found`` for a digest not held here, ``bad_request``
  for an index out of the manifest's range). Nothing from the wire becomes a path: the digest picks
  a model of the store's table, the indexes a file of its manifest.

Reads go to a thread and wait their turn in the node's serving ``Throttle``; a chunk is at most
``MAX_CHUNK_BYTES`` (16 MiB), and the data plane sends it as frames of ``forward_chunk_bytes``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from typing import Any

from ..mesh.envelope import Call, Envelope, Failure, Reply
from ..mesh.model_manifest import check_name, is_digest
from .store import ModelStore
from .throttle import Throttle

__all__ = ["MODELS_CHANNEL", "ChunkServer"]

log = logging.getLogger(__name__)

MODELS_CHANNEL = "@models"
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
    ) -> None:
        self._store = store
        self._throttle = throttle
        self._executor = executor  # None: asyncio's default one
        self.served_chunks = 0
        self.served_bytes = 0
        self.refused: dict[str, int] = {}  # by kind, for /metrics

    async def serve_peer(self, call: Call) -> AsyncIterator[Envelope]:
        """Answer one pull message (see the module docstring)."""
        try:
            answer, content_type = await self._answer(call.body)
        except _Refused as exc:
            self.refused[exc.kind] = self.refused.get(exc.kind, 0) + 1
            yield Failure(call.request_id, exc.kind, str(exc), False)
            return
        except OSError as exc:
            # The file changed or vanished on disk under the store: the puller asks another holder.
            log.warning("models: cannot read a chunk for a peer: %s", exc)
            self.refused["unreadable"] = self.refused.get("unreadable", 0) + 1
            yield Failure(call.request_id, "unreadable", f"this node cannot read that chunk: {exc}", False)
            return
        yield Reply(call.request_id, answer, content_type)

    async def _answer(self, body: dict[str, Any]) -> tuple[Any, str]:
        match body.get("op"):
            case "manifest":
                try:
                    name = check_name(body.get("name"))
                except ValueError as exc:
                    raise _Refused("bad_request", str(exc)) from exc
                model = self._store.get(name)
                if model is None:
                    raise _Refused("not_found", f"this node holds no model named {name!r}")
                wire = {"name": name, "digest": model.digest, "manifest": model.manifest.to_wire()}
                return wire, "application/json"
            case "chunk":
                digest, file_index, chunk_index = body.get("digest"), body.get("file"), body.get("chunk")
                if not is_digest(digest) or not _is_index(file_index) or not _is_index(chunk_index):
                    raise _Refused("bad_request", "a chunk request needs a full digest and two indexes")
                assert (
                    isinstance(digest, str) and isinstance(file_index, int) and isinstance(chunk_index, int)
                )
                model = self._store.by_digest(digest)
                if model is None:
                    raise _Refused("not_found", f"this node holds no model with digest {digest[:16]}")
                try:
                    chunk = model.manifest.chunk(file_index, chunk_index)
                except IndexError as exc:
                    raise _Refused("bad_request", str(exc)) from exc
                await self._throttle.take(chunk.length)
                try:
                    data = await asyncio.get_running_loop().run_in_executor(
                        self._executor, self._store.open_chunk, digest, file_index, chunk_index
                    )
                except (KeyError, IndexError) as exc:  # removed or replaced while we waited
                    raise _Refused("not_found", f"the model {digest[:16]} is no longer held here") from exc
                self.served_chunks += 1
                self.served_bytes += len(data)
                return data, "application/octet-stream"
            case op:
                raise _Refused("bad_request", f"unknown models op {op!r}")


def _is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _MAX_INDEX
