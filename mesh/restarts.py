"""What a replica's supervisor does after its worker exited: why, what to report, when to try again.

A worker that exits before it said it was ready failed to start (its ``setup()`` raised, the app
could not be loaded, setup ran past ``replica_setup_timeout_s``, or the process died while loading);
one that exits after serving crashed. Either way the supervisor (``node/serving/replica.py``) starts
it again after the backoff (``backoff.py``). Failed starts also count, in a row: after ``attempts``
of them the replica stops hammering and is held as ``failed`` for ``hold_s`` before its next try
(placement moves a placed one to another node meanwhile; a pinned one waits on its node).

The error is what ``GET /v1/deployments`` shows and what a request that cannot be served answers,
so it names the cause in one line: the exception the worker logged last, without its module path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["NextStart", "WorkerExit", "next_start", "short_error"]

# "package.module.SomeError: text" -> "SomeError: text": the class says what went wrong, the path
# only costs room in the gossiped error (``replica_state.MAX_ERROR_CHARS``).
_QUALIFIED_EXCEPTION = re.compile(r"^(?:[A-Za-z_]\w*\.)+(?=[A-Z]\w*: )")


@dataclass(frozen=True)
class WorkerExit:
    """How one run of a worker ended."""

    code: int
    # It said it was ready (setup and warm-up done) before it exited.
    ready: bool
    # It was killed because its setup ran past this many seconds; None when it was not.
    overran_s: float | None = None
    # The error it reported for a failed setup (the last line it logged), "" when none.
    setup_error: str = ""


@dataclass(frozen=True)
class NextStart:
    """The supervisor's next step: the error to report, and how long to wait before starting again."""

    setup_failed: bool
    error: str
    # Failed starts reached `attempts`: report ``failed`` and wait `delay_s` (the hold).
    held: bool
    delay_s: float


def next_start(
    exited: WorkerExit, *, setup_failures: int, backoff_s: float, attempts: int, hold_s: float
) -> NextStart:
    """After `exited`, with `setup_failures` failed starts in a row before it and the backoff's delay.

    ``attempts`` 0 never holds: the replica keeps restarting with backoff alone.
    """
    if exited.ready:
        return NextStart(False, f"worker exited with code {exited.code}; restarting", False, backoff_s)
    if exited.overran_s is not None:
        error = f"setup did not finish within {exited.overran_s:g} s"
    elif exited.setup_error:
        error = f"setup failed: {short_error(exited.setup_error)}"
    else:
        error = f"the worker exited with code {exited.code} before it was ready"
    held = 0 < attempts <= setup_failures + 1
    return NextStart(True, error, held, max(backoff_s, hold_s) if held else backoff_s)


def short_error(line: str) -> str:
    """One logged exception line without the module path of its class."""
    return _QUALIFIED_EXCEPTION.sub("", line.strip(), count=1)
