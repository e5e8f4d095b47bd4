"""The agent's end of a worker's handoff socket: peers' links handed down, the worker's reports read.

A ``Replica`` makes one per worker (``handoff.py`` says what crosses the socket). Handing a link
gives the worker the connection (a duplicate of its descriptor), the link's keys and its unread
bytes; the agent keeps nothing of it. What the agent still owns for the calls on handed links, it
learns from the worker's reports: how many the worker holds (the replica's queue, gossiped and
used for admission), when the oldest one's deadline passes (the hang watch), and how long each took
(the replica's measured speed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from ..dataplane.sealed_stream import SealedStream
from ..load import SpeedMeter
from .handoff import HANDOFF_BYTES, encode_handed, read_report

__all__ = ["HandedLinks"]

log = logging.getLogger(__name__)


class HandedLinks:
    """One worker's handoff socket, from the agent's side."""

    def __init__(self, sock: socket.socket, speed: SpeedMeter, deployment: str) -> None:
        self._sock = sock
        self._deployment = deployment
        self._speed = speed  # the replica's: calls on handed links count in its measured speed
        self.in_flight = 0  # calls the worker holds from links, as it last said
        self.oldest_deadline: float | None = None  # loop time the oldest of them is due
        self.bad_reports = 0
        self._reading = False

    def start(self) -> None:
        """Read the worker's reports from now on."""
        self._sock.setblocking(False)
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self._read)
        self._reading = True

    def hand(
        self, stream: SealedStream, *, capacity: int, slots: int, max_in_flight: int, chunk_bytes: int
    ) -> None:
        """Give the open `stream` to the worker; OSError when the worker cannot take it (it is gone)."""
        sock, keys, held = stream.hand_over()
        try:
            trace = log.isEnabledFor(logging.DEBUG)  # the worker names its calls in its reports
            packet = encode_handed(
                keys, held, stream.peer, capacity=capacity, slots=slots,
                max_in_flight=max_in_flight, chunk_bytes=chunk_bytes, trace=trace,
            )  # fmt: skip
            socket.send_fds(self._sock, [packet], [sock.fileno()])
        finally:
            sock.close()  # the worker holds its own copy now (or nobody does: the peer sees it close)

    def hung(self, now: float, grace_s: float) -> bool:
        """Whether a call on a handed link is still running `grace_s` past its deadline."""
        oldest = self.oldest_deadline
        return self.in_flight > 0 and oldest is not None and now > oldest + grace_s

    def drain(self) -> None:
        """Hand no more: the worker refuses calls from now on and closes each link once it is done."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """The worker is gone: nothing it held is in flight any more."""
        self._stop_reading()
        self._sock.close()
        self.in_flight, self.oldest_deadline = 0, None

    def _read(self) -> None:
        try:
            packet = self._sock.recv(HANDOFF_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            packet = b""
        if not packet:  # the worker closed its end: it is exiting
            self._stop_reading()
            return
        report = read_report(packet)
        if report is None:
            self.bad_reports += 1
            if self.bad_reports == 1:
                log.warning("dropped a report from a worker that does not read (%d bytes)", len(packet))
            return
        now = asyncio.get_running_loop().time()
        self.in_flight = report.in_flight
        self.oldest_deadline = None if report.oldest_s is None else now + report.oldest_s
        self._speed.record_many(now, report.served, report.service_s)
        for rid, seconds in report.traced:  # as a request the agent ran for a peer, on its own line
            log.debug(
                "ran request %s of %s for a peer, on its worker's lane (%.1f ms)",
                rid, self._deployment, seconds * 1000, extra={"request_id": rid},
            )  # fmt: skip

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            with contextlib.suppress(ValueError, OSError, RuntimeError):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
