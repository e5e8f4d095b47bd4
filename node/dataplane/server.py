"""Inbound data plane: the ZeroMQ ROUTER where peers send requests for this node's replicas.

Each frame is one envelope (``mesh/envelope.py``). A ``Call`` from a peer runs on a replica *here*
(never forwarded again, so a request crosses at most one hop and cannot loop); its ``Chunk``s and its
``Reply`` or ``Failure`` go back to the peer's connection as they come. A ``Cancel`` stops the
request. A file answer larger than ``chunk_bytes`` leaves as several frames (``Chunk``s of bytes,
then a ``Reply`` with the last piece), so it does not hold up other requests on that connection.

Only members get this far: the socket is a CURVE server whose handshake admits only client keys
derived from the mesh's tokens (``trust/curve.py``); anyone else's connection is refused before
any frame of it is read. Hostile or broken input from members never takes the agent down: frames
are validated like membership packets (size, msgpack, version, field types) and bad ones are
dropped and counted by reason on ``/metrics``; each peer may have at most
``max_in_flight_per_peer`` requests running here, the rest are refused as full (retryable, so its
router tries elsewhere).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace

import zmq

from ..errors import MeshnodeError
from ..logs import set_request_id
from ..membership.transport import bind_tcp
from ..mesh.envelope import (
    Attach,
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
from ..trust.curve import ClientCheck, CurveKeys
from .contexts import serving_context
from .frames import FrameReader
from .relay import RelayTable

log = logging.getLogger(__name__)

# A peer this many frames behind in reading its answers has gone away or stalled.
_SEND_HIGH_WATER_MARK = 100_000
ServeLocal = Callable[[Call], AsyncIterator[Envelope]]
QueueOf = Callable[[str], int]


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
        keys: CurveKeys,
        tokens: Sequence[str],
    ) -> None:
        self._host = host
        self._port = port
        self._serve_local = serve_local
        self._queue_of = queue_of
        self._max_frame_bytes = max_frame_bytes
        self._max_in_flight = max_in_flight_per_peer
        self._chunk_bytes = chunk_bytes
        self._ctx = serving_context()
        self._keys = keys
        # Admits only members' client keys, before a byte of theirs reaches _on_frames.
        self.client_check = ClientCheck(self._ctx, tokens)
        self._reader: FrameReader | None = None
        self._running: dict[tuple[bytes, str], asyncio.Task[None]] = {}
        self._per_peer: dict[bytes, int] = {}
        # Calls for nodes nobody can dial that chose this node as a relay (``relay.py``).
        self.relays = RelayTable(self._send_frame, max_in_flight_per_peer)
        # This node's own links to its relays, when nobody can dial it: calls come down them and
        # their answers go back up (``reverse.py``), by a channel id that is not a ROUTER peer's.
        self._channels: dict[bytes, Callable[[list[bytes]], zmq.ZMQError | None]] = {}
        self.received = 0
        self.dropped: dict[str, int] = {}

    def bind(self) -> int:
        """Bind the ROUTER and start receiving; return the bound port."""
        self.client_check.start()
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IPV6, 1)
        sock.curve_server = True
        sock.curve_secretkey = self._keys.secret
        sock.curve_publickey = self._keys.public
        # Sending to a peer that disconnected raises instead of dropping silently: its work stops.
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # A larger frame makes ZeroMQ drop that connection before the bytes are held in memory.
        sock.setsockopt(zmq.MAXMSGSIZE, self._max_frame_bytes)
        # Answers are sent without waiting; a peer this far behind in reading has gone away.
        sock.setsockopt(zmq.SNDHWM, _SEND_HIGH_WATER_MARK)
        port = bind_tcp(sock, self._host, self._port, "--data")
        self._reader = FrameReader(sock, self._on_frames)
        return port

    @property
    def public_key(self) -> str:
        """This node's data-plane CURVE public key, gossiped in its metadata."""
        return self._keys.public.decode("ascii")

    @property
    def running(self) -> int:
        """Peers' requests running here now."""
        return len(self._running)

    async def close(self) -> None:
        """Stop receiving and cancel peers' requests still running here."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._reader is not None:
            self._reader.close()
        self.client_check.stop()
        self._ctx.term()

    def _on_frames(self, frames: list[bytes]) -> None:
        self.received += 1
        if len(frames) != 2:
            self._drop("frames", "expected [peer, envelope]")
            return
        peer, frame = frames
        try:
            message = decode_envelope(frame, max_bytes=self._max_frame_bytes)
        except EnvelopeError as exc:
            self._drop("malformed", str(exc))
            return
        match message:
            case Call():
                self._start(peer, message)
            case Cancel(rid):
                task = self._running.get((peer, rid))
                if task is not None:
                    task.cancel()
                else:
                    self.relays.cancel(peer, rid)
            case RelayCall() if peer not in self._channels:
                self.relays.pass_on(peer, message)
            case Attach() if peer not in self._channels:
                self.relays.attach(peer, message)
            case Chunk() | Reply() | Failure() | Progress() if self.relays.answer(peer, message):
                pass
            case _:
                self._drop("unexpected", f"a {type(message).__name__} is not a request")

    def open_channel(self, channel: bytes, send: Callable[[list[bytes]], zmq.ZMQError | None]) -> None:
        """Serve calls that arrive on a link of this node's own (``on_channel_frames``), answering on it."""
        self._channels[channel] = send

    def close_channel(self, channel: bytes) -> None:
        """That link is gone: stop the calls that came on it (their answers have nowhere to go)."""
        self._channels.pop(channel, None)
        for key, task in list(self._running.items()):
            if key[0] == channel:
                task.cancel()

    def on_channel_frames(self, channel: bytes, frames: list[bytes]) -> None:
        """Frames from a link of this node's own: calls and cancels for its replicas."""
        if channel in self._channels and len(frames) == 1:
            self._on_frames([channel, frames[0]])
        else:
            self._drop("frames", "expected one envelope on a link")

    def _start(self, peer: bytes, call: Call) -> None:
        key = (peer, call.request_id)
        if key in self._running:
            self._send_soon(peer, Failure(call.request_id, "conflict", "request id already running", False))
            return
        if self._per_peer.get(peer, 0) >= self._max_in_flight:
            message = f"this node already runs {self._max_in_flight} requests for that peer"
            self._send_soon(peer, Failure(call.request_id, "overloaded", message, True))
            return
        self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        task = asyncio.create_task(self._run(peer, call), name=f"dataplane-{call.request_id}")
        self._running[key] = task
        task.add_done_callback(lambda _: self._finished(peer, key))

    def _finished(self, peer: bytes, key: tuple[bytes, str]) -> None:
        self._running.pop(key, None)
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
                for frame in self._frames(message, call):
                    self._send(peer, frame)
        except MeshnodeError as exc:
            queue = self._queue_of(call.deployment)
            self._send(peer, Failure(rid, exc.kind, exc.message, exc.retryable, queue))
        except zmq.ZMQError:
            log.debug("peer of request %s went away; stopping it", rid)
        except Exception:
            log.exception("request %s from a peer failed", rid)
            self._send_soon(peer, Failure(rid, "internal", "the serving node failed (see its log)", False))

    def _frames(self, message: Envelope, call: Call) -> list[Envelope]:
        """Split a large file answer into frames (see the module docstring)."""
        match message:
            case Reply(rid, bytes() as data) if len(data) > self._chunk_bytes and not call.stream:
                size, view = self._chunk_bytes, memoryview(data)  # slices of it, not copies
                pieces = [view[i : i + size] for i in range(0, len(data), size)]
                chunks: list[Envelope] = [Chunk(rid, seq, piece) for seq, piece in enumerate(pieces[:-1])]
                return [*chunks, replace(message, data=pieces[-1])]
        return [message]

    def _send(self, peer: bytes, message: Envelope) -> None:
        """Send to `peer` now; ZMQError if it went away (or stopped reading): its request stops."""
        error = self._send_frame(peer, encode_envelope(message))
        if error is not None:
            raise error

    def _send_frame(self, peer: bytes, frame: bytes) -> zmq.ZMQError | None:
        channel = self._channels.get(peer)
        if channel is not None:
            return channel([frame])
        assert self._reader is not None
        return self._reader.send([peer, frame])

    def _send_soon(self, peer: bytes, message: Envelope) -> None:
        try:
            self._send(peer, message)
        except zmq.ZMQError as exc:
            log.debug("could not refuse a request of a peer that went away: %s", exc)

    def _drop(self, reason: str, detail: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        log.debug("dropped a data-plane frame (%s): %s", reason, detail)


__all__ = ["DataPlaneServer"]
