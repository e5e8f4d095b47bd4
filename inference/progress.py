"""Progress from a running predictor: ``report_progress(step, total, preview=None)``.

A predictor calls ``report_progress`` (or ``Predictor.report_progress``, the same thing) from
``predict``, which runs in a worker thread, or from ``async_predict``, on the worker's event loop,
to say that its request is at `step` of `total`, optionally with a small JPEG preview. The worker
binds a ``ProgressReporter`` to each request it runs, in a context variable, so the call takes no
request argument and does nothing outside a request (in ``setup``, ``warmup``, a unit test, or
``predict_batch``, whose requests share one call).

Invariants:

- Nothing leaves the worker for a request that did not ask (``Call.progress``): its answers are
  exactly what they were before progress existed. A preview may be a function returning the bytes,
  called only when a report is sent, so a request that did not ask pays nothing for previews.
- Reports are throttled where they are made (``ProgressThrottle``): at most one per
  ``MIN_INTERVAL_S``, except that the first and the last step (``step == total``) always go, so a
  client's bar starts and ends. A UI needs no more, and an app that reports per token cannot flood
  the links.
- Out-of-bounds reports (``envelope.progress_problem``: a negative step, a step past its total, a
  preview that is not a JPEG or is over ``MAX_PREVIEW_BYTES``) are dropped with one warning per
  request, never raised: a bug in progress reporting must not fail a request. When only the preview
  is bad, the report goes without it.
- ``report_progress`` is a cancellation point: once the request is cancelled (the client went away,
  its deadline passed) it raises ``RequestCancelled``, whatever the request asked for. That stops a
  ``predict`` that its thread could not otherwise interrupt, at its next step. It derives from
  ``BaseException``, as ``asyncio.CancelledError`` does, so an ``except Exception`` in a predictor
  does not swallow it.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..mesh.envelope import Progress, progress_problem

__all__ = [
    "MIN_INTERVAL_S",
    "Preview",
    "ProgressReporter",
    "ProgressThrottle",
    "RequestCancelled",
    "report_progress",
    "run_reporting",
    "set_reporter",
]

log = logging.getLogger("meshnode.worker")

# 20 reports a second: smoother than a progress bar needs, and a preview per report (1-3 KB for
# 64x64) is then at most tens of KB/s per request.
MIN_INTERVAL_S = 0.05

# The JPEG bytes, or a function that makes them, called only for a report that is sent.
Preview = bytes | bytearray | memoryview | Callable[[], bytes] | None
T = TypeVar("T")

_current: contextvars.ContextVar[ProgressReporter | None] = contextvars.ContextVar(
    "meshnode_progress", default=None
)


class RequestCancelled(BaseException):
    """Raised by ``report_progress`` once the request was cancelled; let it propagate."""


class ProgressThrottle:
    """Which reports go out: the first, the last, and the others at most one per `min_interval_s`."""

    def __init__(self, min_interval_s: float) -> None:
        self._min_interval_s = min_interval_s
        self._last_sent: float | None = None

    def admit(self, step: int, total: int, now: float) -> bool:
        """Whether the report of `step` of `total` at time `now` is sent (and counts as sent)."""
        due = self._last_sent is None or now - self._last_sent >= self._min_interval_s
        if due or step >= total:
            self._last_sent = now
            return True
        return False


class ProgressReporter:
    """One request's progress: checked, throttled and handed to `emit`; and its cancellation flag."""

    def __init__(
        self,
        request_id: str,
        *,
        wanted: bool,
        emit: Callable[[Progress], None],
        min_interval_s: float = MIN_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.request_id = request_id
        self.wanted = wanted
        self._emit = emit
        self._clock = clock
        self._throttle = ProgressThrottle(min_interval_s)
        self._cancelled = threading.Event()
        # A pipeline may report from threads of its own: one decision at a time.
        self._lock = threading.Lock()
        self._warned = False

    @property
    def cancelled(self) -> bool:
        """Whether the request was cancelled."""
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Mark the request cancelled: its next report raises ``RequestCancelled`` (any thread)."""
        self._cancelled.set()

    def report(self, step: int, total: int, preview: Preview = None) -> None:
        """Send `step` of `total` if asked for and due; raise ``RequestCancelled`` once cancelled."""
        if self._cancelled.is_set():
            raise RequestCancelled(f"request {self.request_id} was cancelled")
        if not self.wanted:
            return
        problem = progress_problem(step, total, None)
        if problem is not None:
            self._warn(problem)
            return
        with self._lock:
            if not self._throttle.admit(step, total, self._clock()):
                return
        self._emit(Progress(self.request_id, step, total, self._preview_bytes(step, total, preview)))

    def _preview_bytes(self, step: int, total: int, preview: Preview) -> bytes | None:
        if preview is None:
            return None
        try:
            data = preview() if callable(preview) else preview
            data = bytes(data) if isinstance(data, bytes | bytearray | memoryview) else data
        except Exception as exc:  # a preview that fails to render costs the preview, not the request
            self._warn(f"the preview function failed: {type(exc).__name__}: {exc}")
            return None
        problem = progress_problem(step, total, data)
        if problem is not None:
            self._warn(problem)
            return None
        return data if isinstance(data, bytes) else None

    def _warn(self, problem: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("progress of %s dropped: %s", self.request_id, problem)


def report_progress(step: int, total: int, preview: Preview = None) -> None:
    """Report that the current request is at `step` of `total`, with an optional JPEG `preview`."""
    reporter = _current.get()
    if reporter is not None:
        reporter.report(step, total, preview)


def run_reporting(reporter: ProgressReporter, function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` with `reporter` as the current request's: for a worker thread."""
    token = _current.set(reporter)
    try:
        return function(*args)
    finally:
        _current.reset(token)


def set_reporter(reporter: ProgressReporter) -> None:
    """Make `reporter` the current request's for the rest of this task (its own context)."""
    _current.set(reporter)
