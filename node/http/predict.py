"""``POST /v1/predict/{deployment}``: JSON in; JSON, a stream or a file out.

The handler turns the HTTP request into a ``Call`` envelope and hands it to the forwarder
(``Forwarder.serve`` in ``dataplane/forward.py``), which yields the replica's ``Chunk``s and its final
``Reply`` or ``Failure``.

- The body is JSON the mesh can carry (``body.py``): 400 for what is not JSON (``NaN``, ``1e400``),
  422 for what msgpack cannot hold (integers past 64 bits, lone surrogates, deep nesting), 413 past
  the size limit (the rest of the body read, so the client gets the answer).
- ``"stream": true`` in the body streams: Server-Sent Events when the client accepts
  ``text/event-stream``, else newline-delimited chunks; each chunk leaves as soon as the predictor
  yields it. A failure after the stream started ends it with an error event (SSE) or line. An SSE
  stream quiet for ``keepalive_s`` gets a ``: keep-alive`` comment (``sse.py``), so proxies keep it.
- ``Accept: image/png`` (or any file type) returns the file whose path the predictor returned.
- ``X-Request-Timeout`` (seconds) sets the deadline; past it the answer is 504.
- ``X-Mesh-Hint`` (or fal's ``X-Fal-Runner-Hint``) steers the request to a replica whose gossiped
  hints hold it (fal's hints).
- When the client goes away, the request is cancelled in the worker, across a forwarding hop too.
- Response headers: ``X-Mesh-Route`` (the nodes the request crossed, comma-separated),
  ``X-Request-Id``, and ``X-Mesh-Attempts`` (replicas tried; more than 1 after a failover).
- The answer goes first: the call's own bookkeeping after its Reply (the link's or the replica's:
  timers, in-flight counts, measured speed) runs once the answer left (``reply.PlainAnswer.then``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..dataplane.forward import HINT_HEADER, Served
from ..errors import (
    BadRequest,
    MeshnodeError,
    PredictorError,
    error_fields,
    error_for_failure,
)
from ..mesh.envelope import Call, Chunk, Envelope, Failure, Reply
from .app import REQUEST_ID_HEADER, error_for, error_response, request_id_of
from .body import parse_json_object, receive_body
from .reply import PlainAnswer, reply_answer
from .request_metrics import CLIENT_CLOSED, RequestMeter, Series
from .sse import KEEPALIVE_S, EventStream

log = logging.getLogger(__name__)

PREDICT_PREFIX = "/v1/predict/"
TIMEOUT_HEADER = "X-Request-Timeout"
ROUTE_HEADER = "X-Mesh-Route"
ATTEMPTS_HEADER = "X-Mesh-Attempts"
MAX_HINT_CHARS = 128
# fal's name for the same hint (its ``provide_hints``): fal users' code steers meshnode unchanged.
FAL_HINT_HEADER = "X-Fal-Runner-Hint"
MAX_TIMEOUT_S = 3600.0
# Deadlines travel in whole milliseconds: a shorter one would be zero, and every request past it.
MIN_TIMEOUT_S = 0.001
# The headers the lane reads, found in one pass over the request's (ASGI names are lower-case).
_CONTENT_LENGTH, _ACCEPT = b"content-length", b"accept"
_TIMEOUT, _HINT, _FAL_HINT = (h.lower().encode() for h in (TIMEOUT_HEADER, HINT_HEADER, FAL_HINT_HEADER))
_READ = frozenset({_CONTENT_LENGTH, _ACCEPT, _TIMEOUT, _HINT, _FAL_HINT})
_ROUTE, _ATTEMPTS, _REQUEST_ID = (
    h.lower().encode() for h in (ROUTE_HEADER, ATTEMPTS_HEADER, REQUEST_ID_HEADER)
)


class Serve(Protocol):
    """Commits a call to a replica somewhere in the mesh (``Forwarder.serve``)."""

    async def __call__(self, call: Call, hint: str | None = None, *, affinity: str | None = None) -> Served:
        """Commit `call`; `hint` steers by replicas' hints, `affinity` (a conversation) by hashing."""
        ...


@dataclass(frozen=True)
class PredictLimits:
    """The limits on every request this node takes."""

    default_timeout_s: float
    max_request_bytes: int
    # A comment on an SSE stream (predict's, the OpenAI routes') after this long with nothing sent.
    keepalive_s: float = KEEPALIVE_S


class PredictLane:
    """``POST /v1/predict/{deployment}`` served ahead of the FastAPI app; everything else goes to it.

    This is the hot path of every request, so it skips FastAPI's middleware stack, routing and
    response wrappers, which cost more CPU than the whole forwarding hop (bench/forwarding.py). It
    keeps the API's contract itself: the request id (``app.request_id_of``), the one JSON error
    shape (``app.error_response``), and 405 for other methods on these paths.
    """

    def __init__(
        self, app: ASGIApp, serve: Serve, limits: PredictLimits, meter: RequestMeter | None = None
    ) -> None:
        self._app = app
        self._serve = serve
        self._limits = limits
        self._meter = meter or RequestMeter(lambda _name: False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        deployment = path[len(PREDICT_PREFIX) :] if path.startswith(PREDICT_PREFIX) else ""
        if not deployment or "/" in deployment:
            await self._app(scope, receive, send)
            return
        rid = request_id_of(scope)
        meter = self._meter
        started = meter.clock()
        series = meter.begin(deployment)
        code = CLIENT_CLOSED  # until an answer starts
        try:
            response = await self._response(scope, receive, deployment, rid)
            code = response.status_code
            if isinstance(response, StreamingResponse):
                send = _timing_first_chunk(send, series, meter.clock, started)
            await response(scope, receive, send)
        finally:
            elapsed_s = meter.clock() - started
            meter.end(series, code, elapsed_s)
            # One line per request for whoever follows requests (--log-level debug): cheap when off.
            log.debug("POST %s answered %d in %.1f ms", path, code, elapsed_s * 1000)

    async def _response(
        self, scope: Scope, receive: Receive, deployment: str, rid: str
    ) -> Response | PlainAnswer:
        path = scope["path"]
        response: Response | PlainAnswer
        try:
            if scope["method"] != "POST":
                message = f"method {scope['method']} is not allowed on {path}"
                response = error_response(405, "method_not_allowed", message, rid, {"Allow": "POST"})
            else:
                response = await self._predict(scope, receive, deployment, rid)
        except MeshnodeError as exc:
            response = error_for(exc, rid)
        except Exception:
            log.exception("unhandled error in POST %s (request id %s)", path, rid)
            response = error_response(500, "internal", "internal server error", rid)
        if isinstance(response, Response):  # a PlainAnswer has the id among its headers already
            response.headers[REQUEST_ID_HEADER] = rid
        return response

    async def _predict(
        self, scope: Scope, receive: Receive, deployment: str, rid: str
    ) -> Response | PlainAnswer:
        limits = self._limits
        # The lane's headers in one pass, and no starlette Request: this runs for every request.
        found: dict[bytes, str] = {}
        for name, value in scope["headers"]:
            if name in _READ and name not in found:  # the first of a repeated header, as starlette's
                found[name] = value.decode("latin-1")
        declared = found.get(_CONTENT_LENGTH)
        limit = limits.max_request_bytes
        raw = await receive_body(receive, declared, limit, lambda: too_large_text(declared, limit))
        body = parse_json_object(raw)
        accept = found.get(_ACCEPT, "")
        timeout = found.get(_TIMEOUT)
        hint = found.get(_HINT)
        if hint is not None:
            hint = checked_hint(hint, HINT_HEADER)
        elif (hint := found.get(_FAL_HINT)) is not None:
            hint = checked_hint(hint, FAL_HINT_HEADER)
        call = Call(
            request_id=rid,
            deployment=deployment,
            body=body,
            header=accept or None,
            stream=body.get("stream") is True,
            accept=accept,
            timeout_ms=int(
                (limits.default_timeout_s if timeout is None else checked_timeout(timeout, TIMEOUT_HEADER))
                * 1000
            ),
        )
        # Errors before any output (none ready, all full, bad input) become proper statuses here.
        served = await self._serve(call, hint)
        first, messages = served.first, served.rest
        route, attempts = ",".join(served.route), str(served.attempts)
        if call.stream and isinstance(first, Chunk):
            headers = {ROUTE_HEADER: route, ATTEMPTS_HEADER: attempts, "Cache-Control": "no-cache"}
            sse = "text/event-stream" in accept
            chunks = _stream(first, messages, sse, call.request_id)
            if sse:
                return EventStream(chunks, keepalive_s=limits.keepalive_s, headers=headers)
            return StreamingResponse(chunks, media_type="application/x-ndjson", headers=headers)
        final = first
        if not isinstance(first, Reply):
            async for message in messages:
                final = message
        match final:
            case Reply(_, data, content_type):
                named = (
                    (_ROUTE, route.encode("latin-1")),
                    (_ATTEMPTS, attempts.encode()),
                    (_REQUEST_ID, rid.encode("latin-1")),
                )
                try:
                    answer = reply_answer(data, content_type, named)
                except Exception:
                    await _drained(messages)
                    raise
                # What is left of the call (its bookkeeping after its Reply) runs once the answer
                # left, off the request's latency (PlainAnswer.then).
                answer.then = messages
                return answer
            case Failure(_, kind, text, retryable):
                raise error_for_failure(kind, text, retryable=retryable)
            case _:
                raise PredictorError(f"the replica ended request {rid} without an answer")


async def _drained(messages: AsyncIterator[Envelope]) -> None:
    async for _ in messages:
        pass


def _timing_first_chunk(send: Send, series: Series, clock: Callable[[], float], started: float) -> Send:
    """`send`, noting when a stream's first non-empty chunk leaves (time to first chunk)."""
    waiting = True

    async def timed(message: Message) -> None:
        nonlocal waiting
        if waiting and message["type"] == "http.response.body" and message.get("body"):
            waiting = False
            series.first_chunk(clock() - started)
        await send(message)

    return timed


def too_large_message(request: Request, max_bytes: int) -> str:
    """The 413's words: the declared size when the client gave one, and the limit."""
    return too_large_text(request.headers.get("content-length"), max_bytes)


def too_large_text(declared: str | None, max_bytes: int) -> str:
    """The 413's words for a body whose Content-Length header says `declared` (None: no header)."""
    size = f"of {declared} bytes " if declared is not None and declared.isdigit() else ""
    return f"request body {size}is over the {max_bytes} byte limit"


def hint_of(request: HTTPConnection) -> str | None:
    """The client's routing hint (X-Mesh-Hint, or fal's header), checked; None without one."""
    for header in (HINT_HEADER, FAL_HINT_HEADER):
        raw = request.headers.get(header)
        if raw is not None:
            return checked_hint(raw, header)
    return None


def checked_hint(raw: str, name: str) -> str:
    """A routing hint given as `name` (a header or a query parameter); BadRequest when out of bounds."""
    if not 0 < len(raw) <= MAX_HINT_CHARS:
        raise BadRequest(f"{name} must be 1 to {MAX_HINT_CHARS} characters")
    return raw


def timeout_of(request: HTTPConnection, default_s: float) -> float:
    """The request's deadline in seconds: X-Request-Timeout, checked, else `default_s`."""
    raw = request.headers.get(TIMEOUT_HEADER)
    return default_s if raw is None else checked_timeout(raw, TIMEOUT_HEADER)


def checked_timeout(raw: str, name: str) -> float:
    """A deadline in seconds given as `name` (a header or a query parameter); BadRequest when bad."""
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a number of seconds, not {raw[:40]!r}") from None
    if not MIN_TIMEOUT_S <= value <= MAX_TIMEOUT_S or math.isnan(value):
        raise BadRequest(f"{name} must be {MIN_TIMEOUT_S:g} to {MAX_TIMEOUT_S:g} seconds")
    return value


async def _stream(
    first: Chunk, rest: AsyncGenerator[Envelope, None], sse: bool, rid: str
) -> AsyncIterator[bytes]:
    yield _frame(first.data, sse)
    try:
        # aclosing: a client that goes away closes `rest` now, which cancels the request upstream.
        async with contextlib.aclosing(rest):
            async for message in rest:
                match message:
                    case Chunk(_, _, data):
                        yield _frame(data, sse)
                    case Failure(_, kind, text, retryable):
                        yield _error_frame(error_for_failure(kind, text, retryable=retryable), rid, sse)
                        return
                    case Reply():
                        if sse:
                            yield b"event: done\ndata: {}\n\n"
                        return
    except MeshnodeError as exc:
        yield _error_frame(exc, rid, sse)


def _frame(data: Any, sse: bool) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    if not sse:
        return (text.replace("\n", " ") + "\n").encode()
    return ("".join(f"data: {line}\n" for line in text.split("\n")) + "\n").encode()


def _error_frame(error: MeshnodeError, rid: str, sse: bool) -> bytes:
    body = {"type": error.kind, "message": error.message, "request_id": rid, **error_fields(error)}
    payload = json.dumps({"error": body})
    return f"event: error\ndata: {payload}\n\n".encode() if sse else (payload + "\n").encode()
