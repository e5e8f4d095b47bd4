"""Fake data-plane links: peers served in this process, with a record of what was sent where.

``FakeLinks`` has the interface of ``PeerLinks`` (``dataplane/links.py``; ``Links`` in
``dataplane/forward.py``) and keeps its contract, with a peer's ``DataPlaneServer`` folded in:

- A peer it has no serving side for, or one with ``max_in_flight_per_peer`` requests outstanding,
  refuses at once with a retryable ``peer_unreachable`` ``Failure``, before anything is sent.
- Otherwise the request runs on the peer's serving side (``serve_local`` and ``queue_of``, as
  ``Replicas`` and ``FakeReplicas`` have them) in a task of its own, as the peer's server runs it,
  and what it answers comes back as the server sends it: its ``Reply`` or ``Failure`` carrying the
  replica's other requests (``queue``), a ``MeshnodeError`` as that error's ``Failure``, anything
  else as a non-retryable ``internal`` failure.
- Every envelope is encoded and decoded on the way (``mesh/envelope.py``), so a test sees what the
  wire delivers (lists, not tuples) and data the wire cannot carry fails as it would.
- Past the request's deadline the call raises ``DeadlineExceeded``; a caller that stops early, or a
  deadline that passes, cancels the work on the peer.
- ``drop`` plays a peer that vanished: what was outstanding there fails as retryable ``peer_lost``.

What it does not model: connection set-up time, and splitting large files into frames (the real
pair joins them again, so the caller sees the same envelopes). The conformance test
(``tests/unit/dataplane/test_links_conformance.py``) runs one scenario on this and on the real pair.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

from ..dataplane.answers import Answers, last_of, past_deadline
from ..dataplane.server import SERVING_FAILED
from ..errors import MeshnodeError
from ..mesh.envelope import Call, Chunk, Envelope, Failure, Reply, decode_envelope, encode_envelope
from ..mesh.types import NodeId
from .changes import Changes

__all__ = ["FakeLinks", "Sent", "ServingSide"]

_MAX_FRAME_BYTES = 64 * 1024 * 1024  # AgentConfig.max_frame_bytes


class ServingSide(Protocol):
    """What a peer runs requests with: the two callables its ``DataPlaneServer`` is given."""

    def serve_local(self, call: Call) -> AsyncIterator[Envelope]:
        """Run a request on a replica there."""
        ...

    def queue_of(self, name: str) -> int:
        """Requests in flight at its replica of `name`."""
        ...


@dataclass(frozen=True)
class Sent:
    """One request the links sent: to which peer, at which address."""

    node: NodeId
    addr: str
    call: Call


@dataclass
class _Pending:
    addr: str
    deployment: str
    # Answers in order; None when the deadline passed (as in ``links.py``).
    queue: Answers[Envelope | None] = field(default_factory=Answers)
    task: asyncio.Task[None] | None = None


@dataclass(frozen=True)
class _Report:
    others: int
    at: float


class FakeLinks:
    """Links to peers served in this process (see the module docstring)."""

    def __init__(
        self,
        peers: Mapping[NodeId, ServingSide] | None = None,
        *,
        max_in_flight_per_peer: int = 256,
        max_frame_bytes: int = _MAX_FRAME_BYTES,
    ) -> None:
        # The serving side of every reachable peer; the test adds and removes them.
        self.peers: dict[NodeId, ServingSide] = dict(peers or {})
        self.sent: list[Sent] = []  # every request sent, in order
        self.refused: collections.Counter[NodeId] = collections.Counter()  # refused before sending
        self.cancelled: collections.Counter[NodeId] = collections.Counter()  # stopped early: Cancel sent
        self._max_in_flight = max_in_flight_per_peer
        self._max_frame_bytes = max_frame_bytes
        self._pending: dict[NodeId, dict[str, _Pending]] = {}
        self._reports: dict[tuple[NodeId, str], _Report] = {}
        self._changes = Changes()

    def sent_to(self, node: NodeId) -> list[Call]:
        """The requests sent to `node`, in order."""
        return [sent.call for sent in self.sent if sent.node == node]

    async def until(self, condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
        """Wait until `condition()` holds, checked after every send, answer and cancellation."""
        await self._changes.until(condition, timeout_s)

    # -- PeerLinks' interface ----------------------------------------------------------------

    def reported_queue(self, node: NodeId, deployment: str, now: float, max_age_s: float) -> int | None:
        """Requests of other routers at the peer's replica, as of its last answer (``PeerLinks``)."""
        report = self._reports.get((node, deployment))
        if report is None or now - report.at > max_age_s:
            return None
        return report.others

    def in_flight(self) -> dict[NodeId, int]:
        """Requests outstanding per peer."""
        return {node: len(pending) for node, pending in self._pending.items() if pending}

    async def call(
        self, node: NodeId, addr: str, key: str, call: Call, *, to: NodeId | None = None
    ) -> AsyncGenerator[Envelope, None]:
        """Run `call` on the peer; yield its envelopes (see the module docstring).

        `to` (a node behind this relay, docs/edge.md) is not modelled: such calls are refused.
        """
        if to is not None:
            yield Failure(call.request_id, "peer_unreachable", "the fake network has no relays", True)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + call.timeout_ms / 1000
        rid = call.request_id
        outstanding = self._pending.setdefault(node, {})
        side = self.peers.get(node)
        refusal = self._refusal(side, addr, outstanding)
        if refusal is not None:
            self.refused[node] += 1
            self._changes.notify()
            yield Failure(rid, "peer_unreachable", refusal, True)
            return
        assert side is not None  # a peer without one was refused
        wired = self._through_the_wire(call)
        assert isinstance(wired, Call)
        call = wired
        pending = _Pending(addr, call.deployment)
        outstanding[rid] = pending
        self.sent.append(Sent(node, addr, call))
        pending.task = asyncio.create_task(self._serve(node, side, call, pending), name=f"fake-{rid}")
        self._changes.notify()
        timer = loop.call_at(deadline, pending.queue.put_nowait, None)
        finished = False
        try:
            parts: list[bytes] = []  # a file answer that came in pieces, joined as ``PeerLinks`` does
            while True:
                message = await pending.queue.get()
                if message is None:
                    raise past_deadline(call)
                match message:
                    case Chunk(_, _, bytes() as data) if not call.stream:
                        parts.append(data)
                        continue
                    case Reply(_, bytes() as data, content_type) if parts:
                        message = Reply(rid, b"".join([*parts, data]), content_type)
                finished = isinstance(message, Reply | Failure)
                yield message
                if finished:
                    return
        finally:
            timer.cancel()
            if outstanding.get(rid) is pending:
                del outstanding[rid]
            if not finished:
                self.cancelled[node] += 1
                pending.task.cancel()
            self._changes.notify()

    async def final(self, node: NodeId, addr: str, key: str, call: Call) -> Envelope:
        """The last answer of `call`, which does not stream (``PeerLinks.final``)."""
        return await last_of(self.call(node, addr, key, call))

    def forget(self, node: NodeId, reason: str) -> None:
        """The peer is dead or left: fail what is outstanding there (retryable), as ``PeerLinks`` does."""
        for key in [key for key in self._reports if key[0] == node]:
            del self._reports[key]
        self._fail_all(node, lambda pending: f"{reason}; the request may run elsewhere")
        self._pending.pop(node, None)  # the link is closed: nothing is outstanding on it any more

    def close(self) -> None:
        """Close every link (requests outstanding fail as retryable)."""
        for node in list(self._pending):
            self.forget(node, "this node is stopping")

    # -- faults ------------------------------------------------------------------------------

    def drop(self, node: NodeId) -> None:
        """The peer vanished: outstanding requests fail as ``peer_lost``, later ones find it unreachable."""
        self.peers.pop(node, None)
        self._fail_all(node, lambda pending: f"the connection to {pending.addr} dropped")

    # -- internals -----------------------------------------------------------------------------

    def _refusal(self, side: ServingSide | None, addr: str, outstanding: dict[str, _Pending]) -> str | None:
        if len(outstanding) >= self._max_in_flight:
            return f"{len(outstanding)} requests already outstanding at {addr}"
        if side is None:
            return f"no connection to {addr}"
        return None

    def _fail_all(self, node: NodeId, message: Callable[[_Pending], str]) -> None:
        for rid, pending in self._pending.get(node, {}).items():
            if pending.task is not None:
                pending.task.cancel()  # the peer's work ends with it
            pending.queue.put_nowait(Failure(rid, "peer_lost", message(pending), True))
        self._changes.notify()

    async def _serve(self, node: NodeId, side: ServingSide, call: Call, pending: _Pending) -> None:
        """The peer's server running one request (``DataPlaneServer._run``)."""
        rid = call.request_id
        try:
            async for message in side.serve_local(call):
                if isinstance(message, Reply | Failure):
                    # The replica still counts this request: the others are one fewer.
                    message = replace(message, queue=max(0, side.queue_of(call.deployment) - 1))
                self._answer(node, rid, pending, message)
        except MeshnodeError as exc:
            queue = side.queue_of(call.deployment)
            self._answer(node, rid, pending, Failure(rid, exc.kind, exc.message, exc.retryable, queue))
        except Exception:
            failure = Failure(rid, "internal", SERVING_FAILED, False, side.queue_of(call.deployment))
            self._answer(node, rid, pending, failure)

    def _answer(self, node: NodeId, rid: str, pending: _Pending, message: Envelope) -> None:
        """One envelope back from the peer (``PeerLinks._on_frames``)."""
        message = self._through_the_wire(message)
        if self._pending.get(node, {}).get(rid) is not pending:
            return  # the caller went away: nobody waits for it
        if isinstance(message, Reply | Failure) and message.queue is not None:
            ours = sum(1 for p in self._pending[node].values() if p.deployment == pending.deployment) - 1
            report = _Report(max(0, message.queue - ours), asyncio.get_running_loop().time())
            self._reports[(node, pending.deployment)] = report
        pending.queue.put_nowait(message)
        self._changes.notify()

    def _through_the_wire(self, message: Envelope) -> Envelope:
        return decode_envelope(encode_envelope(message), max_bytes=self._max_frame_bytes)
