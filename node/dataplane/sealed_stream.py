"""A sealed data-plane link on the event loop: one TCP connection of AEAD frames, either end.

The data plane moves from ZeroMQ to these links (issue 19): ZeroMQ runs its sockets in I/O threads,
and every request forwarded woke them twice on each node, which cost a forwarded request more
than the rest of the hop (``bench/hop_floor.py``). A ``SealedStream`` is an asyncio protocol:
TCP's bytes arrive in ``data_received`` on the loop, are split into frames
(``mesh/stream_frames.py``) and opened (``trust/sealed.py``), and each payload goes to
``on_frame`` at once; ``send`` seals a payload and hands it to the transport, one write.

Life of a link:

- It opens with the handshake of ``trust/sealed.py``: the dialing end names its token by key id
  and proves it, the answering end proves it holds the key gossip announced for it. Until then the
  frame limit is a handshake's size, so a stranger cannot make a node hold more than that. A
  handshake not done within ``handshake_timeout_s`` closes the connection; so does any frame that
  does not open.
- Open, each end sends an empty sealed frame (a heartbeat) when it sent nothing for
  ``heartbeat_interval_s``, and closes the link when it heard nothing for ``heartbeat_timeout_s``:
  a peer that vanished without closing (a cut cable, a frozen process) is noticed in seconds, as
  ZeroMQ's heartbeats did.
- ``send`` refuses (returns why) instead of queueing without bound: when the link is not open,
  or when the peer has not read ``max_buffered_bytes`` already written to it.
- ``on_close`` runs once, with ``opened`` telling a refused handshake from a link that dropped,
  and ``reason`` naming what closed it (``"forged"``, ``"unknown_key"``, ``"frames"``,
  ``"silent"``, ``"handshake_timeout"``, ``"busy"``, ``"lost"``, ``"closed"``: the drop
  counters).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from ..http.corked import CorkedTransport
from ..mesh.stream_frames import FrameError, FrameSplitter, frame_header
from ..trust.sealed import SEAL_TAG_BYTES, ClientHandshake, LinkKeys, SealedError, ServerKeys

__all__ = ["OnClose", "OnFrame", "OnOpen", "SealedStream", "StreamLimits"]

log = logging.getLogger(__name__)

# A handshake frame's largest size (a HELLO is 44 bytes; a proof is a tag): no more is held from a
# peer before it proved it belongs.
_HANDSHAKE_FRAME_BYTES = 64


@dataclass(frozen=True)
class StreamLimits:
    """The bounds of every sealed link (from the agent's config)."""

    max_frame_bytes: int  # a payload's largest size
    max_buffered_bytes: int = 64 * 1024 * 1024  # written and not yet taken by the peer: send refuses past it
    heartbeat_interval_s: float = 1.0  # an idle link sends an empty frame this often
    heartbeat_timeout_s: float = 3.0  # a link that heard nothing this long is closed
    handshake_timeout_s: float = 5.0  # a connection still not open after this is closed


OnOpen = Callable[["SealedStream"], None]
OnFrame = Callable[["SealedStream", bytes], None]
OnClose = Callable[["SealedStream"], None]


def _ignore(_stream: SealedStream) -> None:
    pass


class SealedStream(asyncio.Protocol):
    """One sealed link: dialing (with a ``ClientHandshake``) or answering (with ``ServerKeys``)."""

    def __init__(
        self,
        limits: StreamLimits,
        on_frame: OnFrame,
        *,
        dialing: ClientHandshake | None = None,
        answering: ServerKeys | None = None,
        adopted: tuple[LinkKeys, bytes] | None = None,
        on_open: OnOpen = _ignore,
        on_close: OnClose = _ignore,
    ) -> None:
        if sum(side is not None for side in (dialing, answering, adopted)) != 1:
            raise ValueError("a sealed stream dials, answers, or takes over an open link")
        self._adopted = adopted
        self._limits = limits
        self._on_frame = on_frame
        self._on_open = on_open
        self._on_close = on_close
        self._dialing = dialing
        self._answering = answering
        self._splitter = FrameSplitter(_HANDSHAKE_FRAME_BYTES)
        self._split: list[bytes] = []  # the frames of the bytes being read
        self._opened_up_to = 0  # how many of them were opened
        self._keys: LinkKeys | None = None
        self._transport: CorkedTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._heard = self._spoke = False
        self._silent_beats = 0
        self.heartbeats = 0  # empty frames heard since it opened
        self.link_id = b""  # what its owner calls it
        self.writing_paused = False  # the transport holds more than its high-water mark
        self._writable: asyncio.Event | None = None
        self.opened = False  # the handshake completed
        self.closed = False
        self.reason = ""  # what closed it (see the module docstring), once closed
        self.peer = ""  # host:port of the other end

    # -- the protocol's callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Frames sent in one turn of the loop leave together at its end, in one write: under load a
        # turn answers many requests, and a write per frame would be a system call per frame.
        # (A cast: uvloop's TCP transports are not asyncio.Transport subclasses, but behave as one.)
        self._transport = CorkedTransport(cast(asyncio.Transport, transport), asyncio.get_running_loop())
        if self.closed:  # refused before it started (a listener over its limit)
            self._transport.abort()
            return
        peer = self._transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        loop = asyncio.get_running_loop()
        if self._adopted is not None:  # opened by another process, which handed it here
            self._keys, held = self._adopted
            self._adopted = None
            self._splitter.limit = self._limits.max_frame_bytes + SEAL_TAG_BYTES
            self._open()
            self.data_received(held)
            return
        self._timer = loop.call_later(self._limits.handshake_timeout_s, self._handshake_late)
        if self._dialing is not None:
            self._write(self._dialing.hello())

    def data_received(self, data: bytes) -> None:
        self._heard = True
        try:
            if self.opened:
                keys = self._keys
                assert keys is not None
                self._split, self._opened_up_to = self._splitter.feed(data), 0
                for frame in self._split:
                    payload = keys.receive.open(frame)
                    self._opened_up_to += 1  # the rest is what a hand-over leaves to the new owner
                    if payload:
                        self._on_frame(self, payload)
                    else:
                        self.heartbeats += 1
                    if self.closed:  # the handler closed the link (or handed it over)
                        return
            else:
                self._handshake(data)
        except SealedError as exc:
            self.close(exc.reason, str(exc))
        except FrameError as exc:
            self.close("frames", str(exc))

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self._writable is not None:
            self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.resume_writing()  # nobody waits to write to a closed link
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.closed:
            self.closed = True
            self.reason = "lost"
        self._on_close(self)

    @property
    def reading(self) -> bool:
        """Frames of the bytes being read wait to be handled after the one being handled now."""
        return self._opened_up_to < len(self._split)

    # -- sending -------------------------------------------------------------------------------

    async def drained(self) -> None:
        """Return once the transport took what it held back (below its low-water mark) or closed."""
        while self.writing_paused and not self.closed:
            if self._writable is None:
                self._writable = asyncio.Event()
            self._writable.clear()
            await self._writable.wait()

    def send(self, payload: bytes, *, flush: bool = False) -> str | None:
        """Seal `payload` and write it; None when taken, else why not (nothing was sent).

        It leaves with the other frames of this turn of the loop, at its end; with `flush`, at once
        with them (for a caller that knows nothing more goes on this link this turn)."""
        transport = self._transport
        if not self.opened or self.closed or transport is None:
            return "the link is not open"
        if transport.get_write_buffer_size() > self._limits.max_buffered_bytes:
            return "the peer is not reading what was sent to it"
        if len(payload) > self._limits.max_frame_bytes:
            return f"a frame of {len(payload)} bytes is over the {self._limits.max_frame_bytes} byte limit"
        keys = self._keys
        assert keys is not None
        try:
            sealed = keys.send.seal(payload)
        except SealedError as exc:
            self.close(exc.reason, str(exc))
            return str(exc)
        self._spoke = True
        transport.writelines((frame_header(len(sealed)), sealed))
        if flush:
            transport.flush()
        return None

    def flush(self) -> None:
        """Write what this turn's sends gathered now, not at its end."""
        if self._transport is not None and not self.closed:
            self._transport.flush()

    def pause_reading(self) -> None:
        """Read nothing more until ``resume_reading``: the peer's sends pile up and then refuse."""
        if self._transport is not None and not self.closed:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        """Read again after ``pause_reading``."""
        if self._transport is not None and not self.closed:
            self._transport.resume_reading()

    def hand_over(self) -> tuple[socket.socket, LinkKeys, bytes]:
        """Stop serving this open link here and give up its connection, keys and unread bytes.

        The caller passes them to another process, which resumes the link (``adopted``); this end
        closes without a word to the peer (``on_close`` runs, with reason ``"handed"``)."""
        transport, keys = self._transport, self._keys
        if not self.opened or self.closed or transport is None or keys is None:
            raise ConnectionError("only an open link can be handed over")
        transport.flush()  # every frame sealed here must reach the peer before the new owner's
        if transport.get_write_buffer_size():
            raise ConnectionError("the link has writes the peer has not taken yet")
        transport.pause_reading()
        raw = transport.get_extra_info("socket")
        sock = socket.socket(fileno=os.dup(raw.fileno()))
        # Frames read with the one being handled and not opened yet, then a frame's first bytes.
        unread = self._split[self._opened_up_to :]
        held = b"".join(frame_header(len(frame)) + frame for frame in unread) + self._splitter.take_buffered()
        self.closed = True
        self.reason = "handed"
        transport.abort()  # closes our descriptor only: the connection lives on in the copy
        return sock, keys, held

    def close(self, reason: str = "closed", detail: str = "") -> None:
        """Close the link; `reason` names why (a drop counter). ``on_close`` follows."""
        if self.closed:
            return
        self.closed = True
        self.reason = reason
        if detail:
            log.debug("closing the data-plane link with %s (%s): %s", self.peer or "?", reason, detail)
        if self._transport is not None:
            if reason == "closed":
                self._transport.close()  # ours: what was sent still goes
            else:
                self._transport.abort()  # a bad frame or silence: nothing worth flushing

    # -- internals -----------------------------------------------------------------------------

    def _write(self, body: bytes) -> None:
        assert self._transport is not None
        self._transport.write(frame_header(len(body)) + body)

    def _handshake(self, data: bytes) -> None:
        """Handshake frames one at a time; once open, the rest of `data` as the link's frames."""
        frames = self._splitter.feed(data, max_frames=1)
        while frames and not self.closed:
            self._handshake_frame(frames[0])
            if self.opened:
                self._splitter.limit = self._limits.max_frame_bytes + SEAL_TAG_BYTES
                self.data_received(b"")  # what came behind the last handshake frame
                return
            frames = self._splitter.feed(b"", max_frames=1)

    def _handshake_frame(self, frame: bytes) -> None:
        if self._keys is None:
            if self._answering is not None:  # a HELLO: answer it with a WELCOME and our proof
                welcome, self._keys = self._answering.answer(frame)
                self._write(welcome)
                self._write(self._keys.send.seal(b""))
            else:
                assert self._dialing is not None
                self._keys = self._dialing.welcome(frame)
            return
        if self._keys.receive.open(frame):
            raise SealedError("forged", "a handshake proof that is not empty")
        if self._dialing is not None:
            self._write(self._keys.send.seal(b""))  # our proof, once the server proved itself
        self._open()

    def _open(self) -> None:
        self.opened = True
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self._limits.heartbeat_interval_s, self._beat)
        self._on_open(self)

    def _handshake_late(self) -> None:
        self._timer = None
        if not self.opened:
            self.close("handshake_timeout", f"no handshake within {self._limits.handshake_timeout_s:g} s")

    def _beat(self) -> None:
        """Once per heartbeat interval: speak if we were quiet, close if the peer was."""
        self._timer = None
        if self.closed:
            return
        limits = self._limits
        if self._heard:
            self._silent_beats = 0
        else:
            self._silent_beats += 1
            if self._silent_beats * limits.heartbeat_interval_s >= limits.heartbeat_timeout_s:
                self.close("silent", f"heard nothing for {limits.heartbeat_timeout_s:g} s")
                return
        if not self._spoke:
            self.send(b"")
        self._heard = self._spoke = False
        self._timer = asyncio.get_running_loop().call_later(limits.heartbeat_interval_s, self._beat)
