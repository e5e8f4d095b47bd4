"""Following one job until it ends: its events stream on any node, opened again, or polled.

``JobWatch.next_job()`` is a plan (``steps.py``) that returns the job's next status that differs from
the last one, and None once the job has ended or the watch's deadline has passed. ``wait`` and
``events`` of both faces run it.

It reads ``GET /v1/jobs/{id}/events`` (Server-Sent Events, one ``event: <status>`` with ``data: <the
status JSON>`` per change, until the job ends) from whichever node takes it; a job id is valid on
every node. The node sends nothing between changes, so a quiet stream may be a job without news or
a node that stopped answering: after ``IDLE_S`` of silence, and whenever the stream breaks off (its
node died) or ends early, the watch asks for the status once (``GET /v1/jobs/{id}``, which fails over
between nodes as every call does) and opens the stream again ``POLL_INTERVAL_S`` later, on another
node if the first is down. A node that refuses to stream (an error answer that says nothing of the
job) turns the watch to polling the status every ``POLL_INTERVAL_S``.

Changes are told by what a user sees (status, position, progress, attempts, node, error), so the
same status heard again from a reopened stream, with other URLs, is not a change.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx

from .errors import ClientError, RequestFailed, StreamBroken
from .exchange import Call, Opened, Planner
from .job_view import JOB_ERRORS, Job, job_from_answer, job_from_view
from .steps import Close, Lines, NextLine, Pause, Steps

__all__ = ["IDLE_S", "POLL_INTERVAL_S", "JobWatch", "job_path"]

# Silence after which a status read checks that the job and its node are still there. Each costs one
# small GET; a node that died without closing the connection is noticed within this time.
IDLE_S = 15.0
# The gap between status reads when there is no stream, and before a broken stream is opened again:
# statuses change within seconds (the node itself looks at a job's copies every 0.25 s).
POLL_INTERVAL_S = 1.0
_SSE_TYPE = "text/event-stream"


def job_path(job_id: str, tail: str = "") -> str:
    """The path of a job's route, its id quoted (an odd id gets the node's 404, not another route)."""
    if not job_id:
        raise ValueError("job_id must not be empty")
    return f"/v1/jobs/{quote(job_id, safe='')}{tail}"


class JobWatch:
    """The plan that follows one job's statuses, and what it keeps between them (its stream)."""

    def __init__(
        self,
        planner: Planner,
        job_id: str,
        clock: Callable[[], float],
        *,
        deadline: float | None = None,
        last: Job | None = None,
    ) -> None:
        """Follow ``job_id`` until it ends or until ``deadline`` (``clock`` time; None: no end).

        ``last`` is a status already told to the caller: the next one returned differs from it.
        """
        self._planner = planner
        self._id = job_id
        self._clock = clock
        self._deadline = deadline
        #: The last status returned (or given as ``last``).
        self.last = last
        self._opened: Opened | None = None
        self._lines: Any = None
        self._data: list[str] = []
        self._polling = False
        self._next_try = 0.0

    def next_job(self) -> Steps[Job | None]:
        """The next changed status; None once the job has ended or the deadline passed."""
        try:
            while self.last is None or not self.last.done:
                job = yield from self._next_status()
                if job is None:
                    break
                if self.last is None or _seen(job) != _seen(self.last):
                    self.last = job
                    if job.done:
                        yield from self.close()
                    return job
        except GeneratorExit:
            raise  # abandoned by its driver, which carries nothing out any more
        except BaseException:
            yield from self.close()
            raise
        yield from self.close()
        return None

    def close(self) -> Steps[None]:
        """Close the stream, if one is open."""
        if self._opened is not None:
            opened, self._opened = self._opened, None
            yield Close(opened.response)

    def _next_status(self) -> Steps[Job | None]:
        """One status from the stream or a status read, changed or not; None past the deadline."""
        while (left := self._left()) is None or left > 0:
            if self._opened is None:
                wait_s = self._next_try - self._clock()
                if wait_s > 0:
                    yield Pause(wait_s if left is None else min(wait_s, left))
                    continue
                if self._polling or not (yield from self._open()):
                    self._next_try = self._clock() + POLL_INTERVAL_S
                    return (yield from self._read_status())
            job = yield from self._read_event()
            if job is not None:
                return job
            self._next_try = self._clock() + POLL_INTERVAL_S
            return (yield from self._read_status())
        return None

    def _open(self) -> Steps[bool]:
        """Open the events stream on a node; False if nodes refuse to stream (then the watch polls)."""
        call = Call(
            "GET",
            job_path(self._id, "/events"),
            headers={"Accept": _SSE_TYPE},
            stream=True,
            read_timeout_s=IDLE_S,
            errors=JOB_ERRORS,
        )
        try:
            answered = yield from self._request(call)
        except RequestFailed as exc:
            if exc.status in (401, 403, *JOB_ERRORS):
                raise  # about the job or the key: a status read would say the same
            self._polling = True
            return False
        if answered is None:
            return False
        self._opened = opened = answered[0]
        self._data = []
        self._lines = yield Lines(opened.response)
        return True

    def _read_event(self) -> Steps[Job | None]:
        """The next status on the open stream; None (and the stream closed) when it broke or idled."""
        assert self._opened is not None
        opened = self._opened
        try:
            while (line := (yield NextLine(self._lines))) is not None:
                view = self._feed(line)
                if view is not None:
                    return job_from_view(view, opened.node)
        except httpx.TimeoutException:
            pass  # silent for IDLE_S: a status read tells whether anything is still there
        except httpx.HTTPError:
            self._planner.unreachable(opened.node)
        yield from self.close()
        return None

    def _read_status(self) -> Steps[Job | None]:
        """The status from any node; None when the deadline passed before one answered."""
        answered = yield from self._request(Call("GET", job_path(self._id), errors=JOB_ERRORS))
        return None if answered is None else job_from_answer(*answered)

    def _request(self, call: Call) -> Steps[tuple[Opened, bytes] | None]:
        """``call`` on any node; None when no node answered before the watch's own deadline."""
        try:
            return (yield from self._planner.request(call, self._call_deadline()))
        except ClientError as exc:
            if isinstance(exc, RequestFailed) or (left := self._left()) is None or left > 0:
                raise
            return None

    def _feed(self, line: str) -> object | None:
        """Take one line of the stream; the data of an event once its blank line arrives."""
        if line.startswith(":"):
            return None
        if line:
            name, _, value = line.partition(":")
            if name == "data":
                self._data.append(value.removeprefix(" "))
            return None
        data, self._data = self._data, []
        if not data:
            return None
        try:
            return json.loads("\n".join(data))
        except ValueError as exc:
            node = self._opened.node if self._opened else ""
            raise StreamBroken(
                f"{node} sent a job event that is not JSON", kind="bad_answer", node=node
            ) from exc

    def _left(self) -> float | None:
        return None if self._deadline is None else self._deadline - self._clock()

    def _call_deadline(self) -> float:
        """One call's deadline: the client's timeout, or the watch's own deadline if sooner."""
        call_deadline = self._clock() + self._planner.options.timeout_s
        return call_deadline if self._deadline is None else min(call_deadline, self._deadline)


def _seen(job: Job) -> tuple[object, ...]:
    """What a user sees change: URLs differ by node, timestamps follow the status."""
    return (job.status, job.position, job.progress, job.attempts, job.node, job.error)
