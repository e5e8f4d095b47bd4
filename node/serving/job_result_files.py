"""Large job results between nodes: one copy to another node when a run ends, reads from either.

The node that ran a job keeps a result over ``job_inline_result_bytes`` as a file (``job_files.py``)
and gives one other live node a copy; a node asked for the result reads it from one of the two.
Both travel in pieces of at most ``PIECE_BYTES``, a message each, because a result may be as large
as a data-plane frame (``max_frame_bytes``): sent whole with the message's own fields, it would
overrun the frame, and the peer would drop the link and every call on it. Messages
(``job_peers.JOBS_CHANNEL``):

- ``file_put`` ``{"sha256", "upload", "offset", "size", "data"}``: a piece of upload ``upload``
  (an id the sender draws), in order from offset 0; ``{"ok": true, "kept": bool}``, ``kept`` once
  the node holds the whole file checked against its name (at once when it held it already).
- ``file_get`` ``{"sha256", "offset", "length"}``: ``{"data", "size"}``, or ``{"data": null}`` when
  the node does not keep it. A read that loses its node goes on from the same offset at the other.

A reader checks the whole against its SHA-256 before handing it out. A release before pieces sent
``file_put`` with the whole file and no ``upload``, and ``file_get`` with no ``offset``: both are
still answered (a whole file while it is at most half a frame), and sent while the file fits one
piece.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from ..mesh.jobs import JobResult, StoredFile
from ..mesh.types import NodeId
from .job_files import JobFiles
from .job_peers import JobPeers

__all__ = ["PIECE_BYTES", "ResultFiles"]

log = logging.getLogger(__name__)

# A piece of a result file per message: a round trip each, so a 64 MiB result takes 64, and no
# message holds the link for more than a few milliseconds between serving calls.
PIECE_BYTES = 1024 * 1024

InThread = Callable[[Callable[[], Any]], Awaitable[Any]]


class ResultFiles:
    """Copies of result files to and from peers, in pieces."""

    def __init__(
        self, me: NodeId, files: JobFiles, peers: JobPeers, in_thread: InThread, max_result_bytes: int
    ) -> None:
        self._me = me
        self._files = files
        self._peers = peers
        self._in_thread = in_thread  # the job table's thread: the only one that touches the files
        self._max_result_bytes = max_result_bytes  # a result is at most a frame (max_frame_bytes)
        self._piece_bytes = min(PIECE_BYTES, max_result_bytes // 2)

    async def keep(self, result: JobResult) -> JobResult:
        """Keep a large result as a file here and on one other live node; the result naming them."""
        data = result.data
        sha256 = await self._in_thread(lambda: self._files.put(data))
        nodes = [self._me]
        for node in self._peers.live():
            if node != self._me and await self._send(node, sha256, data):
                nodes.append(node)
                break
        return JobResult(result.content_type, b"", StoredFile(sha256, len(data), tuple(nodes)))

    async def read(self, stored: StoredFile) -> bytes | None:
        """A stored result's bytes, from this node or the ones that keep it; None when none can give
        them whole and matching their SHA-256."""
        sha256 = stored.sha256
        if self._me in stored.nodes and (data := await self._in_thread(lambda: self._files.get(sha256))):
            return bytes(data)
        if stored.size > self._max_result_bytes:
            return None  # no run here makes one this large: a record from a misconfigured peer
        others = [node for node in stored.nodes if node != self._me]
        # Each node's pieces from where the last one stopped; when the whole does not match (one
        # node's copy went bad on its disk), each node's copy alone.
        for sources in (others, *([node] for node in others[1:])):
            data = await self._gather(sources, sha256, stored.size)
            if data is not None:
                return data
        return None

    async def _gather(self, nodes: list[NodeId], sha256: str, size: int) -> bytes | None:
        """The file's pieces from `nodes`, each going on where the last stopped; None unless the
        whole arrives and matches `sha256`."""
        got = bytearray()
        for node in nodes:
            while len(got) < size:
                query = {"op": "file_get", "sha256": sha256, "offset": len(got), "length": self._piece_bytes}
                piece = self._piece_of(await self._peers.ask(node, query), len(got), size)
                if piece is None:
                    break  # this node cannot give the rest: the next goes on from here
                got += piece
        if len(got) != size:
            return None
        if await self._in_thread(lambda: hashlib.sha256(got).hexdigest()) != sha256:
            log.warning("jobs: result %s read from %s does not match its SHA-256", sha256[:12], nodes)
            return None
        return bytes(got)

    async def serve(self, body: dict[str, Any]) -> dict[str, Any]:
        """Answer a peer's ``file_put`` or ``file_get`` (ValueError or KeyError for a bad one)."""
        sha256 = str(body["sha256"])
        if body["op"] == "file_get":
            return await self._give(sha256, body)
        data = body["data"]
        if not isinstance(data, bytes):
            raise ValueError("file data must be bytes")
        if "upload" not in body:  # the whole file in one message
            await self._in_thread(lambda: self._files.put(data, sha256))
            return {"ok": True, "kept": True}
        size = _bounded(body["size"], 1, self._max_result_bytes, "size")
        offset = _bounded(body["offset"], 0, size - 1, "offset")
        if len(data) > self._piece_bytes:
            raise ValueError(f"a piece is at most {self._piece_bytes} bytes")
        if offset == 0 and await self._in_thread(lambda: self._files.has(sha256)):
            return {"ok": True, "kept": True}
        upload = str(body["upload"])
        kept = await self._in_thread(lambda: self._files.receive(upload, sha256, size, offset, data))
        return {"ok": True, "kept": kept}

    async def _give(self, sha256: str, body: dict[str, Any]) -> dict[str, Any]:
        if "offset" not in body:  # a release before pieces asks for the whole file
            data = await self._in_thread(lambda: self._files.get(sha256))
            if data is not None and len(data) > self._max_result_bytes // 2:
                # Whole, its answer could overrun the frame and cost the link: half of one is safe.
                raise ValueError("the file is larger than one message: ask for it in pieces")
            return {"data": data}
        offset = _bounded(body["offset"], 0, self._max_result_bytes, "offset")
        length = _bounded(body["length"], 1, self._piece_bytes, "length")
        found = await self._in_thread(lambda: self._files.read(sha256, offset, length))
        return {"data": None} if found is None else {"data": found[0], "size": found[1]}

    async def _send(self, node: NodeId, sha256: str, data: bytes) -> bool:
        """Copy the file to `node`; whether it keeps it now."""
        if len(data) <= self._piece_bytes:
            body: dict[str, Any] = {"op": "file_put", "sha256": sha256, "data": data}
            return _kept(await self._peers.ask(node, body))
        upload, view = secrets.token_urlsafe(12), memoryview(data)
        for offset in range(0, len(data), self._piece_bytes):
            piece = bytes(view[offset : offset + self._piece_bytes])
            body = {"op": "file_put", "sha256": sha256, "upload": upload, "offset": offset, "size": len(data)}
            answer = await self._peers.ask(node, {**body, "data": piece})
            if not isinstance(answer, dict) or answer.get("ok") is not True:
                return False
            if _kept(answer):
                return True
        return False

    def _piece_of(self, answer: object, offset: int, size: int) -> bytes | None:
        """The piece a ``file_get`` answer holds when it is the next of a file of `size` bytes."""
        if not isinstance(answer, dict) or not isinstance(data := answer.get("data"), bytes):
            return None
        if "size" not in answer:  # a release before pieces: the whole file or nothing
            return data if offset == 0 and len(data) == size else None
        if answer["size"] != size or not 0 < len(data) <= self._piece_bytes or offset + len(data) > size:
            return None
        return data


def _kept(answer: object) -> bool:
    # A release before pieces answers {"ok": true} alone, and only once it keeps the whole file.
    return isinstance(answer, dict) and answer.get("ok") is True and answer.get("kept", True) is True


def _bounded(value: object, low: int, high: int, name: str) -> int:
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}")
    return value
