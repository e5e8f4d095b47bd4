"""What a job's status says, as the client hands it out: ``Job``, read from the node's JSON.

Every jobs route answers a job as the same JSON object (node/http/jobs.py): ``POST /v1/jobs/{name}``
(202), ``GET`` and ``DELETE /v1/jobs/{id}``, each entry of ``GET /v1/jobs``, and each event of
``GET /v1/jobs/{id}/events``. ``job_from_view`` checks it once, here, and a body that is not such an
object is the node's fault (``StreamBroken`` of kind ``bad_answer``, as a predict answer that is
not the JSON it says it is). Fields a later node adds are kept in ``Job.raw``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeGuard, cast, get_args

from .errors import JobGone, JobNotFound, RequestFailed, StreamBroken
from .exchange import Opened

__all__ = [
    "JOB_ERRORS",
    "JOB_STATES",
    "Job",
    "JobErrorInfo",
    "JobList",
    "JobState",
    "Progress",
    "job_from_answer",
    "job_from_view",
    "jobs_from_answer",
    "state_in_words",
]

#: Where a job is: waiting, running, or one of the three ends.
JobState = Literal["queued", "running", "completed", "failed", "cancelled"]
JOB_STATES: Final[tuple[JobState, ...]] = get_args(JobState)
_TERMINAL: Final = frozenset({"completed", "failed", "cancelled"})
#: The error classes of the answers about one job id: 404 and 410 say something of the job.
JOB_ERRORS: Final[Mapping[int, type[RequestFailed]]] = {404: JobNotFound, 410: JobGone}


@dataclass(frozen=True)
class Progress:
    """How far a running job is, as its predictor reports it: ``step`` of ``total``."""

    step: int
    total: int


@dataclass(frozen=True)
class JobErrorInfo:
    """Why a job failed: the ``type`` and ``message`` of the error predict would have answered."""

    type: str
    message: str


@dataclass(frozen=True)
class Job:
    """One job as a node shows it: where it is, how far, and its URLs (on the node that answered)."""

    id: str
    deployment: str
    status: JobState
    # Runs so far: a job whose runner died is run again, up to max_attempts, when its app allows.
    attempts: int
    max_attempts: int
    # Name of the node that runs it (or ran it); None until one started it.
    node: str | None
    # Unix times in seconds; expires_at is when an ended job's result is forgotten.
    created_at: float
    started_at: float | None
    finished_at: float | None
    expires_at: float | None
    status_url: str
    result_url: str
    cancel_url: str
    events_url: str
    # Jobs of its deployment ahead of it while queued (0: it starts next), when the node knows.
    position: int | None = None
    # Reported by the predictor while it runs; None when it reports nothing.
    progress: Progress | None = None
    # Set when status is "failed".
    error: JobErrorInfo | None = None
    # Whether submit named a job that existed already (the same Idempotency-Key): nothing new was made.
    replayed: bool = False
    # The JSON object the node sent, fields of later versions included.
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def done(self) -> bool:
        """Whether the job has ended: completed, failed or cancelled."""
        return self.status in _TERMINAL


def state_in_words(job: Job) -> str:
    """Where a job is, in words: "queued (2 ahead)", "running (step 3 of 10)", "completed"."""
    if job.status == "queued" and job.position is not None:
        return f"queued ({job.position} ahead)" if job.position else "queued (next)"
    if job.status == "running" and job.progress is not None:
        return f"running (step {job.progress.step} of {job.progress.total})"
    return job.status


def job_from_answer(opened: Opened, content: bytes) -> Job:
    """The job in the JSON body of an answer from a jobs route."""
    try:
        view = json.loads(content)
    except ValueError:
        view = None
    replayed = opened.response.headers.get("idempotent-replayed", "").lower() == "true"
    return job_from_view(view, opened.node, replayed=replayed)


class JobList(list[Job]):
    """One page of the mesh's jobs, newest first: a list, and where the next page starts.

    ``client.jobs(cursor=page.next_cursor)`` reads the next page while ``page.has_more``; paging
    never repeats or skips a job that existed when the first page was read.
    """

    def __init__(self, jobs: list[Job], next_cursor: str | None = None) -> None:
        super().__init__(jobs)
        #: What ``jobs(cursor=...)`` takes to read the next page; None on the last page.
        self.next_cursor = next_cursor

    @property
    def has_more(self) -> bool:
        """Whether more jobs follow this page."""
        return self.next_cursor is not None


def jobs_from_answer(opened: Opened, content: bytes) -> JobList:
    """A page of a listing (``GET /v1/jobs``: ``{"jobs": [...], "next_cursor": ...}``)."""
    try:
        answer = json.loads(content)
        listed, following = answer["jobs"], answer.get("next_cursor")
    except (ValueError, KeyError, TypeError, AttributeError):
        listed, following = None, None
    if not isinstance(listed, list) or not (following is None or isinstance(following, str)):
        raise _bad(opened.node, "a listing without a list of jobs")
    return JobList([job_from_view(view, opened.node) for view in listed], following)


def job_from_view(view: object, node: str, *, replayed: bool = False) -> Job:
    """A ``Job`` from a node's JSON status; ``StreamBroken`` (``bad_answer``) if it is not one."""
    if not isinstance(view, Mapping):
        raise _bad(node, "not a JSON object")
    get = _Fields(view, node)
    return Job(
        id=get.text("id"),
        deployment=get.text("deployment"),
        status=get.state(),
        attempts=get.count("attempts"),
        max_attempts=get.count("max_attempts"),
        node=get.optional_text("node"),
        created_at=get.seconds("created_at"),
        started_at=get.optional_seconds("started_at"),
        finished_at=get.optional_seconds("finished_at"),
        expires_at=get.optional_seconds("expires_at"),
        status_url=get.text("status_url"),
        result_url=get.text("result_url"),
        cancel_url=get.text("cancel_url"),
        events_url=get.text("events_url"),
        position=get.optional_count("position"),
        progress=_progress(view.get("progress")),
        error=_error(view.get("error")),
        replayed=replayed,
        raw=dict(view),
    )


class _Fields:
    """Typed reads of a job's JSON fields, each failing with the field's name."""

    def __init__(self, view: Mapping[str, Any], node: str) -> None:
        self._view = view
        self._node = node

    def state(self) -> JobState:
        value = self._view.get("status")
        if value not in JOB_STATES:
            raise _bad(self._node, f"status {value!r}")
        return cast(JobState, value)

    def text(self, name: str) -> str:
        value = self._view.get(name)
        if not isinstance(value, str):
            raise _bad(self._node, f"{name} {value!r}")
        return value

    def optional_text(self, name: str) -> str | None:
        return None if self._view.get(name) is None else self.text(name)

    def count(self, name: str) -> int:
        value = self._view.get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise _bad(self._node, f"{name} {value!r}")
        return value

    def optional_count(self, name: str) -> int | None:
        return None if self._view.get(name) is None else self.count(name)

    def seconds(self, name: str) -> float:
        value = self._view.get(name)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _bad(self._node, f"{name} {value!r}")
        return float(value)

    def optional_seconds(self, name: str) -> float | None:
        return None if self._view.get(name) is None else self.seconds(name)


def _progress(value: object) -> Progress | None:
    if isinstance(value, Mapping) and _is_int(value.get("step")) and _is_int(value.get("total")):
        return Progress(value["step"], value["total"])
    return None


def _error(value: object) -> JobErrorInfo | None:
    if isinstance(value, Mapping):
        return JobErrorInfo(str(value.get("type") or "error"), str(value.get("message") or ""))
    return None


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _bad(node: str, what: str) -> StreamBroken:
    return StreamBroken(
        f"{node} answered a job status that is not one ({what})", kind="bad_answer", node=node
    )
