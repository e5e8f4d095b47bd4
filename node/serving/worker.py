"""The replica worker process: the shell around the predictor-running core of ``inference/worker.py``.

The agent's ``Replica`` (``replica.py``) starts ``python -m meshnode.serving.worker`` for each
replica it hosts. The process loads the app and runs ``setup()`` and ``warmup()`` (the core's
``set_up``; exit code ``EXIT_SETUP_FAILED`` if that fails), then says ``Hello`` on its link to the
agent: the end of a socket pair the agent made for it and passed down as an inherited descriptor
(``--link-fd``; ``pipe.py``). From then on every frame from the agent is one envelope
(mesh/envelope.py) handed to the core's ``Worker.handle``, and every envelope the core sends back is
one frame. A second socket (``--handoff-fd``) brings it peers' links, whose calls it answers itself
(``worker_links.py``).

Frames are limited to ``--max-frame-bytes``, the agent's ``max_frame_bytes``, both ways. An answer
over it is never sent: the core reports it as the request's failure. A frame from the agent over it
closes the link before the bytes are held in memory; the worker then exits with ``EXIT_AGENT_GONE``
(as when the agent is gone) and the agent's supervisor starts a fresh one.

Once serving, SIGTERM (the agent stopping the replica) closes the app before the process exits, so
an app that runs something of its own stops it its own way (an external server's container is
stopped through its runtime); the agent SIGKILLs a worker still running after its grace period.

The core lives in ``inference/`` and this shell in ``node/`` because ``inference/`` never imports
``node``; the shell owns everything about the process: its command line, its socket and its exit
with the agent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..event_loop import run_event_loop, settle_heap
from ..inference.worker import EXIT_SETUP_FAILED, Worker, set_up
from ..mesh.envelope import Envelope, EnvelopeError, decode_envelope, encode_envelope
from .pipe import FramePipe, open_pipe
from .worker_links import WorkerLinks
from .worker_process import inheritable_fds

__all__ = ["EXIT_AGENT_GONE", "AgentLink", "FrameTooLarge", "main"]

log = logging.getLogger("meshnode.worker")

# Exit code when the connection to the agent dropped (the supervisor restarts the worker).
EXIT_AGENT_GONE = 4
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class FrameTooLarge(ValueError):
    """An envelope over the frame limit; the agent would drop the connection rather than take it."""


class AgentLink:
    """The worker's end of its link to the agent (``pipe.py``): one envelope per frame, each way."""

    def __init__(self, fd: int, max_frame_bytes: int) -> None:
        self._max_frame_bytes = max_frame_bytes
        self._sock = socket.socket(fileno=fd)
        # Ours alone: an external server this app starts must not hold the agent's link open.
        self._sock.set_inheritable(False)
        self._pipe: FramePipe | None = None

    async def start(self, on_message: Callable[[Envelope], None], on_lost: Callable[[], None]) -> None:
        """Hand every valid envelope from the agent to `on_message`, and call `on_lost` if the link drops."""

        def on_frame(frame: bytes | bytearray) -> None:
            try:
                message = decode_envelope(frame, max_bytes=self._max_frame_bytes)
            except EnvelopeError as exc:
                log.warning("dropped a bad frame from the agent: %s", exc)
                return
            on_message(message)

        self._pipe = await open_pipe(self._sock, on_frame, on_lost, self._max_frame_bytes)

    def send(self, message: Envelope) -> None:
        """Send one envelope now; one msgpack cannot carry or over the limit raises (the core reports it)."""
        assert self._pipe is not None, "start() first"
        frame = encode_envelope(message)
        if len(frame) > self._max_frame_bytes:
            raise FrameTooLarge(
                f"the {type(message).__name__.lower()} is {len(frame)} bytes, over the frame limit of "
                f"{self._max_frame_bytes} bytes (max_frame_bytes)"
            )
        error = self._pipe.send(frame)
        if error is not None:
            log.warning("could not send a %s to the agent: %s", type(message).__name__, error)

    def close(self) -> None:
        """Close the link (what is not sent yet is dropped: the agent fails those requests)."""
        if self._pipe is not None:
            self._pipe.close()
        else:
            self._sock.close()


async def serve(
    app: object, replica_id: str, link_fd: int, max_frame_bytes: int, handoff_fd: int | None = None
) -> None:
    """Say hello, then answer the agent's calls, and those of the peers' links it hands over
    (``worker_links.py``), until the link to it drops or the process is stopped."""
    link = AgentLink(link_fd, max_frame_bytes)
    handoff = None if handoff_fd is None else socket.socket(fileno=handoff_fd)
    peers = WorkerLinks(handoff, lambda message: worker.handle(message), link.send, max_frame_bytes)
    worker = Worker(app, replica_id, peers.send)
    loop = asyncio.get_running_loop()
    lost: asyncio.Future[bool] = loop.create_future()  # True: the agent asked the worker to stop

    def on_lost(stopped: bool = False) -> None:
        if not lost.done():
            lost.set_result(stopped)

    loop.add_signal_handler(signal.SIGTERM, on_lost, True)
    try:
        await link.start(peers.from_agent, on_lost)
        link.send(worker.hello())
        peers.start()
        if not await lost:
            log.error("the connection to the agent dropped (a frame over --max-frame-bytes?); exiting")
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        link.close()
        peers.close()
        worker.close()


def exit_with_parent(parent_pid: int) -> None:
    """Never outlive the agent: a SIGKILLed agent must not leave its models running and holding memory.

    On Linux the kernel sends SIGTERM when the parent dies (PR_SET_PDEATHSIG); everywhere, a daemon
    thread also checks once a second whether we were reparented, which covers other systems and a
    parent that died before the signal was armed.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:
        os._exit(0)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def yield_to_the_agent() -> None:
    """Run this worker's threads under ``SCHED_BATCH`` (Linux): a woken worker never preempts the agent.

    Fair share as before (the policy changes no priority), but on a busy core the agent finishes
    its turn of the loop before the worker it woke runs: its probes and acks never wait behind
    inference, and the frames a turn sends reach the worker together. Measured direct at c=32 on
    one core: +7 % requests/s, worker CPU per request 21 -> 18 µs. Refused (a sandbox), nothing
    changes.
    """
    if hasattr(os, "SCHED_BATCH"):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))  # 0: this thread, on Linux


async def _run(args: argparse.Namespace) -> int:
    app = set_up(args.app, args.data_dir)
    if app is None:
        return EXIT_SETUP_FAILED
    settle_heap()  # the app and its model are here for the worker's life
    await serve(app, args.replica, args.link_fd, args.max_frame_bytes, args.handoff_fd)
    return EXIT_AGENT_GONE


def main(argv: list[str] | None = None) -> int:
    """Entry point of a replica worker process."""
    parser = argparse.ArgumentParser(prog="meshnode-worker")
    parser.add_argument("--app", required=True, help="app reference: file.py:Class, module:Class, folder")
    parser.add_argument("--replica", required=True, help="replica id")
    parser.add_argument(
        "--link-fd", type=int, required=True, help="this worker's end of its link to the agent"
    )
    parser.add_argument("--handoff-fd", type=int, help="where the agent hands it peers' links (none: never)")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument(
        "--max-frame-bytes", type=int, required=True, help="largest frame accepted (the agent's limit)"
    )
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process is gone")
    args = parser.parse_args(argv)
    yield_to_the_agent()  # first: every thread started later (torch's, the app's) inherits it
    for fd in inheritable_fds():  # leaked to us by the agent's spawn (worker_process.py says how)
        if fd not in (args.link_fd, args.handoff_fd):
            os.close(fd)
    for fd in (args.link_fd, args.handoff_fd):  # ours alone: nothing the app starts may hold them
        if fd is not None:
            os.set_inheritable(fd, False)
    if args.parent_pid is not None:
        exit_with_parent(args.parent_pid)
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(levelname)s worker[{args.replica}]: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per proxied request is noise
    try:
        # uvloop when installed, as the agent: the worker's loop carries every request too.
        return run_event_loop(_run(args), use_uvloop=True)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
