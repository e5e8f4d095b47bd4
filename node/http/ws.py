"""``GET /v1/ws/predict/{deployment}`` (WebSocket): one request in; its progress, then its answer, out.

The socket carries one request, as ``POST /v1/predict/{deployment}`` does, for a client that wants
to watch it run (a diffusion's steps and previews):

1. The client sends one message: the JSON body predict takes (text, or UTF-8 bytes). Predict's
   headers come as query parameters, since a browser's WebSocket cannot set headers: ``hint``
   (``X-Mesh-Hint``) and ``timeout`` in seconds (``X-Request-Timeout``); a client that can send
   headers may send those instead (a query parameter wins). ``X-Request-Id`` names the request. The
   body reaches the predictor untouched: nothing in it is read as an option but ``"stream"``.
2. The server sends events, one JSON text message each:
   - ``{"type": "progress", "step", "total", "preview"?}``, the predictor's reports (``preview``: a
     base64 JPEG), throttled where they are made (``inference/progress.py``);
   - for a streaming request (``"stream": true``), ``{"type": "chunk", "data"}`` per piece;
   - last, ``{"type": "result", "data", "request_id", "route"}``: ``data`` is predict's JSON answer
     (a file as ``{"content_type", "base64"}``, as predict gives it without a file ``Accept``;
     ``null`` for a stream, whose chunks were the answer), or ``{"type": "error", "status",
     "error": {"type", "message", "request_id"}}`` with predict's status and error body.
3. The server closes: 1000 after a result; after an error, 4000 plus the status predict would have
   answered (4400 bad JSON, 4404 unknown deployment, 4413 too large, 4422, 4429, 4503, 4504 past the
   deadline, 4500), the convention of graphql-ws.

Closing the socket cancels the request by predict's path: the task relaying its answer is cancelled,
which closes the forwarder's generator, which sends ``Cancel`` to the replica, across a hop too; the
predictor stops at its next ``report_progress``.

Bounds: the request message as predict's body (``max_request_bytes``; uvicorn closes with 1009,
unread, a message over twice that, ``max_message_bytes``); the deadline runs from the handshake, so
a client that never sends is closed at it; messages after the request are read and ignored (reading
them is how a close is seen). The gate (``gate.py``) checks API keys on the handshake.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from typing import Any

from fastapi import FastAPI
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..dataplane.answers import past_deadline
from ..errors import (
    DeadlineExceeded,
    MeshnodeError,
    PayloadTooLarge,
    PredictorError,
    error_fields,
    error_for_failure,
)
from ..mesh.envelope import Call, Chunk, Envelope, Failure, Progress, Reply
from .app import request_id_of
from .body import parse_json_object
from .predict import (
    PredictLimits,
    Serve,
    checked_hint,
    checked_timeout,
    hint_of,
    timeout_of,
)
from .request_metrics import CLIENT_CLOSED, RequestMeter

__all__ = ["WS_PREDICT_PATH", "add_ws_routes", "max_message_bytes"]

log = logging.getLogger(__name__)

WS_PREDICT_PATH = "/v1/ws/predict/{deployment}"
NORMAL_CLOSURE = 1000
_ERROR_CLOSE_BASE = 4000
# The predictor's answer, as predict's JSON: no file Accept, so a file comes as base64 JSON.
_ACCEPT = "application/json"
# Past the deadline the replica answers 504 by itself; this is for a client too slow to read it.
_SEND_GRACE_S = 5.0


def max_message_bytes(max_request_bytes: int) -> int:
    """uvicorn's limit on one incoming message: room above the request limit for a clear error."""
    return 2 * max_request_bytes


def add_ws_routes(
    app: FastAPI, serve: Serve, limits: PredictLimits, meter: RequestMeter | None = None
) -> None:
    """Add the WebSocket predict route, committing calls with `serve` under predict's `limits`.

    Each socket's request is counted with predict's in `meter`, by the status predict would have
    answered (200 for a result, 499 when the client closed first).
    """
    meter = meter or RequestMeter(lambda _name: False)

    async def predict_socket(websocket: WebSocket, deployment: str) -> None:
        started, series = meter.clock(), meter.begin(deployment)
        status = CLIENT_CLOSED
        try:
            code = await _Session(websocket, deployment, serve, limits).run()
            status = 200 if code == NORMAL_CLOSURE else code - _ERROR_CLOSE_BASE if code else CLIENT_CLOSED
        finally:
            meter.end(series, status, meter.clock() - started)

    app.add_api_websocket_route(WS_PREDICT_PATH, predict_socket, name="predict_socket")


class _Session:
    """One socket, one request: read it, relay its events, close with the outcome."""

    def __init__(self, websocket: WebSocket, deployment: str, serve: Serve, limits: PredictLimits) -> None:
        self._ws = websocket
        self._deployment = deployment
        self._serve = serve
        self._limits = limits
        self._rid = request_id_of(websocket.scope)

    async def run(self) -> int | None:
        """Serve the socket to its end; the close code (None: the client left first). Never raises."""
        await self._ws.accept()
        try:
            code = await self._serve_request()
        except MeshnodeError as exc:
            code = await self._send_error(exc)
        except WebSocketDisconnect:
            return None  # the client went away while we sent: its request was cancelled on the way out
        except Exception:
            log.exception("unhandled error on the predict WebSocket (request id %s)", self._rid)
            code = await self._send_error(MeshnodeError("internal server error"))
        if code is not None:
            # RuntimeError: the socket closed meanwhile; there is no one left to tell.
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await self._ws.close(code)
        return code

    async def _serve_request(self) -> int | None:
        """The close code once the answer is sent; None when the client closed first."""
        loop = asyncio.get_running_loop()
        hint, timeout_s = self._options()
        deadline = loop.time() + timeout_s
        body = await self._read_request(deadline)
        if body is None:
            return None
        remaining_ms = int((deadline - loop.time()) * 1000)
        if remaining_ms <= 0:
            raise DeadlineExceeded(f"the request's deadline of {timeout_s:g} s passed before it was read")
        call = Call(
            request_id=self._rid,
            deployment=self._deployment,
            body=body,
            header=_ACCEPT,
            stream=body.get("stream") is True,
            accept=_ACCEPT,
            timeout_ms=remaining_ms,
            progress=True,
        )
        relay = asyncio.create_task(self._relay(call, hint, deadline + _SEND_GRACE_S))
        closed = asyncio.create_task(self._until_closed())
        try:
            await asyncio.wait((relay, closed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Whichever did not finish: the relay when the client closed (cancelling it cancels the
            # request upstream), the reader once the answer is out; both if this handler is stopped.
            for task in (relay, closed):
                task.cancel()
            outcome, _ = await asyncio.gather(relay, closed, return_exceptions=True)
        if isinstance(outcome, asyncio.CancelledError):
            return None
        if isinstance(outcome, BaseException):
            raise outcome
        return NORMAL_CLOSURE

    def _options(self) -> tuple[str | None, float]:
        query = self._ws.query_params
        raw_hint, raw_timeout = query.get("hint"), query.get("timeout")
        hint = checked_hint(raw_hint, "hint") if raw_hint is not None else hint_of(self._ws)
        timeout_s = (
            checked_timeout(raw_timeout, "timeout")
            if raw_timeout is not None
            else timeout_of(self._ws, self._limits.default_timeout_s)
        )
        return hint, timeout_s

    async def _read_request(self, deadline: float) -> dict[str, Any] | None:
        """The request message, checked as predict checks a body; None when the client closed."""
        try:
            async with asyncio.timeout_at(deadline):
                message = await self._ws.receive()
        except TimeoutError:
            raise DeadlineExceeded("no request message arrived before the deadline") from None
        if message["type"] == "websocket.disconnect":
            return None
        text, data = message.get("text"), message.get("bytes")
        limit = self._limits.max_request_bytes
        # Characters never outnumber UTF-8 bytes: a long text is refused before it is encoded.
        if text is not None and len(text) > limit:
            raise PayloadTooLarge(f"request message of {len(text)} characters is over the {limit} byte limit")
        raw = text.encode() if text is not None else data or b""
        if len(raw) > limit:
            raise PayloadTooLarge(f"request message of {len(raw)} bytes is over the {limit} byte limit")
        return parse_json_object(raw, "request message")

    async def _until_closed(self) -> None:
        """Read (and ignore) what the client sends after its request, until it closes."""
        while (await self._ws.receive())["type"] != "websocket.disconnect":
            pass

    async def _relay(self, call: Call, hint: str | None, give_up_at: float) -> None:
        """Commit the call and send its events until its answer; MeshnodeError for its failure."""
        try:
            async with asyncio.timeout_at(give_up_at):
                served = await self._serve(call, hint)
                async with contextlib.aclosing(served.rest) as rest:
                    message: Envelope | None = served.first
                    while message is not None:
                        if await self._send_event(message, served.route):
                            return
                        message = await anext(rest, None)
        except TimeoutError:
            raise past_deadline(call) from None
        raise PredictorError(f"the replica ended request {self._rid} without an answer")

    async def _send_event(self, message: Envelope, route: tuple[str, ...]) -> bool:
        """Send one envelope as its event; whether it was the last."""
        match message:
            case Progress(_, step, total, preview):
                event: dict[str, Any] = {"type": "progress", "step": step, "total": total}
                if preview is not None:
                    event["preview"] = base64.b64encode(preview).decode("ascii")
            case Chunk(_, _, data):
                event = {"type": "chunk", "data": _as_json(data, "application/octet-stream")}
            case Reply(_, data, content_type):
                data = _as_json(data, content_type)
                event = {"type": "result", "data": data, "request_id": self._rid, "route": list(route)}
            case Failure(_, kind, text, retryable):
                raise error_for_failure(kind, text, retryable=retryable)
            case _:
                return False  # nothing else belongs to a request's answer
        # allow_nan=False: strict JSON, as predict's JSONResponse sends it.
        await self._ws.send_text(json.dumps(event, allow_nan=False))
        return event["type"] == "result"

    async def _send_error(self, exc: MeshnodeError) -> int | None:
        """Send `exc` as the error event; the close code that goes with it (None: the client left)."""
        error = {"type": exc.kind, "message": exc.message, "request_id": self._rid, **error_fields(exc)}
        event: dict[str, Any] = {"type": "error", "status": exc.status, "error": error}
        if exc.retry_after_s is not None:
            event["retry_after"] = exc.retry_after_s
        try:
            await self._ws.send_text(json.dumps(event))
        except (WebSocketDisconnect, RuntimeError):
            return None
        return _ERROR_CLOSE_BASE + exc.status


def _as_json(data: Any, content_type: str) -> Any:
    """Bytes as predict's JSON carries a file (``{"content_type", "base64"}``); anything else as is."""
    if isinstance(data, bytes):
        return {"content_type": content_type, "base64": base64.b64encode(data).decode("ascii")}
    return data
