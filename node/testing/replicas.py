"""Fake replicas: in-process stand-ins for ``Replica`` and the ``Replicas`` table, with scripted answers.

``FakeReplica`` has what the forwarder reads of a replica (``ServingReplica`` in
``dataplane/forward.py``) and admits a request as ``Replica.call`` does: not serving is 503
(``NotReady``), `capacity` requests already in flight is 429 (``Overloaded``), a request id already
in flight is 409 (``Conflict``), all raised before any output. An admitted request is answered by its
script (``answers.py``) within the request's deadline (``DeadlineExceeded`` past it), and the replica
records what happened to it: admitted, answered, or cancelled (the caller went away, the deadline
passed, or the data plane cancelled it).

``FakeReplicas`` is the table, with the parts of ``Replicas`` (``serving/replicas.py``) that the
forwarder and the data-plane server use: ``get``, ``serve_local``, ``submit_local``, ``queue_of``,
and the gossiped ``entries`` and ``speeds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping
from typing import Any

from ..dataplane.answers import past_deadline
from ..dataplane.server import SERVING_FAILED
from ..errors import Conflict, MeshnodeError, NotReady, Overloaded
from ..load import SpeedMeter
from ..mesh.envelope import Call, Encoded, Envelope, Failure, Reply, decode_envelope, encode_envelope
from ..mesh.replica_state import ReplicaEntry, ReplicaState
from .answers import Answer, replies
from .changes import Changes

__all__ = ["FakeReplica", "FakeReplicas"]

log = logging.getLogger(__name__)


class FakeReplica:
    """One replica, in this process: admits like ``Replica``, answers with `answer`."""

    def __init__(
        self,
        answer: Answer | None = None,
        *,
        state: ReplicaState = ReplicaState.READY,
        slots: int = 1,
        capacity: int = 4,
        service_s: float | None = None,
        hints: tuple[str, ...] = (),
        models: tuple[str, ...] = (),
        pinned: bool = False,
    ) -> None:
        self.answer = answer or replies({"ok": True})
        self.state = state
        self.slots = slots
        self.capacity = capacity
        self.hints = hints
        self.models = models
        self.pinned = pinned
        # What routing reads; set by the test (a fake measures nothing, so its speed stays put).
        self.speed = SpeedMeter()
        self.speed.service_s = service_s
        self.calls: list[Call] = []  # every request admitted, in order
        self.refused: list[Call] = []  # refused at admission: not serving, full, or a duplicate id
        self.answered: list[str] = []  # request ids that got their Reply or Failure
        self.cancelled: list[str] = []  # request ids stopped before that: caller gone, deadline, cancel
        self._running: set[str] = set()
        self._changes = Changes()

    @property
    def serving(self) -> bool:
        """Routed to: ready (not starting, a standby, draining...)."""
        return self.state.serving

    @property
    def in_flight(self) -> int:
        """Requests admitted and not finished."""
        return len(self._running)

    def running(self, request_id: str) -> bool:
        """Whether `request_id` was admitted and has not finished."""
        return request_id in self._running

    def entry(self) -> ReplicaEntry:
        """This replica as its node gossips it (``Replica.entry``)."""
        return ReplicaEntry(
            state=self.state,
            pinned=self.pinned,
            queue=self.in_flight,
            slots=self.slots,
            capacity=self.capacity,
            hints=self.hints,
            models=self.models,
        )

    async def until(self, condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
        """Wait until `condition()` holds, checked after every admission, answer and cancellation."""
        await self._changes.until(condition, timeout_s)

    async def call(self, call: Call) -> AsyncGenerator[Envelope, None]:
        """Admit `call` as ``Replica.call`` does; yield its scripted answer."""
        refusal = self._refusal(call)
        if refusal is not None:
            self.refused.append(call)
            self._changes.notify()
            raise refusal
        rid = call.request_id
        loop = asyncio.get_running_loop()
        deadline = loop.time() + call.timeout_ms / 1000
        self._running.add(rid)
        self.calls.append(call)
        self._changes.notify()
        messages = self.answer(call)
        answered = False
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        message = await anext(messages)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    self.cancelled.append(rid)
                    raise past_deadline(call) from None
                answered = isinstance(message, Reply | Failure)
                if answered:
                    self.answered.append(rid)
                yield message
                if answered:
                    return
        except (GeneratorExit, asyncio.CancelledError):
            if not answered:  # closed after its answer is not a cancellation
                self.cancelled.append(rid)
            raise
        finally:
            self._running.discard(rid)
            with contextlib.suppress(Exception):
                await _close(messages)
            self._changes.notify()

    def submit(
        self, call: Call, on_answer: Callable[[Envelope], None], frame: bytes | None = None
    ) -> asyncio.Task[None]:
        """Admit `call` as ``Replica.submit`` does (a refusal raised here); its last answer, once the
        call ended, to `on_answer` (a deadline as its ``Failure``; a ``Reply`` encoded, as a worker
        wrote it). Cancel the task to cancel it. `frame`, the call as its peer encoded it, must be
        `call`'s: the real replica sends those bytes to its worker."""
        if frame is not None and decode_envelope(frame, max_bytes=len(frame)) != call:
            raise AssertionError(f"the frame given with request {call.request_id} is another call's")
        refusal = self._refusal(call)
        if refusal is not None:
            self.refused.append(call)
            self._changes.notify()
            raise refusal
        return asyncio.ensure_future(_last_answer(self.call(call), call, on_answer))

    def _refusal(self, call: Call) -> MeshnodeError | None:
        if not self.serving:
            return NotReady(f"replica of {call.deployment} is {self.state.value}", retry_after_s=2.0)
        if len(self._running) >= self.capacity:
            return Overloaded(
                f"{call.deployment} has {len(self._running)} requests in flight (capacity {self.capacity})",
                retry_after_s=1.0,
            )
        if call.request_id in self._running:
            return Conflict(
                f"request id {call.request_id!r} is already in flight; send a unique X-Request-Id"
            )
        return None


async def _last_answer(
    messages: AsyncGenerator[Envelope, None], call: Call, on_answer: Callable[[Envelope], None]
) -> None:
    last: Envelope | None = None
    try:
        async with contextlib.aclosing(messages):
            async for message in messages:
                if isinstance(message, Reply | Failure):
                    last = message
                    break
    except MeshnodeError as exc:
        last = Failure(call.request_id, exc.kind, exc.message, exc.retryable)
    except Exception:  # a serving side's own bug, answered as the data-plane server answers one
        log.exception("request %s failed", call.request_id)
        last = Failure(call.request_id, "internal", SERVING_FAILED, False)
    if isinstance(last, Reply) and last.queue is None:  # as the worker wrote it (``serving/in_flight.py``)
        last = Encoded(last.request_id, encode_envelope(last))
    if last is not None:  # after the call ended, as the replica counts it no more (``Submitted``)
        on_answer(last)


async def _close(messages: AsyncIterator[Envelope]) -> None:
    aclose = getattr(messages, "aclose", None)
    if aclose is not None:
        await aclose()


class FakeReplicas:
    """One node's replicas by deployment name: the parts of ``Replicas`` the request path uses."""

    def __init__(self, replicas: Mapping[str, FakeReplica] | None = None) -> None:
        self.table: dict[str, FakeReplica] = dict(replicas or {})

    def get(self, name: str) -> FakeReplica | None:
        """This node's replica of `name`, whatever its state."""
        return self.table.get(name)

    def __getitem__(self, name: str) -> FakeReplica:
        return self.table[name]

    def __iter__(self) -> Iterator[FakeReplica]:
        return iter(list(self.table.values()))

    def serve_local(self, call: Call) -> AsyncIterator[Envelope]:
        """A peer's request for a replica here, as ``Replicas.serve_local`` takes it."""
        replica = self.table.get(call.deployment)
        if replica is None:
            raise NotReady(f"no replica of {call.deployment} here", retry_after_s=1.0)
        return replica.call(call)

    def submit_local(
        self, call: Call, on_answer: Callable[[Envelope], None], frame: bytes | None = None
    ) -> asyncio.Task[None] | None:
        """A peer's request that wants only its last answer, as ``Replicas.submit_local`` takes it."""
        replica = self.table.get(call.deployment)
        return None if replica is None else replica.submit(call, on_answer, frame)

    def queue_of(self, name: str) -> int:
        """Requests in flight at the replica of `name` (0 without one)."""
        replica = self.table.get(name)
        return replica.in_flight if replica is not None else 0

    def entries(self) -> dict[str, ReplicaEntry]:
        """Every replica as this node gossips it (``NodeMeta.replicas``)."""
        return {name: replica.entry() for name, replica in self.table.items()}

    def speeds(self, now: float) -> dict[str, Any]:
        """Measured speed per deployment in gossip form, for the replicas given one."""
        measured = {name: replica.speed.to_wire(now) for name, replica in self.table.items()}
        return {name: speed for name, speed in measured.items() if speed}
