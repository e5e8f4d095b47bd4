"""Outbound data plane: one multiplexed sealed link per peer, carrying many requests at once.

``PeerLinks.call(node, addr, call)`` sends a ``Call`` envelope to the peer's data-plane server
(``server.py``) and yields what comes back for that request id: ``Chunk``s (and ``Progress`` when
the call asked for it; a peer's progress it did not ask for is dropped here), then a ``Reply``
or a ``Failure``. Requests share the peer's one connection; their frames interleave, and a large file
arrives as several frames that are joined here, so one image never stalls the others.

A bulk transfer (a call whose ``accept`` is ``ACCEPT_BULK``: a model's chunks) gets its answer as the
pieces it travelled in, unjoined, on a second link to the peer: serving never waits behind a pull's
megabytes on one connection.

What the caller (``forward.py``) relies on:

- A request that could not reach the peer (no connection yet within the connect timeout, the
  connection dropped, too many requests already outstanding there, no socket to be had, this agent
  stopping) ends with a *retryable* ``Failure`` before anything was sent or answered: it may run
  elsewhere.
- A connection that drops while a request is outstanding ends it with a retryable ``peer_lost``
  failure; the caller knows whether output had already started and must not be repeated.
- The request's deadline bounds the wait: past it the call raises ``DeadlineExceeded``.
- A caller that stops iterating early (the HTTP client went away) makes the link send ``Cancel``, so
  the work stops on the replica.

A link no call has held for ``forward_link_idle_s`` is closed (``peer_link.py``); the next call to
that peer makes a new one, a handshake away.

Connection state comes from the link itself (``dialer.py``: open, dropped and redialed, or refused
in its handshake), and its heartbeats detect a peer that vanished without closing its connection (a
machine unplugged) in seconds, before the failure detector's verdict.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncGenerator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from ..mesh.bulk_frames import decode_bulk
from ..mesh.envelope import (
    ACCEPT_BULK,
    Call,
    Cancel,
    Chunk,
    Envelope,
    EnvelopeError,
    Failure,
    Progress,
    RelayCall,
    Reply,
    decode_envelope,
    encode_envelope,
)
from ..mesh.types import NodeId
from ..trust.sealed import announced_key
from .answers import Answers, LastAnswer, Sink, last_of, past_deadline, time_out
from .deadline_timer import DeadlineTimer
from .peer_link import Outstanding, PeerLink, PendingCall, QueueReport, close_idle
from .sealed_stream import StreamLimits
from .worker_lanes import WorkerLanes

if TYPE_CHECKING:
    from ..config import AgentConfig

log = logging.getLogger(__name__)

# Idle links are looked for at most this often: one closes up to this late.
_SWEEP_SPACING_S = 1.0


class PeerLinks:
    """Every outbound data-plane connection of this agent, keyed by peer node id."""

    def __init__(
        self,
        *,
        token: str,
        max_frame_bytes: int,
        max_in_flight_per_peer: int,
        connect_timeout_s: float,
        idle_s: float,
    ) -> None:
        # The mesh's primary token: replaced when it changes; links (re)made after use the new one.
        self.token = token
        self._limits = StreamLimits(max_frame_bytes=max_frame_bytes)
        self._links: dict[tuple[NodeId, bool], PeerLink] = {}  # by peer and lane (bulk or not)
        self._max_frame_bytes = max_frame_bytes
        self._max_in_flight = max_in_flight_per_peer
        self._connect_timeout_s = connect_timeout_s
        self._idle_s = idle_s  # a link no call held this long is closed (0: never)
        self._sweep: asyncio.TimerHandle | None = None
        self.dropped: dict[str, int] = {}
        self._reports: dict[tuple[NodeId, str], QueueReport] = {}
        self._lanes = WorkerLanes(self._make_lane)  # links straight to peers' workers
        # Set by ``close``: the context is gone, so no link can be made any more.
        self._closed = False
        self._outstanding = Outstanding()  # calls outstanding per node running them (routing reads it)
        # Every outstanding call's deadline, on one timer: its sink gets None when the time comes.
        self._deadlines: DeadlineTimer[Sink] = DeadlineTimer(time_out)

    def reported_queue(self, node: NodeId, deployment: str, now: float, max_age_s: float) -> int | None:
        """Requests of *other* routers at the peer's replica, as of its last answer to us: its queue
        (``Reply.queue``) less ours, fresher than gossip when we talk to it often, which is when it
        matters. None when older than `max_age_s` or never heard."""
        report = self._reports.get((node, deployment))
        if report is None or now - report.at > max_age_s:
            return None
        return report.others

    @classmethod
    def of(cls, config: AgentConfig, token: str) -> PeerLinks:
        """The links of an agent with `config`'s forwarding settings, holding `token` (primary)."""
        in_flight, connect_s = config.forward_max_in_flight_per_peer, config.forward_connect_timeout_s
        return cls(token=token, max_frame_bytes=config.max_frame_bytes, max_in_flight_per_peer=in_flight,
                   connect_timeout_s=connect_s, idle_s=config.forward_link_idle_s)  # fmt: skip

    def open_links(self) -> dict[str, int]:
        """Links open now, by lane: ``serving``, ``bulk`` and ``worker`` (``/metrics``)."""
        bulk = sum(1 for _, is_bulk in self._links if is_bulk)
        return {"serving": len(self._links) - bulk, "bulk": bulk, "worker": len(self._lanes.links)}

    def in_flight(self) -> Mapping[NodeId, int]:
        """Requests outstanding per node running them: routing's in-flight correction (read-only, live)."""
        return self._outstanding.view

    async def call(
        self, node: NodeId, addr: str, key: str, call: Call, *, to: NodeId | None = None
    ) -> AsyncGenerator[Envelope, None]:
        """Send `call` to the peer at `addr` with data-plane key `key`; yield its envelopes (see above).

        With `to`, the peer is one of `to`'s relays (docs/edge.md): the call goes to node `to`
        through it, and counts as `to`'s.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + call.timeout_ms / 1000
        if self._closed:
            # Requests still arriving over HTTP while the agent stops: none may start here.
            yield Failure(call.request_id, "peer_unreachable", "this node is stopping", True)
            return
        link = self._link(node, addr, key, bulk=call.accept == ACCEPT_BULK)
        if link is None:
            yield Failure(call.request_id, "peer_unreachable", f"{addr} announced no data-plane key", True)
            return
        rid = call.request_id
        link.hold()
        try:
            refusal = await link.refusal(self._max_in_flight, deadline, self._connect_timeout_s)
            if refusal is not None:
                yield Failure(rid, "peer_unreachable", refusal, True)
                return
            pieces = link.bulk
            answers: Answers[Envelope | None] = Answers()
            pending = PendingCall(call.deployment, node if to is None else to, answers)
            timer = self._deadlines.at(deadline, answers)
            link.add(rid, pending)
            self._outstanding.count(pending)
            finished = False
            try:
                # The only call on the link leaves at once: nothing else could go with it this turn.
                frame = encode_envelope(call if to is None else RelayCall(rid, to, call))
                error = link.send(frame, flush=len(link.pending) == 1)
                if error is not None:
                    finished = True
                    yield Failure(rid, "peer_unreachable", f"cannot send to {addr}: {error}", True)
                    return
                parts: list[bytes] = []  # a file answer split into frames, joined before it is yielded
                while True:
                    message = await answers.get()
                    if message is None:
                        raise past_deadline(call)
                    match message:
                        case Chunk(_, _, bytes() as data) if not call.stream and not pieces:
                            parts.append(data)
                            continue
                        case Reply(_, bytes() as data) if parts:
                            message = replace(message, data=b"".join([*parts, data]))
                        case Progress() if not call.progress:
                            continue
                    finished = isinstance(message, Reply | Failure)
                    yield message
                    if finished:
                        return
            finally:
                timer.cancel()
                link.remove(rid)
                self._outstanding.uncount(pending)
                if not finished and not link.closed:
                    # The caller went away or the deadline passed: stop the work on the peer.
                    link.send(encode_envelope(Cancel(rid)))
        finally:
            link.release(loop.time())
            self._settle(link)

    async def final(self, node: NodeId, addr: str, key: str, call: Call) -> Envelope:
        """The last answer of `call`, which neither streams nor reports progress: its Reply or Failure.

        ``call``'s contract (refusals as retryable failures, ``DeadlineExceeded``, a cancelled wait
        cancels the work on the peer), without a stream to step when the link is open and has room.
        """
        loop = asyncio.get_running_loop()
        link = self._lanes.ready(node, addr, key, call.deployment, loop.time()) if not self._closed else None
        if link is None or link.retired or len(link.pending) >= self._max_in_flight:
            link = self._links.get((node, False))  # the peer's agent relays it to its worker
        if (
            link is None
            or link.retired
            or not link.connected
            or (link.addr, link.server_key) != (addr, key)
            or len(link.pending) >= self._max_in_flight
            or self._closed
        ):
            return await last_of(self.call(node, addr, key, call))  # what it takes to get there
        rid = call.request_id
        link.hold()
        answer = LastAnswer()
        pending = PendingCall(call.deployment, node, answer)
        timer = self._deadlines.at(loop.time() + call.timeout_ms / 1000, answer)
        link.add(rid, pending)
        self._outstanding.count(pending)
        finished = False
        try:
            error = link.send(encode_envelope(call), flush=len(link.pending) == 1)
            if error is not None:
                finished = True
                return Failure(rid, "peer_unreachable", f"cannot send to {addr}: {error}", True)
            message = await answer.wait()
            if message is None:
                raise past_deadline(call)
            finished = True
            return message
        finally:
            timer.cancel()
            link.remove(rid)
            self._outstanding.uncount(pending)
            if not finished and not link.closed:
                link.send(encode_envelope(Cancel(rid)))  # the caller went away or the deadline passed
            link.release(loop.time())
            self._settle(link)

    def forget(self, node: NodeId, reason: str) -> None:
        """The peer is dead (or this node stops): fail what is outstanding there (retryable), close links."""
        for key in [key for key in self._reports if key[0] == node]:
            del self._reports[key]
        gone = [self._links.pop((node, bulk), None) for bulk in (False, True)]
        for link in [*gone, *self._lanes.forget(node)]:
            if link is not None:
                for pending in link.pending.values():
                    self._outstanding.uncount(pending)  # though its caller has yet to see it
                link.fail_all("peer_lost", f"{reason}; the request may run elsewhere")
                link.close()
        for other in self._links.values():  # its calls through relays
            for rid, pending in other.pending.items():
                if pending.target == node:
                    pending.queue.put_nowait(
                        Failure(rid, "peer_lost", f"{reason}; the request may run elsewhere", True)
                    )

    def retire(self, node: NodeId) -> None:
        """The peer left the mesh: it drains what it runs, so calls outstanding there wait for their
        answers; no call starts there, and each link closes once no call holds it (or it drops, its
        calls failing as retryable), never redialed."""
        self._reports = {key: report for key, report in self._reports.items() if key[0] != node}
        for (peer, _), link in [*self._links.items(), *self._lanes.links.items()]:
            if peer == node:
                link.retired = True
                self._settle(link)

    def close(self) -> None:
        """Close every link (requests outstanding fail as retryable, later ones too)."""
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
        self._deadlines.close()  # the calls outstanding fail with their links, below
        for node in {node for node, _ in [*self._links, *self._lanes.links]}:
            self.forget(node, "this node is stopping")

    # -- internals -------------------------------------------------------------------------

    def _link(self, node: NodeId, addr: str, key: str, bulk: bool) -> PeerLink | None:
        """The link to `node` on that lane, made when missing; None when `key` is not a key."""
        link = self._links.get((node, bulk))
        if link is not None and (link.addr, link.server_key) != (addr, key):
            # Restarted: on another port, and always with a new key.
            self.forget(node, f"peer restarted ({link.addr} -> {addr})")
            link = None
        if link is None:
            raw_key = announced_key(key)  # decoded once per link, not per call
            if raw_key is None:
                return None
            now = asyncio.get_running_loop().time()
            link = PeerLink(node, addr, key, raw_key, self._token, self._limits, bulk, now, self)
            self._links[(node, bulk)] = link
            if self._sweep is None and self._idle_s > 0:
                self._sweep = asyncio.get_running_loop().call_later(self._idle_s, self._close_idle)
        return link

    def _settle(self, link: PeerLink) -> None:  # a retired link no call holds: closed, forgotten
        if not link.retired or link.users:
            return
        if link.bind is not None:
            self._lanes.dropped(link)
        elif self._links.get((link.node, link.bulk)) is link:
            del self._links[(link.node, link.bulk)]
        link.close()

    def _make_lane(self, node: NodeId, addr: str, key: str, deployment: str) -> PeerLink | None:
        """A worker lane to `node` for `deployment` (``worker_lanes.py``), dialing; None for a bad `key`."""
        raw_key = announced_key(key)
        if raw_key is None:
            return None
        now = asyncio.get_running_loop().time()
        lane = PeerLink(
            node, addr, key, raw_key, self._token, self._limits, False, now, self, bind=deployment
        )
        if self._sweep is None and self._idle_s > 0:
            self._sweep = asyncio.get_running_loop().call_later(self._idle_s, self._close_idle)
        return lane

    def _close_idle(self) -> None:
        """Close the links no call has held for ``idle_s``; look again when the next one will be."""
        now = asyncio.get_running_loop().time()
        self._sweep = None
        next_at = min(
            close_idle(self._links, now, self._idle_s), close_idle(self._lanes.links, now, self._idle_s)
        )
        if next_at < math.inf:
            # Links that went idle together (a listing asked every node) close in one pass, not one
            # pass over every link each.
            next_at = max(next_at, now + min(self._idle_s, _SWEEP_SPACING_S))
            self._sweep = asyncio.get_running_loop().call_at(next_at, self._close_idle)

    def _token(self) -> str:
        return self.token

    def link_frame(self, link: PeerLink, payload: bytes) -> None:
        """An envelope from a peer: an answer to one of the calls outstanding on `link`."""
        try:
            decode = decode_bulk if link.bulk else decode_envelope  # a bulk link's pieces: views
            message = decode(payload, max_bytes=self._max_frame_bytes)
        except EnvelopeError as exc:
            self._count_drop(link, "malformed")
            log.warning("dropped a bad data-plane frame from %s: %s", link.addr, exc)
            return
        if link.bind is not None and not link.connected:  # a worker lane's first frame
            self._lanes.answered(link, message, asyncio.get_running_loop().time())
            return
        if not isinstance(message, Chunk | Reply | Failure | Progress):
            self._count_drop(link, "unexpected")
            return
        pending = link.pending.get(message.request_id)
        if pending is None:
            return
        if isinstance(message, Reply | Failure) and message.queue is not None:
            ours = link.sharing[(pending.deployment, pending.target)]
            report = QueueReport(max(0, message.queue - (ours - 1)), asyncio.get_running_loop().time())
            self._reports[(pending.target, pending.deployment)] = report
        pending.queue.put_nowait(message)

    def link_opened(self, link: PeerLink) -> None:
        """`link`'s handshake completed: calls waiting for it go (a worker lane's, once the worker has it)."""
        if link.bind is not None:
            self._lanes.opened(link)
            return
        link.connected = True
        link.handshake.set()

    def link_dropped(self, link: PeerLink, opened: bool, reason: str) -> None:
        """`link` dropped (it redials), or its handshake was refused (it is forgotten)."""
        link.handshake.set()  # callers waiting for it move on now
        if link.retired:  # the peer left and now is gone: what it had not answered moves on
            link.fail_all("peer_lost", f"{link.addr} left the mesh; the request may run elsewhere")
            link.close()  # never redialed; forgotten once its callers let it go (_settle)
            self._settle(link)
            return
        if link.bind is not None:  # a worker lane is never redialed: the next call asks anew
            link.fail_all("peer_lost", f"the link to {link.addr}'s worker dropped ({reason})")
            self._lanes.dropped(link)
            return
        if opened:
            link.connected = False
            log.debug("the data-plane link to %s dropped (%s)", link.addr, reason)
            link.fail_all("peer_lost", f"the connection to {link.addr} dropped")
            return
        # Not the key gossip announced, or our token is not one it holds (mid-rotation). The next
        # call makes a fresh link, with whatever key and token are current by then.
        self._count_drop(link, "handshake")
        log.warning("data-plane handshake with %s failed (%s)", link.addr, reason)
        if self._links.get((link.node, link.bulk)) is link:
            self.forget(link.node, f"the data-plane handshake with {link.addr} failed")

    def _count_drop(self, link: PeerLink, reason: str) -> None:
        link.dropped += 1
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


__all__ = ["PeerLinks"]
