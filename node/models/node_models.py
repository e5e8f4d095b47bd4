"""``NodeModels``: the parts of one node that hold, serve and pull models, built and closed together.

The agent holds one: the store and its service (``service.py``, ``GET /v1/models/store``), the
pulls of models this node lacks (``pulls.py``), and the chunk server that answers peers' pulls
(``chunk_server.py``). Pulls and the chunk server each get their own throttle at
``model_pull_bytes_per_s``: what this node takes and what it gives are bounded apart, so serving a
pull to a peer never eats the budget of this node's own. Their file work (reads, hashes, writes)
runs in threads of its own, never on the event loop, and at the lowest CPU priority (nice
``IO_NICE``, on Linux, where each thread has its own): on a busy core the agent's loop and the
replicas' workers run first, so a pull slows down instead of serving. Measured in
``bench/models.py`` part B.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

from ..config import AgentConfig
from ..mesh.envelope import Call, Envelope
from ..mesh.types import NodeId
from ..serving.job_peers import CallPeer
from .chunk_server import MODELS_CHANNEL, ChunkServer
from .pulls import ModelPulls
from .service import MODEL_STORE_CHANNEL, Members, ModelService
from .store import ModelStore
from .throttle import Throttle

__all__ = ["CHANNELS", "IO_NICE", "IO_THREADS", "NodeModels"]

log = logging.getLogger(__name__)

# The data-plane channels of the models (peers' calls the agent hands here, not to a replica).
CHANNELS = frozenset({MODELS_CHANNEL, MODEL_STORE_CHANNEL})
# Threads for model files: a pull writes while the chunk server reads for peers.
IO_THREADS = 4
# Model file work is background work: the kernel's lowest priority for those threads. On a core
# also serving, a thread at nice 19 gets ~1.5 % of it against one at 0: pulls never stop, and
# requests never wait behind a chunk's hash.
IO_NICE = 19


def lower_priority() -> None:
    """Put the calling thread at ``IO_NICE`` (Linux: a thread's own niceness); elsewhere, nothing."""
    if not sys.platform.startswith("linux"):
        return  # on macOS and Windows setpriority would lower the whole process
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), IO_NICE)
    except OSError as exc:  # a container may forbid it; pulls work as before
        log.debug("models: cannot lower the file threads' priority: %s", exc)


class NodeModels:
    """This node's model store, its pulls and its chunk server."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        me: NodeId,
        members: Members,
        call_peer: CallPeer,
        publish: Callable[[], None],
    ) -> None:
        self._io = ThreadPoolExecutor(
            max_workers=IO_THREADS, thread_name_prefix="model-io", initializer=lower_priority
        )
        self.service = ModelService(
            ModelStore(config.data_dir / "model-store"),
            me=me,
            members=members,
            call_peer=call_peer,
            publish=publish,
        )
        piece = config.forward_chunk_bytes  # what the chunk server sends at a time, paced
        serving = Throttle(config.model_pull_bytes_per_s, burst_bytes=piece)
        self.chunks = ChunkServer(self.service.store, serving, self._io, piece_bytes=piece)
        self.pulls = ModelPulls(
            me=me,
            store=self.service.store,
            members=members,
            call_peer=call_peer,
            throttle=Throttle(config.model_pull_bytes_per_s),
            per_peer=config.model_pull_chunks_per_peer,
            chunk_timeout_s=config.model_pull_chunk_timeout_s,
            on_change=publish,
            executor=self._io,
        )

    async def start(self) -> None:
        """Read the store from disk (before the node's metadata first gossips what it holds)."""
        await asyncio.to_thread(self.service.store.scan)

    def serve_peer(self, call: Call) -> AsyncIterator[Envelope]:
        """A peer's call on one of ``CHANNELS``: a store change, or a manifest or chunk it pulls."""
        if call.deployment == MODEL_STORE_CHANNEL:
            return self.service.serve_peer(call)
        return self.chunks.serve_peer(call)

    async def close(self) -> None:
        """Stop the pulls (what each fetched stays for the next start) and the file threads."""
        await self.pulls.close()
        self._io.shutdown(wait=False)
