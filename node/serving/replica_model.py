"""A replica's model from the mesh's stores: on this node before the replica's worker starts.

A deployment may name a model of the mesh's model stores (``spec.model``; docs/models.md) instead of
a path on every node. Before each start of its worker, the supervisor (``replica.py``) asks
``ReplicaModel.fetch``: at once when this node's store holds the model, else after this node pulled
it from the peers that hold it (``node/models/pulls.py``, one pull per model per node, shared by
every replica and by ``meshnode models pull``). Meanwhile the replica is ``loading`` and gossips the
share of the model's bytes it has, re-gossiped as the share moves by ``PROGRESS_STEP``.

The worker finds the folder in ``MODEL_DIR_ENV`` (the demo apps read it before their own settings:
the deployment's word wins over the node's). A pull that fails (no live peer holds the model, every
holder failed) counts as a failed start with the reason, so placement moves the replica after
``replica_setup_attempts`` of them, as for an app whose setup fails.

Cancelling a fetch (the replica is stopped) does not cancel the pull: others may wait for it, and
what it has is kept for the next try.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from ..errors import MeshnodeError
from ..inference.model_dir import MODEL_DIR_ENV, MODEL_NAME_ENV
from ..inference.worker import EXIT_SETUP_FAILED
from ..mesh.restarts import WorkerExit

__all__ = ["MODEL_DIR_ENV", "MODEL_NAME_ENV", "PROGRESS_STEP", "ModelSource", "ReplicaModel"]

log = logging.getLogger(__name__)

# Progress is gossiped when it moved this much (each change costs gossip on every node), and
# checked this often while a pull runs.
PROGRESS_STEP = 0.05
_PROGRESS_CHECK_S = 1.0


class StoredModelLike(Protocol):
    """What the store says of a model it holds (``node/models/store.StoredModel``)."""

    @property
    def name(self) -> str: ...

    @property
    def path(self) -> Path: ...


class ProgressLike(Protocol):
    """How far a pull is (``node/models/pulls.PullProgress``)."""

    @property
    def done_bytes(self) -> int: ...

    @property
    def total_bytes(self) -> int: ...


class ModelSource(Protocol):
    """This node's pulls (``node/models/pulls.ModelPulls``)."""

    async def ensure(self, name: str) -> StoredModelLike:
        """The model, held here, pulled first when it is not."""
        ...

    def progress(self, name: str) -> ProgressLike | None:
        """How far the pull of `name` is, None when none runs."""
        ...


class ReplicaModel:
    """The model one replica serves, and how far this node is in getting it."""

    def __init__(self, name: str, source: ModelSource) -> None:
        self.name = name
        self._source = source
        self._gossiped = 0.0

    def progress(self) -> float:
        """The share of the model's bytes this node has while it pulls, 0 to 1 (1 once held)."""
        progress = self._source.progress(self.name)
        if progress is None or progress.total_bytes <= 0:
            return 0.0
        return min(max(progress.done_bytes / progress.total_bytes, 0.0), 1.0)

    async def fetch(self, on_change: Callable[[], None]) -> tuple[dict[str, str], WorkerExit | None]:
        """The worker's environment naming the model's folder, or the failed start a pull ended in.

        `on_change` is called when the progress moved by ``PROGRESS_STEP``, so it is gossiped.
        """
        pull = asyncio.ensure_future(self._source.ensure(self.name))
        try:
            while True:
                done, _ = await asyncio.wait({pull}, timeout=_PROGRESS_CHECK_S)
                if done:
                    break
                if abs(self.progress() - self._gossiped) >= PROGRESS_STEP:
                    self._gossiped = self.progress()
                    on_change()
            stored = pull.result()
        except MeshnodeError as exc:
            log.warning("model %s is not here and cannot be pulled: %s", self.name, exc)
            return {}, WorkerExit(EXIT_SETUP_FAILED, False, None, f"model {self.name}: {exc}")
        finally:
            self._gossiped = 0.0
            if not pull.done():  # cancelled: the pull goes on for whoever else waits on it
                pull.add_done_callback(_retrieve)
        return {MODEL_DIR_ENV: str(stored.path), MODEL_NAME_ENV: stored.name}, None


def _retrieve(task: asyncio.Future[StoredModelLike]) -> None:
    """Read a finished pull's outcome, so nobody is told it was never retrieved."""
    if not task.cancelled():
        task.exception()
