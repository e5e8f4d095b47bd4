"""One run of a job: its request through the forwarder, as predict sends it, and the whole answer.

The request is predict's exactly (body, Accept, hint, the job's deadline), with progress asked for:
the predictor's reports (``inference/progress.py``) reach ``on_progress``, throttled here to one
every ``PROGRESS_WRITE_S`` (the last step always), since each becomes a write to the job's copies.
The answer is kept as predict's HTTP body would be: a file's bytes with its content type, or the
JSON value encoded. A failure raises the error predict would have answered with.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable

from ..dataplane.forward import Served
from ..errors import BadRequest, MeshnodeError, error_for_failure
from ..logs import set_request_id
from ..mesh.envelope import Call, Chunk, Failure, Progress, Reply
from ..mesh.jobs import JobRecord, JobResult

__all__ = ["PROGRESS_WRITE_S", "Serve", "run_once"]

# A running job's progress is written to its copies at most this often (and at its last step).
PROGRESS_WRITE_S = 0.5

Serve = Callable[..., Awaitable[Served]]
OnProgress = Callable[[int, int], Awaitable[None]]


async def run_once(record: JobRecord, serve: Serve, on_progress: OnProgress) -> JobResult:
    """Run `record`'s request once; its answer, or the MeshnodeError predict would have given."""
    # On the log lines of this run: it runs in a task of its own (jobs.py), so the id ends with it.
    set_request_id(f"job-{record.id}-{record.attempts}")
    call = Call(
        request_id=f"job-{record.id}-{record.attempts}",
        deployment=record.deployment,
        body=record.body,
        header=record.accept or None,
        stream=False,
        accept=record.accept,
        timeout_ms=record.timeout_ms,
        progress=True,
    )
    last_report = -math.inf

    async def report(progress: Progress) -> None:
        nonlocal last_report
        now = asyncio.get_running_loop().time()
        if progress.step >= progress.total or now - last_report >= PROGRESS_WRITE_S:
            last_report = now
            await on_progress(progress.step, progress.total)

    served = await serve(call, record.hint)
    final = served.first
    if isinstance(final, Progress):
        await report(final)
    async for message in served.rest:
        if isinstance(message, Progress):
            await report(message)
        else:
            final = message
    match final:
        case Reply(_, data, content_type) if isinstance(data, bytes):
            return JobResult(content_type, data)
        case Reply(_, data, _):
            return JobResult("application/json", json.dumps(data, separators=(",", ":")).encode())
        case Failure(_, kind, text, retryable):
            raise error_for_failure(kind, text, retryable=retryable)
        case Chunk():
            raise BadRequest('a job\'s request cannot stream; drop "stream": true')
        case _:
            raise MeshnodeError("the replica ended the job without an answer")
