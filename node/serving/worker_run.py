"""One run of a replica's worker, from its start to its exit, and how it ended (``WorkerExit``).

The supervisor (``replica.py``) starts a worker (``worker_process.py``), waits here for its exit,
and decides what to report and when to start again (``mesh/restarts.py``). A run whose setup takes
longer than ``setup_timeout_s`` is killed here; a run that exits with ``EXIT_SETUP_FAILED`` before
it was ready reports its setup error, the last line of its log (``worker_process.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from ..inference.worker import EXIT_SETUP_FAILED
from ..mesh.restarts import NextStart, WorkerExit
from .worker_process import last_line

__all__ = ["report_exit", "wait_exit"]

log = logging.getLogger(__name__)


async def wait_exit(
    label: str,
    process: asyncio.subprocess.Process,
    ready: asyncio.Event,
    setup_timeout_s: float,
    log_path: Path,
) -> WorkerExit:
    """Wait until the worker `process` exits, killing it if `ready` is not set within `setup_timeout_s`.

    `ready` is set by the supervisor when the worker says hello, i.e. once its setup is done.
    """
    watch = asyncio.create_task(_kill_if_setup_overruns(label, process, ready, setup_timeout_s))
    code = await process.wait()
    was_ready = ready.is_set()
    watch.cancel()
    overran = await asyncio.gather(watch, return_exceptions=True) == [True]
    failed_setup = code == EXIT_SETUP_FAILED and not was_ready
    error = await asyncio.to_thread(last_line, log_path) if failed_setup else ""
    return WorkerExit(code, was_ready, setup_timeout_s if overran else None, error)


async def _kill_if_setup_overruns(
    label: str, process: asyncio.subprocess.Process, ready: asyncio.Event, timeout_s: float
) -> bool:
    """Kill a worker whose setup takes longer than `timeout_s`; whether it did."""
    try:
        async with asyncio.timeout(timeout_s):
            await ready.wait()
    except TimeoutError:
        log.warning("%s: setup did not finish within %g s; killing it", label, timeout_s)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        return True
    return False


def report_exit(label: str, code: int, step: NextStart, restarts: int, failures: int, reported: str) -> str:
    """Log a worker's exit (`label`: whose): every crash, but a failed start once per distinct error,
    not on every restart (`reported`: the last one logged). Returns the failed start now logged."""
    if not step.setup_failed:
        log.warning("%s exited (%s); restart %d", label, code, restarts)
    elif step.error != reported:
        log.error("%s cannot start here: %s", label, step.error)
    if step.held:
        log.warning("%s: %d failed starts in a row; next try in %g s", label, failures, step.delay_s)
    return step.error if step.setup_failed else ""
