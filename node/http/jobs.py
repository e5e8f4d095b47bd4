"""``/v1/jobs``: durable async jobs, on every node (``serving/jobs.py`` keeps and runs them).

    POST   /v1/jobs/{deployment}   a predict body (+ Idempotency-Key, ?webhook=URL) -> 202 once stored
    GET    /v1/jobs                 a page of the listing (?deployment=, ?status=, ?limit=, ?cursor=)
    GET    /v1/jobs/{id}            status, position or progress, attempts, the node running it
    GET    /v1/jobs/{id}/result     the answer as predict gives it; 202 + status until it ends; 410
    DELETE /v1/jobs/{id}            cancel (queued: at once; running: through predict's cancellation)
    GET    /v1/jobs/{id}/events     Server-Sent Events of each change until the job ends

The same API keys as predict (``invoke`` scope), checked by the gate before any of this runs. A
job's body is held in its copies, so it is bounded by ``job_max_body_bytes`` (413 past it); a job
collects the whole answer, so ``"stream": true`` is refused (422). With an ``Idempotency-Key`` the
job's id is derived from it (and the deployment): the same key within the result's time to live
names the same job, on any node, with no index to keep.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Path, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..errors import Gone, MeshnodeError, NotFound, Unprocessable, error_for_failure
from ..mesh.job_listing import JobCursor
from ..mesh.jobs import MAX_KEY_CHARS, MAX_URL_CHARS, JobRecord, JobStatus
from ..serving.jobs import JobService
from .body import base_url, parse_json_object, read_body
from .predict import hint_of, timeout_of
from .sse import KEEPALIVE, KEEPALIVE_S

__all__ = ["add_job_routes"]

_LIST_MAX = 1000
_EVENTS_POLL_S = 0.25
_DEPLOYMENT = Path(description="POST: the deployment that runs the job")
_JOB_ID = Path(description="GET, DELETE: the job's id (22 characters of base64url)")


def add_job_routes(
    app: FastAPI,
    jobs: JobService,
    *,
    max_body_bytes: int,
    default_timeout_s: float,
    keepalive_s: float = KEEPALIVE_S,
) -> None:
    """Mount the ``/v1/jobs`` routes."""

    # One path template for POST (its segment names a deployment) and GET/DELETE (a job id), so the
    # OpenAPI document lists one resource whose Allow header is exactly what it answers.
    @app.post("/v1/jobs/{name}", status_code=202)
    async def submit(request: Request, name: str = _DEPLOYMENT) -> JSONResponse:
        """Queue a predict request; 202 with its URLs once its copies are stored."""
        deployment = name
        raw = await read_body(request, max_body_bytes, f"a job's body is at most {max_body_bytes} bytes")
        body = parse_json_object(raw)
        if body.get("stream") is True:
            raise Unprocessable('a job collects the whole answer: drop "stream": true (or use predict)')
        webhook = _webhook(request.query_params.get("webhook"))
        key = request.headers.get("idempotency-key")
        if key is not None and not 0 < len(key) <= MAX_KEY_CHARS:
            raise Unprocessable(f"Idempotency-Key must be 1 to {MAX_KEY_CHARS} characters")
        if not jobs.known(deployment):
            raise NotFound(f"no deployment {deployment!r} in this mesh")
        record = jobs.new_record(
            deployment,
            body,
            accept=request.headers.get("accept", ""),
            hint=hint_of(request),
            timeout_ms=int(timeout_of(request, default_timeout_s) * 1000),
            idempotency_key=key,
            webhook=webhook,
        )
        if key is not None:
            record = dataclasses.replace(record, id=_id_for(deployment, key))
            try:
                existing = await jobs.find(record.id)
            except (NotFound, Gone):
                existing = None
            if existing is not None:
                return JSONResponse(_view(existing, request, jobs), 202, {"Idempotent-Replayed": "true"})
        stored = await jobs.submit(record)
        return JSONResponse(_view(stored, request, jobs), 202)

    @app.get("/v1/jobs")
    async def listing(
        request: Request,
        deployment: str | None = None,
        status: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Jobs in the mesh, newest first, a page at a time (``cursor``: the last page's ``next_cursor``)."""
        if status is not None and status not in {s.value for s in JobStatus}:
            raise Unprocessable(f"status must be one of {', '.join(s.value for s in JobStatus)}")
        if not 1 <= limit <= _LIST_MAX:
            raise Unprocessable(f"limit must be from 1 to {_LIST_MAX}")
        try:
            after = None if cursor is None else JobCursor.parse(cursor)
        except ValueError as exc:
            raise Unprocessable(str(exc)) from exc
        found = await jobs.listing(deployment, status, limit, after)
        following = found.next_cursor
        return {
            "jobs": [_view(record, request, jobs) for record in found.records],
            "has_more": found.more,
            "next_cursor": None if following is None else str(following),
        }

    @app.get("/v1/jobs/{name}")
    async def status(request: Request, name: str = _JOB_ID) -> dict[str, Any]:
        """Where the job is."""
        job_id = name
        return _view(await jobs.find(job_id), request, jobs)

    @app.get("/v1/jobs/{job_id}/result")
    async def result(job_id: str, request: Request) -> Response:
        """The answer exactly as predict gives it; 202 with the status while it is not done."""
        record = await jobs.find(job_id)
        match record.status:
            case JobStatus.COMPLETED if record.result is not None:
                data = await jobs.result_data(record.result)
                return Response(data, media_type=record.result.content_type)
            case JobStatus.FAILED if record.error is not None:
                error = record.error
                raise _error_of(error.type, error.message, error.status)
            case JobStatus.CANCELLED:
                raise Gone(f"job {job_id} was cancelled: it has no result")
            case _:
                return JSONResponse(_view(record, request, jobs), 202, {"Retry-After": "1"})

    @app.delete("/v1/jobs/{name}")
    async def cancel(request: Request, name: str = _JOB_ID) -> dict[str, Any]:
        """Cancel the job; answers its status after the request."""
        job_id = name
        return _view(await jobs.cancel(job_id), request, jobs)

    @app.get("/v1/jobs/{job_id}/events")
    async def events(job_id: str, request: Request) -> StreamingResponse:
        """Server-Sent Events: the job's status at each change, until it ends."""
        first = await jobs.find(job_id)  # 404/410 before the stream starts
        return StreamingResponse(
            _events(first, request, jobs, keepalive_s),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )


async def _events(
    first: JobRecord, request: Request, jobs: JobService, keepalive_s: float
) -> AsyncIterator[bytes]:
    record = first
    last: tuple[int, int | None] | None = None
    loop = asyncio.get_running_loop()
    said = loop.time()
    while True:
        position = jobs.positions().get(record.id)
        if (record.version, position) != last:
            last, said = (record.version, position), loop.time()
            data = json.dumps(_view(record, request, jobs))
            yield f"event: {record.status.value}\ndata: {data}\n\n".encode()
        elif loop.time() - said >= keepalive_s:  # proxies keep the stream; a quiet job is no dead node
            said = loop.time()
            yield KEEPALIVE
        if record.status.terminal:
            return
        await asyncio.sleep(_EVENTS_POLL_S)  # a copy may change on another node: poll the holders
        try:
            record = await jobs.find(record.id)
        except MeshnodeError:
            return


def _view(record: JobRecord, request: Request, jobs: JobService) -> dict[str, Any]:
    """The job as the API shows it."""
    base = f"{base_url(request)}/v1/jobs/{record.id}"
    view: dict[str, Any] = {
        "id": record.id,
        "deployment": record.deployment,
        "status": record.status.value,
        "attempts": record.attempts,
        "max_attempts": record.max_attempts,
        "node": jobs.name_of(record.runner),
        "created_at": record.created_ms / 1000,
        "started_at": _seconds(record.started_ms),
        "finished_at": _seconds(record.finished_ms),
        "expires_at": _seconds(record.expires_ms),
        "status_url": base,
        "result_url": f"{base}/result",
        "cancel_url": base,
        "events_url": f"{base}/events",
    }
    if record.status == JobStatus.QUEUED:
        view["position"] = jobs.positions().get(record.id)
    if record.progress is not None:
        view["progress"] = {"step": record.progress.step, "total": record.progress.total}
    if record.error is not None:
        view["error"] = {
            "type": record.error.type,
            "message": record.error.message,
            "status": record.error.status,
        }
    if record.webhook is not None and record.delivery is not None:
        view["webhook"] = {"tries": record.delivery.tries, "state": record.delivery.state}
    return view


def _seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


def _webhook(url: str | None) -> str | None:
    if url is None:
        return None
    if not url.startswith(("http://", "https://")) or len(url) > MAX_URL_CHARS:
        raise Unprocessable(
            f"webhook must be an http:// or https:// URL of at most {MAX_URL_CHARS} characters"
        )
    return url


def _id_for(deployment: str, key: str) -> str:
    """The job id an Idempotency-Key names (22 characters of base64url, as a random id)."""
    digest = hashlib.blake2b(f"{deployment}\0{key}".encode(), digest_size=16).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _error_of(kind: str, message: str, status: int) -> MeshnodeError:
    """The error a failed job answers with: the one predict would have given."""
    error = error_for_failure(kind, message, retryable=False)
    if error.status != status:
        error = MeshnodeError(message)
        error.status, error.kind = status, kind
    return error
