"""The replica worker's core: one predictor answering ``Call`` envelopes, with no socket of its own.

Each replica runs in a worker process of its own, so a predictor that crashes, leaks or saturates
the CPU takes down that process only, and the agent restarts it. The process is in two parts:

- this core, in ``inference/``: ``set_up`` loads the app and runs ``setup()`` and ``warmup()``;
  ``Worker`` is handed every ``Call`` and ``Cancel`` (mesh/envelope.py) and answers each ``Call``
  through its ``send`` callback with ``Chunk``s and a final ``Reply``, or a ``Failure``; after an
  answer it sends ``Hints`` when the app's hints or loaded models changed, and ``BatchSizes``
  (at most every ``BATCH_REPORT_S``) when it ran batches: its ``Batcher``'s, or the app's own
  ``batch_sizes`` counter (a continuous-batching text generator's).
- the process shell, ``node/serving/worker.py`` (``python -m meshnode.serving.worker``): the command
  line, the ZeroMQ socket to the agent read by the data plane's frame reader, and exit with the
  agent. It lives in ``node/`` because ``inference/`` never imports ``node``.

Inside the core, sync ``predict`` runs in a thread pool of ``max_concurrency`` threads (model code
releases the GIL in torch), ``async_predict`` runs as tasks on the worker's loop, and batchable apps
get their concurrent requests gathered by ``Batcher`` into one ``predict_batch`` call. A one-at-a-time
app whose calls have shown they return within half a millisecond has them run on the loop itself,
no thread hand-over and no task (``inline_calls.py`` says when, and what that gives up). The turning
of results and errors into envelopes is ``answers.py``. ``send`` must not block: it is called from
the event loop.

Each request runs with its own ``ProgressReporter`` (``progress.py``) as the current one, in the
thread that runs its ``predict`` or the task that runs its ``async_predict``: the predictor's
``report_progress`` calls become ``Progress`` envelopes when the call asked for them, sent on the
event loop (from a thread through ``call_soon_threadsafe``, which keeps them ahead of the answer,
whose completion is queued after them). A ``Cancel`` marks the reporter, so a ``predict`` stops at
its next report; a stream's task is cancelled as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..mesh.envelope import (
    MAX_BATCH_SIZE,
    BatchSizes,
    Call,
    Cancel,
    Chunk,
    Envelope,
    Failure,
    Hello,
    Hints,
    Progress,
    Reply,
)
from .answers import failure, plain, refusal, reply
from .batching import Batcher
from .inline_calls import InlinePolicy
from .moderation import WorkerModeration
from .predictor import declared_kinds
from .progress import MIN_INTERVAL_S, ProgressReporter, RequestCancelled, run_reporting, set_reporter

__all__ = ["EXIT_SETUP_FAILED", "Send", "Worker", "set_up"]

log = logging.getLogger("meshnode.worker")

# The worker process's exit code when setup failed, read by the agent's supervisor: it reports the
# setup error and counts the failure (placement moves a replica that keeps failing elsewhere).
EXIT_SETUP_FAILED = 3
# Batch sizes change with every batch; the agent needs them only for /metrics' scrapes.
BATCH_REPORT_S = 1.0

Send = Callable[[Envelope], None]


def set_up(app_ref: str, data_dir: Path) -> Any | None:
    """The app, loaded, set up and warmed up; None (with the error logged) if any step failed."""
    from .app_ref import load_app

    try:
        app = load_app(app_ref, data_dir=data_dir)
        declared_kinds(app)  # a wrong `serves` fails now, before setup loads any weights
        for step in ("setup", "warmup"):
            method = getattr(app, step, None)
            if callable(method):
                method()
    except Exception:
        log.error("setup of %s failed:\n%s", app_ref, traceback.format_exc())
        return None
    return app


class Worker:
    """Runs one predictor instance: answers each envelope it is handed through `send`."""

    def __init__(
        self, app: Any, replica_id: str, send: Send, *, progress_interval_s: float = MIN_INTERVAL_S
    ) -> None:
        self.app = app
        self.replica_id = replica_id
        self.concurrency = max(1, int(getattr(app, "max_concurrency", 1)))
        self._send = send
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="predict")
        self._tasks: set[asyncio.Task[None]] = set()  # strong references until done
        self._streams: dict[str, asyncio.Task[None]] = {}  # cancellable by request id
        self._reporters: dict[str, ProgressReporter] = {}  # each running request's, by request id
        self._loop: asyncio.AbstractEventLoop | None = None  # known once the first call arrives
        self._loop_thread = 0
        self._progress_interval_s = progress_interval_s
        self._streaming = _is_async_generator(getattr(app, "async_predict", None))
        self.serves = declared_kinds(app)
        self._hints: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
        batch_size = int(getattr(app, "max_batch_size", 1))
        self._batcher: Batcher | None = None
        if batch_size > 1 and callable(getattr(app, "predict_batch", None)):
            wait_s = float(getattr(app, "max_batch_wait_s", 0.01))
            self._batcher = Batcher(self._run_batch, max_size=batch_size, max_wait_s=wait_s)
        self._batches_sent: dict[int, int] = {}
        self._batches_due: asyncio.TimerHandle | None = None
        self._moderation = WorkerModeration(app)  # the checks of calls that carry a section
        # Fast sync predicts run on the loop (inline_calls.py says when), unless the app says no.
        inline = self._batcher is None and getattr(app, "inline_calls", True) is not False
        self._inline = InlinePolicy() if inline else None

    def hello(self) -> Hello:
        """The first envelope to the agent: this replica is ready, and what it can do."""
        hints, models = self._current_hints()
        self._hints = (hints, models)
        info = {
            "pid": os.getpid(),
            "hints": list(hints),
            "models": list(models),
            "max_concurrency": self.concurrency,
            "max_queue": getattr(self.app, "max_queue", None),
            "max_batch_size": int(getattr(self.app, "max_batch_size", 1)),
            "streaming": self._streaming,
            "serves": list(self.serves),
            "rerun_safe": getattr(self.app, "rerun_safe", True) is not False,
        }
        return Hello(self.replica_id, info)

    def handle(self, message: Envelope) -> None:
        """Start answering a ``Call``, or stop a stream on ``Cancel``; call it on the event loop."""
        match message:
            case Call():
                self._start(message)
            case Cancel(rid):
                # A thread running predict cannot be interrupted: it stops at its next
                # report_progress, or else finishes, and its answer (which the agent discards)
                # tells the agent the worker is free again; one that never finishes gets the
                # worker killed. A stream's task is cancelled at once.
                reporter = self._reporters.get(rid)
                if reporter is not None:
                    reporter.cancel()
                running = self._streams.get(rid)
                if running is not None:
                    running.cancel()
            case _:
                log.warning("unexpected %s from the agent", type(message).__name__)

    def close(self) -> None:
        """Release the threads and close the app (best effort: the process is exiting)."""
        if self._batches_due is not None:
            self._batches_due.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
        close = getattr(self.app, "close", None)
        if callable(close):
            with contextlib.suppress(Exception):
                close()

    def _start(self, call: Call) -> None:
        if self._loop is None:
            self._loop, self._loop_thread = asyncio.get_running_loop(), threading.get_ident()
        rid = call.request_id
        emit = self._emit_progress
        if self._moderation.wants_output_check(call.moderation):
            # A picture forming step by step would show what the output check may refuse at the end.
            emit = lambda progress: self._emit_progress(replace(progress, preview=None))  # noqa: E731
        reporter = ProgressReporter(
            rid, wanted=call.progress, emit=emit, min_interval_s=self._progress_interval_s
        )
        self._reporters[rid] = reporter
        if self._may_run_inline(call):
            self._answer_inline(call, reporter)
            return
        task = asyncio.create_task(self._answer(call, reporter))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._forget_reporter(reporter))
        if call.stream and self._streaming:
            self._streams[call.request_id] = task
            task.add_done_callback(lambda _: self._streams.pop(call.request_id, None))

    def _current_hints(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        provide = getattr(self.app, "provide_hints", None)
        hints = tuple(str(h) for h in provide()) if callable(provide) else ()
        loaded = getattr(self.app, "loaded_models", None)
        models = tuple(str(m) for m in loaded()) if callable(loaded) else hints
        return hints, models

    def _forget_reporter(self, reporter: ProgressReporter) -> None:
        # A request id reused while the cancelled request's thread still ran has a newer reporter.
        if self._reporters.get(reporter.request_id) is reporter:
            del self._reporters[reporter.request_id]

    def _emit_progress(self, progress: Progress) -> None:
        """Send a progress envelope from the loop or from a predict thread (never blocks either)."""
        if threading.get_ident() == self._loop_thread:
            self._send_progress(progress)
        elif self._loop is not None:
            self._loop.call_soon_threadsafe(self._send_progress, progress)

    def _send_progress(self, progress: Progress) -> None:
        try:
            self._send(progress)
        except Exception as exc:  # progress is best effort; the answer still goes
            log.warning("could not send progress of %s: %s", progress.request_id, exc)

    async def _answer(self, call: Call, reporter: ProgressReporter) -> None:
        try:
            refused = await self._moderate(self._moderation.check_prompt, call.moderation, call.body)
            if refused is not None:
                self._send(refusal(call, refused))
            elif call.stream and self._streaming:
                await self._stream(call, reporter)
            else:
                result = await self._predict(call, reporter)
                refused = await self._checked_output(call, result)
                self._send(reply(call, result) if refused is None else refusal(call, refused))
        except (asyncio.CancelledError, RequestCancelled):
            # The agent gave up on this stream; saying so ends its watch for a hung worker.
            self._send(Failure(call.request_id, "cancelled", "cancelled by the caller", False))
            return
        except Exception as exc:
            self._send(failure(call, exc))
        self._after_answer()

    def _may_run_inline(self, call: Call) -> bool:
        """A plain call to a predictor that has been fast, with no call still being answered."""
        return (
            self._inline is not None
            and self._inline.inline
            and not self._tasks  # one at a time, in the order they came
            and not call.progress
            and call.moderation is None
            and not (call.stream and self._streaming)
        )

    def _answer_inline(self, call: Call, reporter: ProgressReporter) -> None:
        """Answer `call` now, on the loop: no thread hand-over, no task (``inline_calls.py``)."""
        assert self._inline is not None
        started = time.perf_counter()
        try:
            try:
                result = run_reporting(reporter, self.app.predict, call.body, call.header)
            finally:
                self._inline.record(time.perf_counter() - started)
            self._send(reply(call, result))
        except RequestCancelled:
            self._send(Failure(call.request_id, "cancelled", "cancelled by the caller", False))
        except Exception as exc:
            self._send(failure(call, exc))
        finally:
            self._forget_reporter(reporter)
        self._after_answer()

    def _after_answer(self) -> None:
        self._maybe_send_hints()
        self._report_batches()

    def _report_batches(self) -> None:
        """Send the batch sizes when they changed, at most every BATCH_REPORT_S (a timer sends the rest)."""
        if self._batches_due is not None:
            return
        counts = self._batcher.batch_sizes if self._batcher else getattr(self.app, "batch_sizes", None)
        try:
            if not isinstance(counts, Mapping) or counts == self._batches_sent:
                return
            self._batches_sent = dict(counts)
        except RuntimeError:  # an engine thread added a size meanwhile: the next answer reports it
            return
        rows = tuple((size, n) for size, n in sorted(self._batches_sent.items()) if type(size) is int)
        self._send(BatchSizes(self.replica_id, rows[:MAX_BATCH_SIZE]))
        self._batches_due = asyncio.get_running_loop().call_later(BATCH_REPORT_S, self._batches_may_go)

    def _batches_may_go(self) -> None:
        self._batches_due = None
        self._report_batches()

    async def _predict(self, call: Call, reporter: ProgressReporter) -> Any:
        if self._batcher is not None:
            return await self._batcher.submit(call.body)
        loop = asyncio.get_running_loop()
        result, seconds = await loop.run_in_executor(self._pool, _timed, reporter, self.app.predict, call)
        if self._inline is not None:
            self._inline.record(seconds)
        return result

    async def _stream(self, call: Call, reporter: ProgressReporter) -> None:
        set_reporter(reporter)  # this task's own context: the generator runs in it
        seq = 0
        async for piece in self.app.async_predict(call.body):
            refused = await self._checked_output(call, piece)
            if refused is not None:  # the pieces before it passed; this one and the rest never leave
                self._send(refusal(call, refused))
                return
            self._send(Chunk(call.request_id, seq, plain(piece)))
            seq += 1
        self._send(Reply(call.request_id, None, "text/event-stream"))

    async def _checked_output(self, call: Call, result: Any) -> str | None:
        """The category the app's output check refuses `result` with, when the call asks for it."""
        if not self._moderation.wants_output_check(call.moderation):
            return None
        return await self._moderate(lambda _raw, value: self._moderation.check_output(value), {}, result)

    async def _moderate(self, check: Callable[[Any, Any], str | None], raw: Any, value: Any) -> str | None:
        """Run a check off the loop, in the default pool: not behind the predictor's own threads."""
        if raw is None:
            return None
        return await asyncio.get_running_loop().run_in_executor(None, check, raw, value)

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

    def _maybe_send_hints(self) -> None:
        current = self._current_hints()
        if current != self._hints:
            self._hints = current
            self._send(Hints(self.replica_id, *current))


def _timed(reporter: ProgressReporter, predict: Callable[..., Any], call: Call) -> tuple[Any, float]:
    """``predict``'s answer to `call` on a pool thread, and how long it took (for ``InlinePolicy``)."""
    started = time.perf_counter()
    result = run_reporting(reporter, predict, call.body, call.header)
    return result, time.perf_counter() - started


def _is_async_generator(function: Callable[..., Any] | None) -> bool:
    return function is not None and inspect.isasyncgenfunction(function)
