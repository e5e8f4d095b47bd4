"""A sealed link to one peer that keeps itself dialed, as a ZeroMQ DEALER did.

``Dialer`` dials a peer's data port at once, and again after every drop or failed connect, waiting
``RECONNECT_S`` (doubling up to ``RECONNECT_MAX_S``) between tries, until its owner closes it. Each
connection is a ``SealedStream`` (``sealed_stream.py``) made with the token the owner holds *then*,
so a rotation reaches links as they reconnect. Its owner hears:

- ``on_open()``: a link is open, the first or after a reconnect;
- ``on_frame(payload)``: a payload arrived on it;
- ``on_drop(opened, reason)``: the open link dropped (``opened``), or a connection was made but
  closed before its handshake completed (not ``opened``: the peer refused our token, or is not
  the node whose key gossip announced). A connect that fails (nobody listening yet, a restart) is
  retried without a word: callers waiting for the link time out on their own deadline.

The owner may close the dialer from any of these callbacks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..addresses import parse_host_port
from ..errors import ConfigError
from ..trust.sealed import ClientHandshake
from .sealed_stream import SealedStream, StreamLimits

__all__ = ["RECONNECT_MAX_S", "RECONNECT_S", "Dialer"]

log = logging.getLogger(__name__)

RECONNECT_S = 0.1  # libzmq's default reconnect interval
RECONNECT_MAX_S = 2.0


class Dialer:
    """One peer's data port, dialed until closed; see the module docstring."""

    def __init__(
        self,
        addr: str,
        key: bytes,
        token: Callable[[], str],
        limits: StreamLimits,
        *,
        on_open: Callable[[], None],
        on_frame: Callable[[bytes], None],
        on_drop: Callable[[bool, str], None],
    ) -> None:
        self.addr = addr
        self._key = key
        self._token = token
        self._limits = limits
        self._on_open = on_open
        self._on_frame = on_frame
        self._on_drop = on_drop
        self._backoff_s = RECONNECT_S
        self._stream: SealedStream | None = None  # the connection being made or open
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False
        self._dial()

    @property
    def open(self) -> bool:
        """A link is open now."""
        return self._stream is not None and self._stream.opened and not self._stream.closed

    @property
    def dialing(self) -> bool:
        """A connection is being made or a redial is scheduled (never again once closed and settled)."""
        timer, task = self._timer, self._task
        return (timer is not None and not timer.cancelled()) or (task is not None and not task.done())

    def send(self, payload: bytes, *, flush: bool = False) -> str | None:
        """Send `payload` on the open link (``SealedStream.send``); None when taken, else why not."""
        stream = self._stream
        if stream is None:
            return f"no link to {self.addr}"
        return stream.send(payload, flush=flush)

    def close(self) -> None:
        """Close the link and dial no more."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()
        if self._stream is not None:
            self._stream.close()

    def _dial(self) -> None:
        self._timer = None
        if not self.closed:
            self._task = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        try:
            host, port = parse_host_port(self.addr)
        except ConfigError:
            log.warning("cannot dial the data-plane address %r", self.addr)
            return
        stream = SealedStream(
            self._limits,
            lambda _stream, payload: self._on_frame(payload),
            dialing=ClientHandshake(self._token(), self._key),
            on_open=lambda _stream: self._opened(),
            on_close=self._stream_closed,
        )
        self._stream = stream
        try:
            await asyncio.get_running_loop().create_connection(lambda: stream, host, port)
        except OSError as exc:
            log.debug("cannot connect to %s (%s); trying again", self.addr, exc)
            self._stream = None
            self._retry()

    def _opened(self) -> None:
        self._backoff_s = RECONNECT_S
        self._on_open()

    def _stream_closed(self, stream: SealedStream) -> None:
        if stream is self._stream:
            self._stream = None
        if not self.closed:
            self._on_drop(stream.opened, stream.reason)
            self._retry()  # unless the owner closed it just now

    def _retry(self) -> None:
        if self.closed or self._timer is not None:
            return
        self._timer = asyncio.get_running_loop().call_later(self._backoff_s, self._dial)
        self._backoff_s = min(self._backoff_s * 2, RECONNECT_MAX_S)
