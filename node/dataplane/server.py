"""Inbound data plane: the sealed links where peers send requests for this node's replicas.

Each frame is one envelope (``mesh/envelope.py``). A ``Call`` from a peer runs on a replica *here*
(never forwarded again, so a request crosses at most one hop and cannot loop); its ``Chunk``s and its
``Reply`` or ``Failure`` go back to the peer's connection as they come. A ``Cancel`` stops the
request. A call that neither streams nor reports progress is submitted to the replica, which hands
its last answer back by callback (``serving/submitted.py``): no task per request. A file answer
larger than ``chunk_bytes`` leaves in pieces (``mesh/reply_pieces.py``), so it does not hold up
other requests on that connection. A link whose first frame asks for the worker of a deployment
(``mesh/worker_link.py``) is handed to that worker, which serves it from then on
(``serving/worker_links.py``), or declined and served here.

Only members get this far: every connection opens with the sealed handshake (``trust/sealed.py``),
which admits only holders of the mesh's tokens; anyone else's connection is closed before any frame
of it is read, and counted. Hostile or broken input from members never takes the agent down: frames
are validated like membership packets (size, msgpack, version, field types) and bad ones are
dropped and counted by reason on ``/metrics``; each peer may have at most ``max_in_flight_per_peer``
requests running here, the rest are refused as full (retryable, so its router tries elsewhere).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

from ..addresses import listen_tcp
from ..errors import MeshnodeError
from ..logs import set_request_id
from ..mesh.envelope import (
    Attach,
    Call,
    Cancel,
    Chunk,
    Encoded,
    Envelope,
    EnvelopeError,
    Failure,
    Hello,
    Progress,
    RelayCall,
    Reply,
    decode_envelope,
    encode_envelope,
)
from ..mesh.envelope_frames import reply_with_queue
from ..mesh.reply_pieces import reply_pieces
from ..mesh.worker_link import asked_for, declined
from ..trust.sealed import NodeKey, ServerKeys
from .relay import RelayTable
from .sealed_listener import SealedListener
from .sealed_stream import SealedStream, StreamLimits

log = logging.getLogger(__name__)

ServeLocal = Callable[[Call], AsyncIterator[Envelope]]
# Submits a call that wants only its last answer (and the call as the peer encoded it) to the replica
# here, which hands that answer to the callback (``Replica.submit``: a Reply as its worker encoded
# it, ``Encoded``); None when no replica here takes it (the call then goes to ServeLocal).
SubmitLocal = Callable[[Call, Callable[[Envelope], None], bytes], "Cancellable | None"]
QueueOf = Callable[[str], int]
# What a peer is told when serving its request failed here in a way no error of ours names.
SERVING_FAILED = "the serving node failed (see its log)"
# Hands a peer's open link to the worker of a deployment's replica here, with the most calls it may
# hold for that peer and the size of a file answer's pieces; None when done, else why not.
HandLocal = Callable[[str, SealedStream, int, int], "str | None"]
# Sends one envelope on a link; None when taken, else why not.
SendOn = Callable[[bytes], str | None]


class Cancellable(Protocol):
    """A peer's request running here: a task, or a call submitted to a replica."""

    def cancel(self) -> object:
        """Stop it (its answer, if any, never goes back)."""
        ...


class _PeerGone(Exception):
    """The peer of a request went away (or stopped reading): the request stops."""


class DataPlaneServer:
    """Runs peers' requests on this node's replicas."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        serve_local: ServeLocal,
        queue_of: QueueOf,
        max_frame_bytes: int,
        max_in_flight_per_peer: int,
        chunk_bytes: int,
        keys: NodeKey,
        tokens: Sequence[str],
        submit_local: SubmitLocal | None = None,
        hand_local: HandLocal | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._serve_local = serve_local
        self._submit_local = submit_local
        self._queue_of = queue_of
        self._max_frame_bytes = max_frame_bytes
        self._max_in_flight = max_in_flight_per_peer
        self._chunk_bytes = chunk_bytes
        self._key = keys
        # Admits only holders of the mesh's tokens, before a byte of theirs reaches _on_frame.
        self.keys = ServerKeys(keys.secret, tokens)
        self._listener = SealedListener(
            self.keys,
            StreamLimits(max_frame_bytes=max_frame_bytes),
            self._on_frame,
            on_open=self._on_open,
            on_close=self._on_close,
        )
        self._serving: asyncio.Task[int] | None = None
        self._peers: dict[bytes, SealedStream] = {}  # open links, by the id given when they opened
        self._fresh: set[bytes] = set()  # open links that sent no frame yet
        self._peer_ids = itertools.count(1)
        self._running: dict[tuple[bytes, str], Cancellable] = {}
        self._per_peer: dict[bytes, int] = {}
        # Calls for nodes nobody can dial that chose this node as a relay (``relay.py``).
        self.relays = RelayTable(self._send_frame, max_in_flight_per_peer)
        # This node's own links to its relays, when nobody can dial it: calls come down them and
        # their answers go back up (``reverse.py``), by a channel id that is not a ROUTER peer's.
        self._channels: dict[bytes, SendOn] = {}
        self.received = 0
        self.dropped: dict[str, int] = {}
        # Hands a peer's link to the worker of a deployment's replica here (``serving/worker_links.py``).
        self.hand_local = hand_local
        self.handed = 0  # links handed to workers

    def bind(self) -> int:
        """Bind and listen (ConfigError naming --data when the port cannot be had); return the port.

        Links are answered from the event loop's next turn; connections made before wait in the
        listening socket's backlog.
        """
        sock = listen_tcp(self._host, self._port, "--data")
        self._serving = asyncio.get_running_loop().create_task(self._listener.listen_on(sock))
        return int(sock.getsockname()[1])

    @property
    def public_key(self) -> str:
        """This node's data-plane public key, gossiped in its metadata (Z85)."""
        return self._key.public

    @property
    def refused(self) -> dict[str, int]:
        """Connections closed in their handshake, by reason (``sealed_stream.py``)."""
        return self._listener.refused

    @property
    def running(self) -> int:
        """Peers' requests running here now."""
        return len(self._running)

    async def close(self) -> None:
        """Stop receiving and cancel peers' requests still running here."""
        tasks = [task for task in self._running.values() if isinstance(task, asyncio.Task)]
        for key in list(self._running):
            self._cancel(key)
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._serving is not None:
            await self._serving
        await self._listener.close()

    def _on_open(self, stream: SealedStream) -> None:
        stream.link_id = b"peer %d" % next(self._peer_ids)
        self._peers[stream.link_id] = stream
        self._fresh.add(stream.link_id)

    def _on_close(self, stream: SealedStream) -> None:
        peer = stream.link_id
        self._fresh.discard(peer)
        if self._peers.pop(peer, None) is None:
            return
        # Its requests' answers have nowhere to go: stop them now, not at their next answer.
        for key in [key for key in self._running if key[0] == peer]:
            self._cancel(key)
        self.relays.link_lost(peer)

    def _on_frame(self, stream: SealedStream, frame: bytes) -> None:
        self._on_envelope(stream.link_id, frame)

    def _on_envelope(self, peer: bytes, frame: bytes) -> None:
        self.received += 1
        fresh = peer in self._fresh  # its first frame: only then may it ask for a worker's link
        if fresh:
            self._fresh.discard(peer)
        try:
            message = decode_envelope(frame, max_bytes=self._max_frame_bytes)
        except EnvelopeError as exc:
            self._drop("malformed", str(exc))
            return
        match message:
            case Call():
                self._start(peer, message, frame)
            case Cancel(rid):
                if (peer, rid) in self._running:
                    self._cancel((peer, rid))
                else:
                    self.relays.cancel(peer, rid)
            case RelayCall() if peer not in self._channels:
                self.relays.pass_on(peer, message)
            case Attach() if peer not in self._channels:
                self.relays.attach(peer, message)
            case Hello() if fresh and (deployment := asked_for(message)) is not None:
                self._hand_over(peer, deployment)
            case Chunk() | Reply() | Failure() | Progress() if self.relays.answer(peer, message):
                pass
            case _:
                self._drop("unexpected", f"a {type(message).__name__} is not a request")

    def _hand_over(self, peer: bytes, deployment: str) -> None:
        """A peer asks for a link straight to the worker of `deployment`'s replica here."""
        stream = self._peers[peer]
        why = "this node hands no links to its workers"
        if self.hand_local is not None:
            del self._peers[peer]  # the worker's from now on: its closing here cancels nothing
            refused = self.hand_local(deployment, stream, self._max_in_flight, self._chunk_bytes)
            if refused is None:
                self.handed += 1
                return
            if stream.closed:
                return  # lost on the way (the worker went away meanwhile): the peer sees it close
            self._peers[peer], why = stream, refused
        self._send_soon(peer, declined(why))

    def open_channel(self, channel: bytes, send: SendOn) -> None:
        """Serve calls that arrive on a link of this node's own (``on_channel_frames``), answering on it."""
        self._channels[channel] = send

    def close_channel(self, channel: bytes) -> None:
        """That link is gone: stop the calls that came on it (their answers have nowhere to go)."""
        self._channels.pop(channel, None)
        for key in [key for key in self._running if key[0] == channel]:
            self._cancel(key)

    def on_channel_frame(self, channel: bytes, frame: bytes) -> None:
        """An envelope from a link of this node's own: a call or cancel for its replicas."""
        if channel in self._channels:
            self._on_envelope(channel, frame)

    def _start(self, peer: bytes, call: Call, frame: bytes) -> None:
        key = (peer, call.request_id)
        if key in self._running:
            self._send_soon(peer, Failure(call.request_id, "conflict", "request id already running", False))
            return
        if self._per_peer.get(peer, 0) >= self._max_in_flight:
            message = f"this node already runs {self._max_in_flight} requests for that peer"
            self._send_soon(peer, Failure(call.request_id, "overloaded", message, True))
            return
        if self._submit_local is not None and not call.stream and not call.progress:
            # Only its last answer is wanted: the replica hands it over, no task waits for it.
            try:
                submitted = self._submit_local(call, functools.partial(self._answered, peer, call), frame)
            except MeshnodeError as exc:
                queue = self._queue_of(call.deployment)
                self._send_soon(peer, Failure(call.request_id, exc.kind, exc.message, exc.retryable, queue))
                return
            if submitted is not None:
                rid = call.request_id  # no task of its own: the line names its request itself
                log.debug(
                    "running request %s of %s for a peer", rid, call.deployment, extra={"request_id": rid}
                )
                self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
                self._running[key] = submitted
                return
        self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        task = asyncio.create_task(self._run(peer, call), name=f"dataplane-{call.request_id}")
        self._running[key] = task
        task.add_done_callback(lambda _: self._finished(key, task))

    def _answered(self, peer: bytes, call: Call, answer: Envelope) -> None:
        """A submitted call's last answer (the replica counts it no more): back to the peer."""
        rid = call.request_id
        alone = self._per_peer.get(peer, 0) <= 1
        key = (peer, rid)
        self._finished(key, self._running.get(key))
        try:
            for frame in self._answer_frames(call, answer, self._queue_of(call.deployment)):
                self._send_encoded(peer, frame)
        except _PeerGone:
            log.debug("peer of request %s went away before its answer", rid, extra={"request_id": rid})
            return
        except Exception:  # called back from a worker's link: a bug here must not take the link down
            log.exception("answering request %s of a peer failed", rid, extra={"request_id": rid})
            self._send_soon(peer, Failure(rid, "internal", SERVING_FAILED, False))
        stream = self._peers.get(peer)
        if alone and stream is not None:
            stream.flush()  # the only request of that peer here: its answer leaves now

    def _answer_frames(self, call: Call, answer: Envelope, queue: int) -> list[bytes]:
        """`answer` in the frames that take it back to the peer, this node's `queue` in the last."""
        if isinstance(answer, Encoded):  # the worker's Reply: back as it is, with the queue added
            relayed = reply_with_queue(answer.frame, queue)
            if relayed is not None and len(relayed) <= self._chunk_bytes:
                return [relayed]
            # A file to send in pieces (or not the Reply it should be): as any other answer.
            answer = decode_envelope(answer.frame, max_bytes=self._max_frame_bytes)
        match answer:
            case Reply(rid, data, content_type):
                answer = Reply(rid, data, content_type, queue)
            case Failure(rid, kind, text, retryable):
                answer = Failure(rid, kind, text, retryable, queue)
        return [encode_envelope(message) for message in reply_pieces(answer, self._chunk_bytes)]

    def _cancel(self, key: tuple[bytes, str]) -> None:
        """Stop a peer's request running here, and forget it."""
        running = self._running.get(key)
        if running is not None:
            running.cancel()
            self._finished(key, running)

    def _finished(self, key: tuple[bytes, str], running: Cancellable | None) -> None:
        """`running`, the request of `key` (peer, request id), ended: forgotten, once."""
        if running is None or self._running.get(key) is not running:
            return  # forgotten already (cancelled), or another request took its id since
        del self._running[key]
        peer = key[0]
        left = self._per_peer.get(peer, 1) - 1
        if left > 0:
            self._per_peer[peer] = left
        else:
            self._per_peer.pop(peer, None)

    async def _run(self, peer: bytes, call: Call) -> None:
        rid = call.request_id
        # This task is the request's own here: its id goes on every line logged while it runs.
        set_request_id(rid)
        log.debug("running request %s of %s for a peer", rid, call.deployment)
        try:
            async for message in self._serve_local(call):
                # The replica still counts this request: the others are one fewer. (Made anew:
                # dataclasses.replace costs more than the rest of relaying an answer.)
                match message:
                    case Reply(_, data, content_type):
                        queue = max(0, self._queue_of(call.deployment) - 1)
                        message = Reply(rid, data, content_type, queue)
                    case Failure(_, kind, text, retryable):
                        queue = max(0, self._queue_of(call.deployment) - 1)
                        message = Failure(rid, kind, text, retryable, queue)
                for frame in [message] if call.stream else reply_pieces(message, self._chunk_bytes):
                    self._send(peer, frame)
                stream = self._peers.get(peer)
                if stream is None:
                    continue
                if isinstance(message, Reply | Failure) and self._per_peer.get(peer, 0) <= 1:
                    stream.flush()  # the only request of that peer here: its answer leaves now
                if stream.writing_paused:
                    await stream.drained()  # a large answer leaves no faster than the peer reads it
        except MeshnodeError as exc:
            queue = self._queue_of(call.deployment)
            self._send_soon(peer, Failure(rid, exc.kind, exc.message, exc.retryable, queue))
        except _PeerGone:
            log.debug("peer of request %s went away; stopping it", rid)
        except Exception:
            log.exception("request %s from a peer failed", rid)
            queue = self._queue_of(call.deployment)
            self._send_soon(peer, Failure(rid, "internal", SERVING_FAILED, False, queue))

    def _send(self, peer: bytes, message: Envelope) -> None:
        """Send to `peer` now; _PeerGone if it went away (or stopped reading): its request stops."""
        self._send_encoded(peer, encode_envelope(message))

    def _send_encoded(self, peer: bytes, frame: bytes) -> None:
        """``_send`` of an envelope encoded already."""
        error = self._send_frame(peer, frame)
        if error is not None:
            raise _PeerGone(error)

    def _send_frame(self, peer: bytes, frame: bytes) -> str | None:
        channel = self._channels.get(peer)
        if channel is not None:
            return channel(frame)
        stream = self._peers.get(peer)
        if stream is None:
            return "the peer's link is gone"
        return stream.send(frame)

    def _send_soon(self, peer: bytes, message: Envelope) -> None:
        try:
            self._send(peer, message)
        except _PeerGone as exc:
            log.debug("could not refuse a request of a peer that went away: %s", exc)

    def _drop(self, reason: str, detail: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        log.debug("dropped a data-plane frame (%s): %s", reason, detail)


__all__ = ["DataPlaneServer"]
