"""This node's replicas: the one table of them, and everything the rest of the agent asks of it.

``Replicas`` owns the map from deployment name to ``Replica`` (``replica.py``): placement
(``deployments.py``) asks it to start, promote, demote or stop one; the forwarder and the data-plane
server ask it for the replica that serves a request here; this node's gossiped metadata asks it for
the entries, speeds, models and hints to announce. Nobody else holds the map, so a replica is added
and removed in one place, and every change is announced once (``on_change``).

A stop drains in the background: the replica keeps its place in the table (state ``draining``) until
its in-flight requests finished, so placement does not start another one meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..config import AgentConfig
from ..dataplane.sealed_stream import SealedStream
from ..errors import MeshnodeError, NotReady
from ..mesh.envelope import Call, Envelope
from ..mesh.replica_state import ReplicaEntry
from ..mesh.replica_view import LocalReplica
from .replica import Replica
from .replica_model import ModelSource, ReplicaModel
from .replica_settings import ReplicaSettings
from .submitted import Submitted

__all__ = ["Replicas"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _SitOut:
    """A deployment this node sits out for a while: its app would not start here."""

    app: str
    until: float
    error: str


@dataclass(frozen=True)
class _Serving:
    """What this node announces about its serving replicas: loaded models and routing hints."""

    models: tuple[str, ...] = ()
    hints: tuple[str, ...] = ()


class Replicas:
    """The replicas this node hosts, by deployment name."""

    def __init__(
        self,
        *,
        node_id: str,
        config: AgentConfig,
        on_change: Callable[[], None],
    ) -> None:
        self._node_id = node_id
        self._data_dir = config.data_dir
        self._settings = ReplicaSettings(
            setup_timeout_s=config.replica_setup_timeout_s,
            queue_size=config.replica_queue_size,
            hang_grace_s=config.replica_hang_grace_s,
            restart_initial_s=config.replica_restart_initial_s,
            restart_max_s=config.replica_restart_max_s,
            setup_attempts=config.replica_setup_attempts,
            failed_hold_s=config.replica_failed_hold_s,
            drain_timeout_s=config.replica_drain_timeout_s,
            max_frame_bytes=config.max_frame_bytes,
        )
        self._on_change = on_change
        # Where replicas of deployments that name a model get it (``use_models``; none: not asked).
        self._models: ModelSource | None = None
        self._model_of: Callable[[str], str | None] = lambda name: None
        self._table: dict[str, Replica] = {}
        self._stopping: dict[str, asyncio.Task[None]] = {}
        # Deployments whose replica failed to start here: placement passes over this node for them.
        self._sit_outs: dict[str, _SitOut] = {}
        self._serving = _Serving()

    # -- reading -------------------------------------------------------------------------------

    def get(self, name: str) -> Replica | None:
        """This node's replica of `name`, whatever its state."""
        return self._table.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._table

    def __iter__(self) -> Iterator[Replica]:
        return iter(list(self._table.values()))

    def local(self, name: str) -> LocalReplica | None:
        """This node's replica of `name` as placement decisions see it (``mesh/replica_view.py``)."""
        replica = self._table.get(name)
        if replica is None:
            return None
        return LocalReplica(replica.entry().state, replica.pinned, replica.in_flight)

    def _replica_model(self, name: str) -> ReplicaModel | None:
        model = self._model_of(name)
        return ReplicaModel(model, self._models) if model is not None and self._models is not None else None

    def stopping(self, name: str) -> bool:
        """Whether this node's replica of `name` is draining to stop."""
        return name in self._stopping

    @property
    def in_flight(self) -> int:
        """Requests admitted by every replica here."""
        return sum(replica.in_flight for replica in self._table.values())

    def queue_of(self, name: str) -> int:
        """Requests in flight at this node's replica of `name` (0 without one)."""
        replica = self._table.get(name)
        return replica.in_flight if replica is not None else 0

    def entry(self, name: str) -> ReplicaEntry | None:
        """This node's entry for `name` as gossiped: its replica's, ``failed`` when it sits it out."""
        replica = self._table.get(name)
        if replica is not None:
            return replica.entry()
        sit_out = self._sit_outs.get(name)
        return ReplicaEntry.failed(sit_out.error) if sit_out is not None else None

    def entries(self) -> dict[str, ReplicaEntry]:
        """Every entry this node gossips (``NodeMeta.replicas``): replicas here, and sit-outs."""
        entries = {name: ReplicaEntry.failed(sit_out.error) for name, sit_out in self._sit_outs.items()}
        entries.update((name, replica.entry()) for name, replica in self._table.items())
        return entries

    def sits_out(self, name: str, app: str) -> bool:
        """Whether this node passes over deployment `name` running `app` (its setup failed here)."""
        sit_out = self._sit_outs.get(name)
        return sit_out is not None and sit_out.app == app

    def speeds(self, now: float) -> dict[str, Any]:
        """Measured speed per deployment, for the ones that have served something."""
        measured = {name: replica.speed.to_wire(now) for name, replica in self._table.items()}
        return {name: speed for name, speed in measured.items() if speed}

    @property
    def models(self) -> tuple[str, ...]:
        """Deployments and models ready here (the union over serving replicas)."""
        return self._serving.models

    @property
    def hints(self) -> tuple[str, ...]:
        """Routing hints of the serving replicas here (the union)."""
        return self._serving.hints

    # -- serving -------------------------------------------------------------------------------

    def serve_local(self, call: Call) -> AsyncIterator[Envelope]:
        """A peer's request for a replica here (it never goes on to a third node)."""
        replica = self._table.get(call.deployment)
        if replica is None:
            raise NotReady(f"no replica of {call.deployment} here", retry_after_s=1.0)
        return replica.call(call)

    def submit_local(
        self, call: Call, on_answer: Callable[[Envelope], None], frame: bytes | None = None
    ) -> Submitted | None:
        """A peer's request that wants only its last answer (`frame`: as the peer encoded it),
        submitted to the replica here (``Replica.submit``); None without one (then ``serve_local``)."""
        replica = self._table.get(call.deployment)
        return None if replica is None else replica.submit(call, on_answer, frame)

    def hand_local(
        self, deployment: str, stream: SealedStream, max_in_flight: int, chunk_bytes: int
    ) -> str | None:
        """Hand a peer's link to the worker of `deployment`'s replica here (``Replica.hand_link``);
        None when done, else why not (the link stays the agent's, unless it closed on the way)."""
        replica = self._table.get(deployment)
        if replica is None:
            return f"no replica of {deployment} here"
        try:
            replica.hand_link(stream, max_in_flight, chunk_bytes)
        except (MeshnodeError, OSError) as exc:
            return str(exc)
        return None

    # -- changing ------------------------------------------------------------------------------

    def use_models(self, source: ModelSource, model_of: Callable[[str], str | None]) -> None:
        """Before a worker starts, get the model its deployment names (`model_of`) from `source`."""
        self._models, self._model_of = source, model_of

    async def start(self, name: str, app: str, *, pinned: bool = False, standby: bool = False) -> Replica:
        """Start a replica of `name` here (returns once its worker is spawning, not ready)."""
        if name in self._table:
            raise RuntimeError(f"a replica of {name} already runs here")
        replica = Replica(
            name,
            app,
            replica_id=f"{name}-{self._node_id[:8]}",
            data_dir=self._data_dir,
            settings=self._settings,
            on_change=self._changed,
            pinned=pinned,
            model=self._replica_model(name),
        )
        replica.standby = standby
        self._table[name] = replica
        await replica.start()
        self._changed()
        return replica

    def set_standby(self, name: str, standby: bool) -> None:
        """Make the replica of `name` a warm backup, or promote it to serving."""
        replica = self._table.get(name)
        if replica is not None:
            replica.set_standby(standby)

    def stop(self, name: str, why: str, then: Callable[[], None] = lambda: None) -> None:
        """Drain and stop the replica of `name` in the background; call `then` once it is gone."""
        replica = self._table.get(name)
        if replica is None or name in self._stopping:
            return
        log.info("stopping the replica of %s here: %s", name, why)

        async def drain_and_remove() -> None:
            try:
                await replica.stop()
            finally:
                if self._table.get(name) is replica:
                    del self._table[name]
                self._stopping.pop(name, None)
                self._changed()
                then()

        self._stopping[name] = asyncio.create_task(drain_and_remove(), name=f"stop-{name}")

    def sit_out(self, name: str, app: str, until: float, error: str) -> None:
        """Pass over `name` running `app` until `until` (loop time): its replica would not start here."""
        self._sit_outs[name] = _SitOut(app, until, error)

    def end_sit_outs(self, now: float) -> bool:
        """Try again the deployments sat out long enough; whether there were any."""
        ended = [name for name, sit_out in self._sit_outs.items() if sit_out.until <= now]
        for name in ended:
            del self._sit_outs[name]
        return bool(ended)

    async def stop_all(self) -> None:
        """Drain and stop every replica (the agent's last step before closing its sockets)."""
        await asyncio.gather(*self._stopping.values(), return_exceptions=True)
        await asyncio.gather(*(replica.stop() for replica in self._table.values()), return_exceptions=True)

    # -- internals -----------------------------------------------------------------------------

    def _changed(self) -> None:
        models: set[str] = set()
        hints: set[str] = set()
        for name, replica in self._table.items():
            if replica.serving:
                models.add(name)
                models.update(replica.models)
                hints.update(replica.hints)
        self._serving = _Serving(tuple(sorted(models)), tuple(sorted(hints)))
        self._on_change()
