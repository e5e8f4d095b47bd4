"""A replica's state as the mesh sees it: one lifecycle, one gossiped entry, read one way everywhere.

Every node gossips, per deployment it hosts, a ``ReplicaEntry`` in its metadata
(``NodeMeta.replicas``): the replica's lifecycle state, whether it is pinned, its last error, and
what routing needs (queue, slots, capacity, hints, loaded models). The node's supervisor builds it
(``Replica.entry`` in ``node/serving/replica.py``); routing (``routing.py``), placement decisions
(``replica_view.py``) and the deployments API read it, and only through this type.

The lifecycle, in the order a replica lives it::

    loading ──▶ starting ──▶ ready ◀──▶ standby        (placement promotes a warm backup, or demotes one)
        │           │          │
        ▼           ▼          ▼
      failed ◀──────┘       draining ──▶ stopped

``loading`` comes first only for a deployment that names a model of the mesh's stores which this
node does not hold yet: it is pulling it from peers, and its entry says how far (``progress``).

``failed`` is gossiped for a deployment this node sits out because its replica would not start
here (placement gave it up, or a pinned replica failed its setup ``replica_setup_attempts`` times
and waits before its next try); ``stopped`` is the last state of a replica that is being removed.
A replica ``starting`` again after a failed setup says so (``setup_failures``): a request does not
wait for it as it would for a first start (``replica_view.prospect``).

An entry also says which kinds of request its app serves (``Kind``: embeddings, images, chat,
completions; ``Predictor.serves`` in ``inference/predictor.py`` declares them), so the OpenAI routes
of any node know which deployments answer which route without asking the replicas.

Wire format: a map with the keys of ``ReplicaEntry`` (unchanged since the entries were plain maps, so older
nodes and this one read each other; ``serves`` is sent only when there is one). Entries come from peers, so
decoding is lenient per field and strict on the state: an unknown state (a newer node's) or a malformed
entry makes that replica invisible, never an error; numbers out of range fall back to their defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["KINDS", "MAX_ERROR_CHARS", "Kind", "ReplicaEntry", "ReplicaState", "known_kinds"]

# A replica's last error travels in gossip (``GET /v1/deployments`` and the 503 of a deployment that
# cannot start show it): one line, room for the cause (a file path, a parser's line and column, a
# command's last output) but no tracebacks.
MAX_ERROR_CHARS = 300
# Queue, slots and capacity above this are not believed (a replica admits far fewer requests).
_MAX_COUNT = 1 << 31
_MAX_NAMES = 256
_MAX_NAME_CHARS = 128


class Kind(StrEnum):
    """A kind of request an app serves, named after the OpenAI route that sends it."""

    EMBEDDINGS = "embeddings"
    IMAGES = "images"
    CHAT = "chat"
    COMPLETIONS = "completions"


KINDS: tuple[str, ...] = tuple(kind.value for kind in Kind)


def known_kinds(value: object) -> tuple[str, ...]:
    """The known kinds in `value`, in order, without repeats; a newer node's kinds are dropped."""
    if not isinstance(value, list | tuple) or len(value) > _MAX_NAMES:
        return ()
    return tuple(dict.fromkeys(item for item in value if isinstance(item, str) and item in KINDS))


class ReplicaState(StrEnum):
    """Where a replica is in its life (``GET /v1/deployments`` shows these as ``status``)."""

    LOADING = "loading"
    STARTING = "starting"
    READY = "ready"
    STANDBY = "standby"
    DRAINING = "draining"
    FAILED = "failed"
    STOPPED = "stopped"

    @property
    def serving(self) -> bool:
        """Routed to: ready and not a standby backup."""
        return self is ReplicaState.READY

    @property
    def holds_requests(self) -> bool:
        """Its queue is demand the autoscaler counts: serving, or finishing what it admitted."""
        match self:
            case ReplicaState.READY | ReplicaState.DRAINING:
                return True
            case (
                ReplicaState.LOADING
                | ReplicaState.STARTING
                | ReplicaState.STANDBY
                | ReplicaState.FAILED
                | ReplicaState.STOPPED
            ):
                return False

    @property
    def coming(self) -> bool:
        """Serves now or soon, so a request may wait for it (a cold start)."""
        match self:
            case ReplicaState.LOADING | ReplicaState.STARTING | ReplicaState.READY | ReplicaState.STANDBY:
                return True
            case ReplicaState.DRAINING | ReplicaState.FAILED | ReplicaState.STOPPED:
                return False

    @property
    def counts_as_running(self) -> bool:
        """Counted as one of the deployment's replicas when an autoscaler starts from the mesh."""
        match self:
            case ReplicaState.LOADING | ReplicaState.STARTING | ReplicaState.READY:
                return True
            case ReplicaState.STANDBY | ReplicaState.DRAINING | ReplicaState.FAILED | ReplicaState.STOPPED:
                return False


@dataclass(frozen=True)
class ReplicaEntry:
    """One node's replica of one deployment, as gossiped (``NodeMeta.replicas[name]``)."""

    state: ReplicaState
    # Pinned by ``--deploy`` on its node: placement counts it first and never moves it.
    pinned: bool = False
    # Why it is not serving (setup failed, worker crashed), empty when all is well.
    error: str = ""
    # Requests admitted and not finished; what the worker runs at once; what it admits at most.
    queue: int = 0
    slots: int = 1
    capacity: int = 1
    hints: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    # Setups failed in a row (0 once its worker is ready): a replica starting again after one
    # failed is no cold start worth waiting for.
    setup_failures: int = 0
    # The kinds of request its app serves (``Kind`` values), as its app declared them.
    serves: tuple[str, ...] = ()
    # Whether a job this app ran partly may run again (``Predictor.rerun_safe``; sent only when not).
    rerun_safe: bool = True
    # While ``loading``: the share of its model's bytes this node has so far, 0 to 1 (sent only then).
    progress: float = 0.0

    @property
    def failing(self) -> bool:
        """It failed to start: held as ``failed``, or starting again after its setup failed."""
        return self.state is ReplicaState.FAILED or (
            self.state in (ReplicaState.STARTING, ReplicaState.LOADING) and self.setup_failures > 0
        )

    @classmethod
    def failed(cls, error: str) -> ReplicaEntry:
        """The entry of a deployment this node sits out because its replica would not start."""
        return cls(ReplicaState.FAILED, error=error[:MAX_ERROR_CHARS])

    def to_wire(self) -> dict[str, Any]:
        """A msgpack-ready map (``setup_failures`` and ``serves`` only when set: older nodes lack them)."""
        wire: dict[str, Any] = {
            "state": self.state.value,
            "pinned": self.pinned,
            "error": self.error,
            "queue": self.queue,
            "slots": self.slots,
            "capacity": self.capacity,
            "hints": list(self.hints),
            "models": list(self.models),
        }
        if self.setup_failures:
            wire["setup_failures"] = self.setup_failures
        if self.serves:
            wire["serves"] = list(self.serves)
        if not self.rerun_safe:
            wire["rerun_safe"] = False
        if self.state is ReplicaState.LOADING:
            wire["progress"] = round(self.progress, 4)
        return wire

    @classmethod
    def from_wire(cls, raw: object) -> ReplicaEntry | None:
        """The entry a peer gossiped, or None when it is malformed or in a state unknown here."""
        if not isinstance(raw, Mapping):
            return None
        try:
            state = ReplicaState(str(raw.get("state")))
        except ValueError:
            return None
        error = raw.get("error")
        return cls(
            state=state,
            pinned=raw.get("pinned") is True,
            error=error[:MAX_ERROR_CHARS] if isinstance(error, str) else "",
            queue=_count(raw.get("queue"), 0),
            slots=_count(raw.get("slots"), 1) or 1,
            capacity=_count(raw.get("capacity"), 1),
            setup_failures=_count(raw.get("setup_failures"), 0),
            hints=_names(raw.get("hints")),
            models=_names(raw.get("models")),
            serves=known_kinds(raw.get("serves")),
            rerun_safe=raw.get("rerun_safe") is not False,
            progress=_share(raw.get("progress")),
        )


def _count(value: object, default: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _MAX_COUNT:
        return value
    return default


def _share(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0:
        return float(value)
    return 0.0


def _names(value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or len(value) > _MAX_NAMES:
        return ()
    return tuple(item for item in value if isinstance(item, str) and len(item) <= _MAX_NAME_CHARS)
