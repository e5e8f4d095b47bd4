"""Async jobs as replicated records: what a job is, how two copies of it merge, and its wire form.

A job is a predict request that the mesh keeps until it has an answer, with no central store: the
node that takes ``POST /v1/jobs/{deployment}`` writes a ``JobRecord`` to the ``k`` nodes that
``job_policy.holders`` names for its id, and answers 202 only once they hold it. Every later change
(running, progress, the result, the webhook's delivery) is a new version of the record, written by
the node that runs the job and copied to the same holders, so any holder can answer for it and
any of them can take it over (``job_policy.py`` decides who runs it).

Merging two copies (``merged``): the one further along wins, by ``(terminal, version, writer)``:

- a terminal status (completed, failed, cancelled) beats every non-terminal one, so a late
  "running" or progress update from a node that was taken over never revives a finished job;
- otherwise the higher ``version`` (each write adds one), then the writer's id, so every node
  picks the same copy whatever order the copies arrive in;
- a cancel request is sticky: ``cancel_requested`` is the OR of both copies, because any node may
  ask for it while the runner writes progress at the same version.

Bounds: every field from the wire is checked by ``JobRecord.from_wire`` (types, lengths, ranges);
a version is at most ``MAX_JOB_VERSION``, far above what a job's writes can reach in its lifetime
(a write per progress step, throttled) and far below an int64. No clock is read here: times are
milliseconds of the wall clock that callers pass in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal, cast

from .types import NodeId

__all__ = [
    "JOB_ID_PATTERN",
    "MAX_JOB_VERSION",
    "Delivery",
    "JobError",
    "JobRecord",
    "JobResult",
    "JobStatus",
    "JobWireError",
    "Progress",
    "StoredFile",
    "merged",
]

# 16 random bytes, base64url without padding: 128 bits, as the image links' tokens.
JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{22}")
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
MAX_JOB_VERSION = 2**40
# What a record may carry, each bounded so a copy always fits a data-plane frame.
MAX_KEY_CHARS = 256  # an Idempotency-Key
MAX_URL_CHARS = 2048  # a webhook URL
MAX_TEXT_CHARS = 4096  # an error message, a delivery's last outcome
MAX_NAME_CHARS = 64  # a deployment, a content type's parts
MAX_STEPS = 2**31
MAX_ATTEMPTS = 100
MAX_MS = 2**53  # milliseconds since the epoch: any wall clock for the next 285,000 years
DeliveryState = Literal["pending", "delivered", "gave_up"]
_DELIVERY_STATES = ("pending", "delivered", "gave_up")


class JobWireError(ValueError):
    """A job record from the wire or the disk is malformed."""


class JobStatus(StrEnum):
    """Where a job is: waiting, running, or one of the three ends."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """Whether the job has ended (nothing runs it again)."""
        return self in _ENDED


_ENDED = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a running job is, as its predictor reports it."""

    step: int
    total: int


@dataclass(frozen=True, slots=True)
class JobError:
    """Why a job failed: the error predict would have answered, with its HTTP status."""

    type: str
    message: str
    status: int


@dataclass(frozen=True, slots=True)
class JobResult:
    """The answer, exactly as predict's body: its bytes and their content type.

    A large answer is not in the record: ``data`` is empty and ``stored`` names the file, by the
    SHA-256 of its bytes, and the nodes that keep it (the one that made it and one other).
    """

    content_type: str
    data: bytes
    stored: StoredFile | None = None


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A result kept as a file on a few nodes, not in every copy of its record."""

    sha256: str
    size: int
    nodes: tuple[NodeId, ...]


@dataclass(frozen=True, slots=True)
class Delivery:
    """The webhook's delivery: tries so far, when the next is due, and how it ended."""

    tries: int = 0
    next_ms: int = 0
    state: DeliveryState = "pending"
    last: str = ""


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job and everything the mesh knows about it; each change is a new version."""

    id: str
    deployment: str
    body: dict[str, Any]
    accept: str
    hint: str | None
    created_ms: int
    max_attempts: int
    timeout_ms: int
    idempotency_key: str | None = None
    webhook: str | None = None
    status: JobStatus = JobStatus.QUEUED
    attempts: int = 0
    runner: NodeId | None = None
    started_ms: int | None = None
    finished_ms: int | None = None
    expires_ms: int | None = None
    progress: Progress | None = None
    error: JobError | None = None
    result: JobResult | None = None
    cancel_requested: bool = False
    delivery: Delivery | None = None
    version: int = 0
    writer: NodeId = field(default=NodeId(""))

    def written(self, writer: NodeId, **changes: Any) -> JobRecord:
        """The next version, written by `writer`, with `changes`."""
        if self.version >= MAX_JOB_VERSION:
            raise OverflowError(f"job {self.id} has reached its last version")
        return replace(self, version=self.version + 1, writer=writer, **changes)

    def to_wire(self) -> dict[str, Any]:
        """A msgpack-able dict (also what sqlite keeps, packed)."""
        return {
            "id": self.id,
            "deployment": self.deployment,
            "body": self.body,
            "accept": self.accept,
            "hint": self.hint,
            "created_ms": self.created_ms,
            "max_attempts": self.max_attempts,
            "timeout_ms": self.timeout_ms,
            "idempotency_key": self.idempotency_key,
            "webhook": self.webhook,
            "status": self.status.value,
            "attempts": self.attempts,
            "runner": self.runner,
            "started_ms": self.started_ms,
            "finished_ms": self.finished_ms,
            "expires_ms": self.expires_ms,
            "progress": None if self.progress is None else [self.progress.step, self.progress.total],
            "error": None if self.error is None else [self.error.type, self.error.message, self.error.status],
            "result": None if self.result is None else _result_wire(self.result),
            "cancel_requested": self.cancel_requested,
            "delivery": None
            if self.delivery is None
            else [self.delivery.tries, self.delivery.next_ms, self.delivery.state, self.delivery.last],
            "version": self.version,
            "writer": self.writer,
        }

    @classmethod
    def from_wire(cls, raw: object) -> JobRecord:
        """The record `raw` describes, every field checked; raises JobWireError."""
        if not isinstance(raw, dict):
            raise JobWireError("a job record must be a map")
        get = _Fields(raw)
        job_id = get.text("id", 22)
        if not JOB_ID_PATTERN.fullmatch(job_id):
            raise JobWireError("job id is malformed")
        status_text = get.text("status", 16)
        try:
            status = JobStatus(status_text)
        except ValueError:
            raise JobWireError(f"unknown job status {status_text!r}") from None
        body = raw.get("body")
        if not isinstance(body, dict) or not all(isinstance(key, str) for key in body):
            raise JobWireError("job body must be a map with text keys")
        return cls(
            id=job_id,
            deployment=get.text("deployment", MAX_NAME_CHARS),
            body=body,
            accept=get.text("accept", MAX_TEXT_CHARS),
            hint=get.optional_text("hint", MAX_TEXT_CHARS),
            created_ms=get.integer("created_ms", MAX_MS),
            max_attempts=get.integer("max_attempts", MAX_ATTEMPTS, low=1),
            timeout_ms=get.integer("timeout_ms", MAX_MS, low=1),
            idempotency_key=get.optional_text("idempotency_key", MAX_KEY_CHARS),
            webhook=get.optional_text("webhook", MAX_URL_CHARS),
            status=status,
            attempts=get.integer("attempts", MAX_ATTEMPTS),
            runner=_node_or_none(get.optional_text("runner", 64)),
            started_ms=get.optional_integer("started_ms", MAX_MS),
            finished_ms=get.optional_integer("finished_ms", MAX_MS),
            expires_ms=get.optional_integer("expires_ms", MAX_MS),
            progress=_progress(raw.get("progress")),
            error=_error(raw.get("error")),
            result=_result(raw.get("result")),
            cancel_requested=get.flag("cancel_requested"),
            delivery=_delivery(raw.get("delivery")),
            version=get.integer("version", MAX_JOB_VERSION),
            writer=NodeId(get.text("writer", 64)),
        )


def merged(mine: JobRecord | None, theirs: JobRecord) -> JobRecord:
    """The copy to keep of two copies of one job (the module docstring has the rule)."""
    if mine is None:
        return theirs
    winner = max(mine, theirs, key=_standing)
    cancel = mine.cancel_requested or theirs.cancel_requested
    return winner if winner.cancel_requested == cancel else replace(winner, cancel_requested=cancel)


def _standing(record: JobRecord) -> tuple[bool, int, str]:
    return (record.status.terminal, record.version, record.writer)


class _Fields:
    """Typed, bounded reads of a wire map's fields."""

    def __init__(self, raw: dict[Any, Any]) -> None:
        self._raw = raw

    def text(self, name: str, max_chars: int) -> str:
        value = self._raw.get(name)
        if not isinstance(value, str) or len(value) > max_chars:
            raise JobWireError(f"{name} must be text of at most {max_chars} characters")
        return value

    def optional_text(self, name: str, max_chars: int) -> str | None:
        return None if self._raw.get(name) is None else self.text(name, max_chars)

    def integer(self, name: str, maximum: int, *, low: int = 0) -> int:
        value = self._raw.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= maximum:
            raise JobWireError(f"{name} must be an integer from {low} to {maximum}")
        return value

    def optional_integer(self, name: str, maximum: int) -> int | None:
        return None if self._raw.get(name) is None else self.integer(name, maximum)

    def flag(self, name: str) -> bool:
        value = self._raw.get(name, False)
        if not isinstance(value, bool):
            raise JobWireError(f"{name} must be true or false")
        return value


def _node_or_none(value: str | None) -> NodeId | None:
    return None if value is None else NodeId(value)


def _parts(raw: object, count: int, name: str) -> list[Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, list | tuple) or len(raw) != count:
        raise JobWireError(f"{name} must be a list of {count}")
    return list(raw)


def _progress(raw: object) -> Progress | None:
    parts = _parts(raw, 2, "progress")
    if parts is None:
        return None
    get = _Fields({"step": parts[0], "total": parts[1]})
    return Progress(get.integer("step", MAX_STEPS), get.integer("total", MAX_STEPS))


def _error(raw: object) -> JobError | None:
    parts = _parts(raw, 3, "error")
    if parts is None:
        return None
    get = _Fields({"type": parts[0], "message": parts[1], "status": parts[2]})
    return JobError(
        get.text("type", MAX_NAME_CHARS),
        get.text("message", MAX_TEXT_CHARS),
        get.integer("status", 599, low=400),
    )


def _result_wire(result: JobResult) -> list[Any]:
    stored = result.stored
    if stored is None:
        return [result.content_type, result.data]
    return [result.content_type, result.data, stored.sha256, stored.size, list(stored.nodes)]


def _result(raw: object) -> JobResult | None:
    if isinstance(raw, list | tuple) and len(raw) == 5:
        content_type, data, sha256, size, nodes = raw
        get = _Fields({"sha256": sha256, "size": size})
        if not SHA256_PATTERN.fullmatch(get.text("sha256", 64)):
            raise JobWireError("a stored result's sha256 must be 64 hex digits")
        if not isinstance(nodes, list | tuple) or not 1 <= len(nodes) <= 8:
            raise JobWireError("a stored result names 1 to 8 nodes")
        if not all(isinstance(node, str) and len(node) <= 64 for node in nodes):
            raise JobWireError("a stored result's nodes must be node ids")
        stored = StoredFile(sha256, get.integer("size", MAX_MS), tuple(NodeId(n) for n in nodes))
        parts: list[Any] | None = [content_type, data]
    else:
        stored, parts = None, _parts(raw, 2, "result")
    if parts is None:
        return None
    content_type, data = parts
    if not isinstance(content_type, str) or len(content_type) > MAX_TEXT_CHARS:
        raise JobWireError("result content type must be text")
    if not isinstance(data, bytes):
        raise JobWireError("result data must be bytes")
    return JobResult(content_type, data, stored)


def _delivery(raw: object) -> Delivery | None:
    parts = _parts(raw, 4, "delivery")
    if parts is None:
        return None
    get = _Fields({"tries": parts[0], "next_ms": parts[1], "state": parts[2], "last": parts[3]})
    state = get.text("state", 16)
    if state not in _DELIVERY_STATES:
        raise JobWireError(f"unknown delivery state {state!r}")
    return Delivery(
        get.integer("tries", MAX_ATTEMPTS),
        get.integer("next_ms", MAX_MS),
        cast(DeliveryState, state),
        get.text("last", MAX_TEXT_CHARS),
    )
