"""The replica worker: one process per replica, running one predictor.

The agent starts ``python -m meshnode.inference.worker`` for each replica it hosts. The worker loads
the app, runs ``setup()`` and ``warmup()``, connects a ZeroMQ DEALER to the agent's per-replica
ROUTER (``ipc://``) and says ``Hello``; from then on it answers ``Call`` envelopes (mesh/envelope.py)
with ``Chunk``s and a final ``Reply``, or a ``Failure``. The agent never runs model code: a predictor
that crashes, leaks or saturates the CPU takes down this process only, and the agent restarts it.

Inside the worker, sync ``predict`` runs in a thread pool of ``max_concurrency`` threads (model code
releases the GIL in torch), ``async_predict`` runs as tasks on the worker's loop, and batchable apps
get their concurrent requests gathered by ``Batcher`` into one ``predict_batch`` call.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import inspect
import logging
import mimetypes
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from ..mesh.envelope import (
    Call,
    Cancel,
    Chunk,
    Envelope,
    EnvelopeError,
    Failure,
    Hello,
    Hints,
    Reply,
    decode_envelope,
    encode_envelope,
)
from .batching import Batcher
from .predictor import InvalidRequest

log = logging.getLogger("meshnode.worker")

# Exit codes the supervisor reads: setup failed (do not hot-loop restarting), or a protocol error.
EXIT_SETUP_FAILED = 3
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
MAX_FRAME_BYTES = 64 * 1024 * 1024
JSON = "application/json"


class Worker:
    """Serves one predictor instance over the data-plane envelope."""

    def __init__(self, app: Any, replica_id: str, endpoint: str) -> None:
        self.app = app
        self.replica_id = replica_id
        self.endpoint = endpoint
        self.concurrency = max(1, int(getattr(app, "max_concurrency", 1)))
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="predict")
        self._tasks: set[asyncio.Task[None]] = set()  # strong references until done
        self._streams: dict[str, asyncio.Task[None]] = {}  # cancellable by request id
        self._streaming = _is_async_generator(getattr(app, "async_predict", None))
        self._ctx = zmq.asyncio.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._hints: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
        batch_size = int(getattr(app, "max_batch_size", 1))
        self._batcher: Batcher | None = None
        if batch_size > 1 and callable(getattr(app, "predict_batch", None)):
            wait_s = float(getattr(app, "max_batch_wait_s", 0.01))
            self._batcher = Batcher(self._run_batch, max_size=batch_size, max_wait_s=wait_s)

    async def serve(self) -> None:
        """Say hello, then answer calls until the agent goes away or we are told to stop."""
        self._sock.setsockopt(zmq.LINGER, 1000)
        self._sock.setsockopt_string(zmq.IDENTITY, self.replica_id)
        self._sock.connect(self.endpoint)
        await self._send(Hello(self.replica_id, self._info()))
        while True:
            frame = await self._sock.recv()
            try:
                message = decode_envelope(frame, max_bytes=MAX_FRAME_BYTES)
            except EnvelopeError as exc:
                log.warning("dropped a bad frame from the agent: %s", exc)
                continue
            match message:
                case Call():
                    self._start(message)
                case Cancel(rid):
                    # Only streams stop: a thread running predict cannot be interrupted, so it
                    # finishes and its answer (which the agent discards) tells the agent the
                    # worker is free again; a predict that never finishes gets the worker killed.
                    running = self._streams.get(rid)
                    if running is not None:
                        running.cancel()
                case _:
                    log.warning("unexpected %s from the agent", type(message).__name__)

    def _start(self, call: Call) -> None:
        task = asyncio.create_task(self._answer(call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if call.stream and self._streaming:
            self._streams[call.request_id] = task
            task.add_done_callback(lambda _: self._streams.pop(call.request_id, None))

    def _info(self) -> dict[str, Any]:
        hints, models = self._current_hints()
        self._hints = (hints, models)
        return {
            "pid": os.getpid(),
            "hints": list(hints),
            "models": list(models),
            "max_concurrency": self.concurrency,
            "max_queue": getattr(self.app, "max_queue", None),
            "max_batch_size": int(getattr(self.app, "max_batch_size", 1)),
            "streaming": _is_async_generator(getattr(self.app, "async_predict", None)),
        }

    def _current_hints(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        provide = getattr(self.app, "provide_hints", None)
        hints = tuple(str(h) for h in provide()) if callable(provide) else ()
        loaded = getattr(self.app, "loaded_models", None)
        models = tuple(str(m) for m in loaded()) if callable(loaded) else hints
        return hints, models

    async def _answer(self, call: Call) -> None:
        try:
            if call.stream and self._streaming:
                await self._stream(call)
            else:
                result = await self._predict(call)
                await self._send(_reply(call, result))
        except asyncio.CancelledError:
            # The agent gave up on this stream; saying so ends its watch for a hung worker.
            await self._send(Failure(call.request_id, "cancelled", "cancelled by the caller", False))
            return
        except InvalidRequest as exc:
            await self._send(Failure(call.request_id, "invalid_request", str(exc)[:1000], False))
        except Exception as exc:
            log.error("predictor failed on %s:\n%s", call.request_id, traceback.format_exc())
            await self._send(Failure(call.request_id, "predictor", _safe_message(exc), False))
        await self._maybe_send_hints()

    async def _predict(self, call: Call) -> Any:
        if self._batcher is not None:
            return await self._batcher.submit(call.body)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.app.predict, call.body, call.header)

    async def _stream(self, call: Call) -> None:
        seq = 0
        async for piece in self.app.async_predict(call.body):
            await self._send(Chunk(call.request_id, seq, _plain(piece)))
            seq += 1
        await self._send(Reply(call.request_id, None, "text/event-stream"))

    async def _run_batch(self, bodies: list[dict[str, Any]]) -> list[Any]:
        loop = asyncio.get_running_loop()
        try:
            results: list[Any] = await loop.run_in_executor(self._pool, self.app.predict_batch, bodies)
        except Exception:
            if len(bodies) == 1:
                raise
            # One bad request must not fail its neighbours: answer each on its own.
            return await loop.run_in_executor(self._pool, self._predict_each, bodies)
        if len(results) != len(bodies):
            raise RuntimeError(f"predict_batch returned {len(results)} results for {len(bodies)} requests")
        return results

    def _predict_each(self, bodies: list[dict[str, Any]]) -> list[Any]:
        results: list[Any] = []
        for body in bodies:
            try:
                results.append(self.app.predict_batch([body])[0])
            except Exception as exc:
                results.append(exc)
        return results

    async def _maybe_send_hints(self) -> None:
        current = self._current_hints()
        if current != self._hints:
            self._hints = current
            await self._send(Hints(self.replica_id, *current))

    async def _send(self, message: Envelope) -> None:
        await self._sock.send(encode_envelope(message))

    def close(self) -> None:
        """Release sockets and threads (best effort: the process is exiting)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._sock.close(linger=500)
        self._ctx.term()


def _reply(call: Call, result: Any) -> Reply:
    """Turn a predictor's return value into the final envelope, honouring the client's Accept."""
    if isinstance(result, str | Path) and _wants_file(call.accept) and Path(result).is_file():
        path = Path(result)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return Reply(call.request_id, path.read_bytes(), content_type)
    if isinstance(result, Path):
        # A file the client did not ask for as a file: base64 in JSON, so it still arrives.
        content_type = mimetypes.guess_type(result.name)[0] or "application/octet-stream"
        encoded = base64.b64encode(result.read_bytes()).decode("ascii")
        return Reply(call.request_id, {"content_type": content_type, "base64": encoded}, JSON)
    if isinstance(result, bytes | bytearray):
        return Reply(call.request_id, bytes(result), "application/octet-stream")
    return Reply(call.request_id, _plain(result), JSON)


def _wants_file(accept: str) -> bool:
    accepted = [part.split(";")[0].strip().lower() for part in accept.split(",") if part.strip()]
    return any(kind not in ("application/json", "text/event-stream", "*/*", "") for kind in accepted)


def _plain(value: Any) -> Any:
    """Values msgpack can carry: paths become strings, tuples lists; anything else must be JSON-able."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "tolist"):  # numpy arrays and torch tensors
        return value.tolist()
    return value


def _safe_message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:1000]


def _exit_with_parent(parent_pid: int) -> None:
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


def _is_async_generator(function: Callable[..., Any] | None) -> bool:
    return function is not None and inspect.isasyncgenfunction(function)


async def _run(app_ref: str, replica_id: str, endpoint: str, data_dir: Path) -> int:
    from .app_ref import load_app

    try:
        app = load_app(app_ref, data_dir=data_dir)
        for step in ("setup", "warmup"):
            method = getattr(app, step, None)
            if callable(method):
                method()
    except Exception:
        log.error("setup of %s failed:\n%s", app_ref, traceback.format_exc())
        return EXIT_SETUP_FAILED
    worker = Worker(app, replica_id, endpoint)
    try:
        await worker.serve()
    finally:
        worker.close()
        close = getattr(app, "close", None)
        if callable(close):
            with contextlib.suppress(Exception):
                close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of a replica worker process."""
    parser = argparse.ArgumentParser(prog="meshnode-worker")
    parser.add_argument("--app", required=True)
    parser.add_argument("--replica", required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process is gone")
    args = parser.parse_args(argv)
    if args.parent_pid is not None:
        _exit_with_parent(args.parent_pid)
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(levelname)s worker[{args.replica}]: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per proxied request is noise
    try:
        return asyncio.run(_run(args.app, args.replica, args.endpoint, args.data_dir))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
