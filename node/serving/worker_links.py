"""The worker's end of peers' links handed to it: calls answered with no agent in between.

A request forwarded to this node used to cross its agent twice: the agent opened the peer's frame,
sent the call down its pipe to the worker, read the worker's answer and sealed it back to the peer,
two wake-ups and about 30 µs of the agent's CPU per request on a busy core, more than forwarding
cost the entry (issue 19 item 3). Now a peer may ask, on a fresh link, for the worker of one
deployment (``Hello`` naming it); the agent does the link's handshake, as for every link, and hands
the open connection, its keys and its unread bytes to the worker (``handed_links.py``), which
answers that link's calls itself. Only calls that want their last answer alone come this way
(``PeerLinks.final``); streams, progress, jobs and model pulls stay on the agent's link.

What the agent did for these calls, the worker now does, with the same rules:

- **Admission**: at most ``capacity`` calls held (the agent's and the links' together), none whose
  deadline the queue cannot meet (``mesh/queueing.py``), at most ``max_in_flight`` per link; a
  refusal is a retryable ``Failure`` so the peer's router tries elsewhere. A request id already
  held is refused as a conflict.
- **Answers**: each call's ``Reply`` or ``Failure`` goes back on its link with the calls still held
  (``Reply.queue``); a file answer over ``chunk_bytes`` goes in pieces (``mesh/reply_pieces.py``).
- **Deadlines and cancellation**: the peer owns the call's deadline and sends ``Cancel`` when it
  passes or its client goes away; a link that closes cancels its calls.
- **Draining**: when the agent stops the replica it shuts its side of the handoff socket; calls
  then arriving are refused as not ready, and each link closes once its calls are answered.
- **Reports**: the agent still owns the replica's load, speed and hang watch; the worker tells it,
  at most every ``REPORT_S``, the calls it holds from links, the oldest one's time to its deadline,
  how many it answered since the last report and its smoothed service time (``handoff.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..dataplane.sealed_stream import StreamLimits
from ..errors import Conflict, MeshnodeError, NotReady, Overloaded
from ..load import SpeedMeter
from ..mesh.envelope import (
    Call,
    Cancel,
    Envelope,
    EnvelopeError,
    Failure,
    Reply,
    decode_envelope,
    encode_envelope,
)
from ..mesh.queueing import QueueState, admit
from ..mesh.reply_pieces import reply_pieces
from ..mesh.worker_link import worker_bound
from .handoff import HANDOFF_BYTES, Handed, Traced, encode_report, read_handed

__all__ = ["MAX_LINKS", "REPORT_S", "WorkerLinks"]

log = logging.getLogger(__name__)

REPORT_S = 0.02  # the agent hears of a link's calls at most this late
MAX_LINKS = 1024  # links one worker holds at most: more are closed as they come (they fall back)


@dataclass(slots=True)
class _Held:
    """A call from a link, running here."""

    link: Handed
    started: float  # time.monotonic(), as every time here
    deadline: float
    service: bool  # it found a slot free: its time measures service (``counts_as_service``)


class WorkerLinks:
    """Peers' links handed to this worker, and the calls running on them."""

    def __init__(
        self,
        handoff: socket.socket | None,
        handle: Callable[[Envelope], None],
        to_agent: Callable[[Envelope], None],
        max_frame_bytes: int,
    ) -> None:
        self._handoff = handoff
        self._handle = handle  # the core's Worker.handle
        self._to_agent = to_agent
        self._max_frame_bytes = max_frame_bytes
        self._limits = StreamLimits(max_frame_bytes=max_frame_bytes)
        self._held: dict[str, _Held] = {}  # calls from links, by request id
        self._agent_calls: set[str] = set()  # calls from the agent, by request id
        self._orphans: set[str] = set()  # calls of links that closed: their last answers go nowhere
        self._links: set[Handed] = set()
        self._speed = SpeedMeter()
        self._served = 0  # calls answered since the last report
        self._traced: list[Traced] = []  # and their names, when their links were handed with trace
        self._report: asyncio.TimerHandle | None = None
        self.draining = False

    def start(self) -> None:
        """Take links from the agent from now on (none without a handoff socket)."""
        if self._handoff is not None:
            self._handoff.set_inheritable(False)  # ours alone: an app's own server must not hold it
            self._handoff.setblocking(False)
            asyncio.get_running_loop().add_reader(self._handoff.fileno(), self._receive)

    def close(self) -> None:
        """Close every link (their calls are cancelled) and the handoff socket."""
        self._stop_reading()
        for link in list(self._links):
            link.stream.close()
        if self._handoff is not None:
            self._handoff.close()

    # -- the core's answers, and the agent's calls --------------------------------------------

    def from_agent(self, message: Envelope) -> None:
        """A message from the agent's pipe, for the core (its calls are counted as held)."""
        if isinstance(message, Call):
            if message.request_id in self._held or message.request_id in self._orphans:
                self._to_agent(_refusal(message.request_id, _conflict(message.request_id), None))
                return
            self._agent_calls.add(message.request_id)
        self._handle(message)

    def send(self, message: Envelope) -> None:
        """One of the core's messages: to the link its call came on, or else to the agent."""
        rid = message.request_id
        held = self._held.get(rid)
        if held is None:
            if rid in self._orphans:
                if isinstance(message, Reply | Failure):
                    self._orphans.discard(rid)
                return
            if isinstance(message, Reply | Failure):
                self._agent_calls.discard(rid)
            self._to_agent(message)
            return
        if not isinstance(message, Reply | Failure):
            return  # a unary call's progress or chunks: nobody asked for them
        del self._held[rid]
        link = held.link
        link.calls -= 1
        self._answer(link, message, len(self._held) + len(self._agent_calls))
        if isinstance(message, Reply):
            now = time.monotonic()
            self._speed.record(held.started, now, service=held.service)
            self._served += 1
            if link.trace:
                self._traced.append((rid, now - held.started))
        self._changed()
        if self.draining and not link.calls:
            link.stream.close()

    # -- links ---------------------------------------------------------------------------------

    def _receive(self) -> None:
        assert self._handoff is not None
        try:
            data, fds, _flags, _address = socket.recv_fds(self._handoff, HANDOFF_BYTES, 1)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.warning("the agent's handoff socket failed: %s", exc)
            self._drain()
            return
        if not data:  # the agent shut its side: the replica drains
            self._drain()
            return
        handed = read_handed(data, fds, self._limits, self._on_frame, self._closed, self._bound)
        if handed is None:
            log.warning("dropped a link the agent handed over that did not read")
            return
        if self.draining or len(self._links) >= MAX_LINKS:
            handed.sock.close()  # the peer sees it close, and sends its calls to the agent
            return
        self._links.add(handed)
        asyncio.get_running_loop().create_task(self._adopt(handed))

    async def _adopt(self, link: Handed) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(lambda: link.stream, link.sock)
        except OSError as exc:
            log.debug("a handed link from %s closed before it was taken: %s", link.stream.peer, exc)
            self._links.discard(link)

    def _bound(self, link: Handed) -> None:
        """The link is ours: the first frame the peer reads on it from here says so."""
        link.stream.send(encode_envelope(worker_bound()), flush=True)

    def _on_frame(self, link: Handed, payload: bytes) -> None:
        try:
            message = decode_envelope(payload, max_bytes=self._max_frame_bytes)
        except EnvelopeError as exc:
            link.stream.close("frames", f"a frame that is not an envelope: {exc}")
            return
        match message:
            case Call():
                self._start(link, message)
            case Cancel(rid) if (held := self._held.get(rid)) is not None and held.link is link:
                self._handle(message)  # its Failure comes back through send, and frees it
            case Cancel():
                pass  # answered already: the cancel crossed the answer
            case _:
                link.stream.close("frames", f"a {type(message).__name__} is not a request")

    def _start(self, link: Handed, call: Call) -> None:
        rid = call.request_id
        found = len(self._held) + len(self._agent_calls)
        refusal = self._refusal(link, call, found)
        if refusal is not None:
            self._answer(link, _refusal(rid, refusal, found), found)
            return
        now = time.monotonic()
        self._held[rid] = _Held(link, now, now + call.timeout_ms / 1000, found < link.slots)
        link.calls += 1
        self._changed()
        self._handle(call)

    def _refusal(self, link: Handed, call: Call, found: int) -> MeshnodeError | None:
        rid = call.request_id
        if self.draining:
            return NotReady(f"the replica of {call.deployment} is draining", retry_after_s=1.0)
        if rid in self._held or rid in self._agent_calls or rid in self._orphans:
            return _conflict(rid)
        if link.calls >= link.max_in_flight:
            return Overloaded(f"this node already runs {link.max_in_flight} requests for that peer")
        if found < link.slots:
            return None  # a slot is free: admitted, whatever its deadline (``mesh/queueing.admit``)
        queue = QueueState(found, link.slots, link.capacity, self._speed.service_s)
        refused = admit(queue, call.timeout_ms / 1000)
        if refused is not None:
            return Overloaded(refused.explain(call.deployment, queue), retry_after_s=refused.retry_after_s)
        return None

    def _answer(self, link: Handed, message: Reply | Failure, queue: int) -> None:
        """`message` back on `link`, with the calls still held here as its queue."""
        if isinstance(message, Reply):
            message = Reply(message.request_id, message.data, message.content_type, queue)
        else:
            message = Failure(message.request_id, message.kind, message.message, message.retryable, queue)
        try:
            data = message.data if isinstance(message, Reply) else None
            large = isinstance(data, bytes) and len(data) > link.chunk_bytes  # a file: in pieces
            frames = [
                encode_envelope(piece)
                for piece in (reply_pieces(message, link.chunk_bytes) if large else [message])
            ]
        except (TypeError, ValueError) as exc:  # an answer msgpack cannot carry: its failure instead
            text = f"the answer could not be sent: {exc}"
            frames = [encode_envelope(Failure(message.request_id, "internal", text, False, queue))]
        for index, frame in enumerate(frames):
            if len(frame) > self._max_frame_bytes:
                text = f"the answer is {len(frame)} bytes, over the frame limit of {self._max_frame_bytes}"
                frame = encode_envelope(Failure(message.request_id, "internal", text, False, queue))
            # The link's last answer leaves at once, unless more of its frames wait in the bytes
            # being read (calls answered inline): then with theirs, at the end of this turn.
            last = index == len(frames) - 1 and not link.calls and not link.stream.reading
            error = link.stream.send(frame, flush=last)
            if error is not None:
                log.debug("could not answer %s on a peer's link: %s", message.request_id, error)
                return

    def _closed(self, link: Handed) -> None:
        """A link closed: its calls have nowhere to answer, so they stop."""
        self._links.discard(link)
        for rid in [rid for rid, held in self._held.items() if held.link is link]:
            del self._held[rid]
            self._orphans.add(rid)
            self._handle(Cancel(rid))
        self._changed()

    def _drain(self) -> None:
        self.draining = True
        self._stop_reading()
        for link in list(self._links):
            if not link.calls:
                link.stream.close()

    def _stop_reading(self) -> None:
        if self._handoff is not None:
            with contextlib.suppress(ValueError, OSError, RuntimeError):
                asyncio.get_running_loop().remove_reader(self._handoff.fileno())

    # -- reports -------------------------------------------------------------------------------

    def _changed(self) -> None:
        if self._report is None:
            self._report = asyncio.get_running_loop().call_later(REPORT_S, self._send_report)

    def _send_report(self) -> None:
        self._report = None
        now = time.monotonic()
        oldest = min((held.deadline for held in self._held.values()), default=None)
        served, traced, self._served, self._traced = self._served, self._traced, 0, []
        oldest_s = None if oldest is None else oldest - now
        report = encode_report(len(self._held), oldest_s, served, self._speed.service_s, traced)
        assert self._handoff is not None  # reports follow calls, and calls come only from it
        with contextlib.suppress(OSError):  # the agent is gone: the worker exits with its pipe
            self._handoff.send(report)


def _conflict(rid: str) -> Conflict:
    return Conflict(f"request id {rid!r} is already in flight; send a unique X-Request-Id")


def _refusal(rid: str, error: MeshnodeError, queue: int | None) -> Failure:
    return Failure(rid, error.kind, error.message, error.retryable, queue)
