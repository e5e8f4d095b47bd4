"""The plans of the jobs methods (``submit``, ``status``, ``result``, ``cancel``, ``wait``, ``jobs``).

A job is a predict request the mesh keeps and runs when it can (node/http/jobs.py): ``submit`` answers
as soon as the job is stored on its copies, and its id is valid on every node, so each later call
goes to whichever node answers, failing over as every call does (``Planner.request``).
``ClientBase`` mixes ``JobPlans`` in, so both faces run these same plans.

- ``submit`` always sends an ``Idempotency-Key`` (a random one unless the caller gave theirs): a
  submit that fails over after its first node dropped the connection then names the same job on the
  next node instead of making a second one.
- ``result`` reads the status first. A job that has not ended raises ``JobNotFinished`` (``wait``
  waits); one that failed raises ``JobFailed`` with the error answer its result gives, which is the
  one predict would have given; a cancelled or expired one ``JobGone``.
- Each call is bounded by the client's ``timeout``. ``submit``'s own ``timeout`` is the job's: the
  seconds it may run once started (``X-Request-Timeout``, the node's default when not given).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from typing import Any, TypedDict, Unpack
from urllib.parse import quote, urlencode

from .answers import read_result
from .errors import JobFailed, JobNotFinished, error_fields, error_from_answer
from .exchange import JSON_TYPE, MAX_TIMEOUT_S, Call, ClientOptions, Planner
from .job_view import JOB_ERRORS, JOB_STATES, Job, JobList, job_from_answer, jobs_from_answer, state_in_words
from .job_watch import JobWatch, job_path
from .steps import Steps

__all__ = ["MAX_LISTED", "JobPlans", "ProgressCallback", "SubmitOptions"]

# The most jobs one listing may ask for (the node's own bound, node/http/jobs.py).
MAX_LISTED = 1000
# The longest Idempotency-Key a node takes (meshnode.mesh.jobs.MAX_KEY_CHARS).
_MAX_KEY_CHARS = 256

#: What ``wait`` calls with each new status of the job (the first one included).
ProgressCallback = Callable[[Job], object]


class SubmitOptions(TypedDict, total=False):
    """``submit``'s keyword arguments."""

    #: Names the job: the same key (and deployment) within the result's time to live is the same job.
    idempotency_key: str | None
    #: A URL the mesh POSTs the job's end to, signed (docs/webhooks.md).
    webhook: str | None
    #: The media type the result should have (Accept), e.g. "image/png"; JSON by default.
    accept: str
    #: Routing hint for the job's run (X-Mesh-Hint; default: the client's ``hint``).
    hint: str | None
    #: Seconds the job may run once started (X-Request-Timeout; default: the node's request_timeout_s).
    timeout: float | None


class JobPlans:
    """The plans of the jobs methods, for ``ClientBase``, which has the planner and options."""

    _planner: Planner
    _clock: Callable[[], float]
    options: ClientOptions
    hint: str | None

    def _submit(self, deployment: str, body: Any, **options: Unpack[SubmitOptions]) -> Steps[Job]:
        if not deployment:
            raise ValueError("deployment must not be empty")
        path = f"/v1/jobs/{quote(deployment, safe='')}"
        if (webhook := options.get("webhook")) is not None:
            path += f"?{urlencode({'webhook': webhook})}"
        key = options.get("idempotency_key")
        if key is None:
            key = secrets.token_urlsafe(16)
        elif not 0 < len(key) <= _MAX_KEY_CHARS or not key.isprintable():
            raise ValueError(f"idempotency_key must be 1 to {_MAX_KEY_CHARS} printable characters")
        headers = {"Accept": options.get("accept", JSON_TYPE), "Idempotency-Key": key}
        hint = options.get("hint")
        if hint := self.hint if hint is None else hint:
            headers["X-Mesh-Hint"] = hint
        if (timeout := options.get("timeout")) is not None:
            if not 0 < timeout <= MAX_TIMEOUT_S:
                raise ValueError(f"timeout must be in (0, {MAX_TIMEOUT_S:g}] seconds, not {timeout!r}")
            headers["X-Request-Timeout"] = f"{max(math.ceil(timeout * 1000), 1) / 1000:g}"
        deadline = self._call_deadline()
        yield from self._planner.refresh(deadline, only_if_stale=True)
        answered = yield from self._planner.request(Call("POST", path, dict(body or {}), headers), deadline)
        return job_from_answer(*answered)

    def _status(self, job_id: str) -> Steps[Job]:
        return self._job_call("GET", job_path(job_id))

    def _cancel(self, job_id: str) -> Steps[Job]:
        return self._job_call("DELETE", job_path(job_id))

    def _result(self, job_id: str) -> Steps[Any]:
        job = yield from self._status(job_id)
        return (yield from self._outcome(job))

    def _wait(self, job_id: str, timeout: float | None, on_progress: ProgressCallback | None) -> Steps[Any]:
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be positive (or None: no limit), not {timeout!r}")
        deadline = None if timeout is None else self._clock() + timeout
        job: Job | None = yield from self._status(job_id)
        watch = JobWatch(self._planner, job_id, self._clock, deadline=deadline, last=job)
        try:
            while job is not None and not job.done:
                if on_progress is not None:
                    on_progress(job)
                job = yield from watch.next_job()
        except GeneratorExit:
            raise  # abandoned by its driver, which carries nothing out any more
        except BaseException:
            yield from watch.close()  # on_progress raised, or the wait was interrupted
            raise
        if job is None:
            last = watch.last
            assert last is not None  # the watch began with the status read above
            raise JobNotFinished(
                f"job {job_id} did not end within {timeout:g} s: {state_in_words(last)}", job=last
            )
        if on_progress is not None:
            on_progress(job)
        return (yield from self._outcome(job))

    def _watch(self, job_id: str) -> JobWatch:
        job_path(job_id)  # checks the id now rather than at the first event
        return JobWatch(self._planner, job_id, self._clock)

    def _jobs(
        self, deployment: str | None, status: str | None, limit: int, cursor: str | None
    ) -> Steps[JobList]:
        if status is not None and status not in JOB_STATES:
            raise ValueError(f"status must be one of {', '.join(JOB_STATES)}, not {status!r}")
        if not 1 <= limit <= MAX_LISTED:
            raise ValueError(f"limit must be from 1 to {MAX_LISTED}, not {limit!r}")
        query = {"deployment": deployment, "status": status, "limit": limit, "cursor": cursor}
        path = f"/v1/jobs?{urlencode({key: value for key, value in query.items() if value is not None})}"
        answered = yield from self._planner.request(Call("GET", path), self._call_deadline())
        return jobs_from_answer(*answered)

    def _outcome(self, job: Job) -> Steps[Any]:
        """The result of ``job`` given its status: the answer, or the error that says why there is none."""
        if not job.done:
            raise JobNotFinished(f"job {job.id} has not ended: {state_in_words(job)}; wait() for it", job=job)
        # A failed job's result is its error answer, whatever its status (a 503 too): kept, not raised.
        failed = job.status == "failed"
        call = Call(
            "GET",
            job_path(job.id, "/result"),
            headers={"Accept": "*/*"},
            errors=JOB_ERRORS,
            keep_errors=failed,
        )
        opened, content = yield from self._planner.request(call, self._call_deadline())
        status, headers = opened.response.status_code, opened.response.headers
        if status < 400:
            return read_result(opened, content).data
        kind, message, request_id = error_fields(content, headers, status)
        if status in (401, 403, *JOB_ERRORS) and (job.error is None or kind != job.error.type):
            raise error_from_answer(status, headers, content, opened.node, classes=JOB_ERRORS)
        raise JobFailed(status, kind, message, job=job, request_id=request_id, node=opened.node)

    def _job_call(self, method: str, path: str) -> Steps[Job]:
        deadline = self._call_deadline()
        yield from self._planner.refresh(deadline, only_if_stale=True)
        answered = yield from self._planner.request(Call(method, path, errors=JOB_ERRORS), deadline)
        return job_from_answer(*answered)

    def _call_deadline(self) -> float:
        return self._clock() + self.options.timeout_s
