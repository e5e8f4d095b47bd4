"""The HTTP API every node serves: liveness, readiness and this node's view of the mesh.

``create_app(node)`` builds the FastAPI app; the agent runs it under uvicorn on its own event loop, so
handlers are ``async def`` and read the node's state without locks. ``server.py`` adds
``/v1/deployments`` (``deployments.py``) and ``/metrics`` (``metrics.py``) to the same app and puts
the ``/v1/predict`` lane (``predict.py``) in front of it.

Every response carries ``X-Request-Id`` (the client's, when it sent a sane one), and every error,
whether raised on purpose (``MeshnodeError``), by routing (404, 405), by validation (422) or by a bug
(500), has one JSON shape: ``{"error": {"type", "message", "request_id"}}``. A traceback goes to the
log with the request id, never into a body.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import re
from collections.abc import Iterator, Mapping
from http import HTTPStatus
from typing import Any, Literal, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..errors import MeshnodeError, error_fields
from ..logs import set_request_id
from . import openapi
from .api_docs import add_api_docs_routes
from .body import parse_json, read_body
from .doctor import add_doctor_routes
from .mesh_render import MemberSource, MeshRender, mesh_body

__all__ = [
    "REQUEST_ID_HEADER",
    "MemberView",
    "MeshResponse",
    "MeshView",
    "create_app",
    "error_for",
    "error_response",
    "mesh_body",
    "read_json",
    "request_id",
    "request_id_of",
]

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID_KEY = REQUEST_ID_HEADER.lower().encode()  # ASGI header names arrive lower-cased
# A client's request id is echoed into our headers and logs, so only short, plain tokens are reused.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
# A new request id: 16 hex digits drawn at start (and again in a forked child), then 16 of a count.
# As unique as uuid4's 32 hex digits, without a system call and an object per request; not a
# secret (a client may choose its own id).
_new_ids: Iterator[str]


def _draw_ids() -> None:
    global _new_ids
    prefix = os.urandom(8).hex()
    _new_ids = map(f"{prefix}{{:016x}}".format, itertools.count(1))


_draw_ids()
os.register_at_fork(after_in_child=_draw_ids)
# While joining the node expects to be ready within a probe round or two; clients poll this often.
_NOT_READY_RETRY_AFTER_S = 1.0
# Validation messages name at most this many problems, so a huge bad body gives a short answer.
_MAX_VALIDATION_PROBLEMS = 3


class MeshView(Protocol):
    """What the HTTP API needs from the agent (a fake in tests)."""

    @property
    def node_id(self) -> str:
        """This node's id."""
        ...

    def mesh_view(self) -> dict[str, Any]:
        """The ``GET /v1/mesh`` body."""
        ...

    def readiness(self) -> tuple[bool, str]:
        """Whether the node can serve or forward, and why not."""
        ...


class MemberView(BaseModel):
    """One member as this node sees it: an entry of ``GET /v1/mesh`` (README.md, "HTTP")."""

    id: str
    name: str
    status: Literal["alive", "suspect", "dead", "left"]
    http: str
    tls: bool  # whether `http` serves HTTPS
    mesh: str
    data: str  # the data-plane address peers forward requests to
    data_key: str  # its data-plane public key (X25519, Z85); only holders of the mesh token can use it
    key_ids: list[str]  # fingerprints of the mesh tokens it holds, primary first (rotation)
    region: str
    zone: str
    device: dict[str, Any]
    load: dict[str, Any]
    models: list[str]
    hints: list[str]
    incarnation: int
    # Per deployment hosted there: its serving state, and its measured speed.
    replicas: dict[str, Any]
    speeds: dict[str, Any]
    # How peers reach it (docs/edge.md): dialed at `mesh`/`data`, through `relays` (node ids), or
    # not known yet ("").
    reach: Literal["", "direct", "relayed"]
    relays: list[str]
    # Requests it took from clients over its last window, per deployment and per peer it sent them
    # to (docs/dashboard.md, "Traffic").
    traffic: dict[str, Any]
    # The models in its store, and those it is pulling (docs/models.md); {} from older nodes.
    store: dict[str, Any] = {}
    pulls: dict[str, Any] = {}
    # Gossip its release takes beyond the first protocol ("load-news": load as a delta,
    # docs/membership.md); [] from a release before any: the mesh then gossips load whole.
    features: list[str] = []


class MeshResponse(BaseModel):
    """The ``GET /v1/mesh`` body: this node's id and every member it knows."""

    self: str
    members: list[MemberView]


def request_id_of(scope: Scope) -> str:
    """The request's id: the client's X-Request-Id when it is a short plain token, else a new one.

    Kept in the scope's state, so every layer that asks gets the same id, and set as the current
    task's request (``meshnode.logs``), so every log line the request causes carries it.
    """
    state = scope.setdefault("state", {})
    rid = state.get("request_id")
    if rid is None:
        for name, value in scope["headers"]:
            if name == _REQUEST_ID_KEY:
                offered = value.decode("latin-1")
                if _SANE_REQUEST_ID.fullmatch(offered):
                    rid = offered
                break
        if rid is None:
            rid = next(_new_ids)
        state["request_id"] = rid
    set_request_id(rid)
    return str(rid)


def request_id(request: Request) -> str:
    """The id of this request, as set by the request-id middleware."""
    return str(request.state.request_id)


def create_app(agent: MeshView, members: MemberSource | None = None) -> FastAPI:
    """Build the node's FastAPI app around ``agent`` (what it reads of the node).

    With the gossiped `members`, ``GET /v1/mesh`` answers from JSON kept per member
    (``mesh_render.py``): the same bytes as ``agent.mesh_view()`` made, without rendering the whole
    view on the event loop at every poll.
    """
    # /docs and /openapi.json are api_docs.py's routes: Swagger UI from the package, no CDN.
    app = FastAPI(title="meshnode", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(_RequestIdMiddleware)
    app.add_exception_handler(MeshnodeError, _meshnode_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    openapi.install(app)
    add_api_docs_routes(app)

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: 200 whenever the process answers."""
        return {"status": "ok", "node": agent.node_id}

    @app.get("/ready", responses={503: {"description": "still joining or unable to serve"}})
    async def ready() -> JSONResponse:
        """Readiness: 200 once joined and able to serve or forward, else 503 with the reason."""
        is_ready, reason = agent.readiness()
        if is_ready:
            return JSONResponse({"ready": True})
        return JSONResponse(
            {"ready": False, "reason": reason},
            status_code=503,
            headers={"Retry-After": _retry_after(_NOT_READY_RETRY_AFTER_S)},
        )

    rendered = MeshRender(agent.node_id, members) if members is not None else None

    @app.get("/v1/mesh", response_model=MeshResponse)
    async def mesh() -> Any:
        """This node's view of the mesh."""
        if rendered is None:
            return agent.mesh_view()
        return Response(await rendered.body(), media_type="application/json")

    add_doctor_routes(app, agent)  # GET /v1/doctor[/dial/{node}]: what `meshnode doctor` compares
    return app


def error_response(
    status: int,
    kind: str,
    message: str,
    rid: str,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The one error shape: ``{"error": {"type", "message", "request_id"}}`` (and `extra`'s fields)."""
    body = {"error": {"type": kind, "message": message, "request_id": rid, **(extra or {})}}
    return JSONResponse(body, status_code=status, headers=headers)


def error_for(exc: MeshnodeError, rid: str) -> JSONResponse:
    """The response for a meshnode error: its status, its kind, and Retry-After when retryable."""
    headers = None if exc.retry_after_s is None else {"Retry-After": _retry_after(exc.retry_after_s)}
    return error_response(exc.status, exc.kind, exc.message, rid, headers, error_fields(exc))


async def _meshnode_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MeshnodeError)
    return error_for(exc, request_id(request))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    phrase = HTTPStatus(exc.status_code).phrase
    message = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else phrase
    # Starlette's own 404 and 405 say only the phrase; name what was asked for instead.
    if exc.status_code == 404 and message == phrase:
        message = f"no such path: {request.url.path}"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
        # Starlette names only the first route's methods; the path may have several routes.
        headers["Allow"] = ", ".join(_allowed(request))
    kind = phrase.lower().replace(" ", "_").replace("-", "_")
    return error_response(exc.status_code, kind, message, request_id(request), headers)


def _allowed(request: Request) -> list[str]:
    """Every method some route serves on this request's path."""
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, APIRoute) and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods or set()
    return sorted(methods)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', 'invalid')}"
        for error in exc.errors()
    ]
    message = "; ".join(problems[:_MAX_VALIDATION_PROBLEMS]) or "invalid request"
    if len(problems) > _MAX_VALIDATION_PROBLEMS:
        message += f" (and {len(problems) - _MAX_VALIDATION_PROBLEMS} more)"
    return error_response(422, "validation", message, request_id(request))


def _retry_after(seconds: float) -> str:
    # Retry-After is whole seconds; rounding down to 0 would invite an immediate retry storm.
    return str(max(1, math.ceil(seconds)))


class _RequestIdMiddleware:
    """Tags each request with an id, echoes it as a header and turns unexpected exceptions into 500s.

    The 500 is produced here rather than by an ``Exception`` handler because Starlette sends that
    handler's response from its outermost middleware, which bypasses this one and so would lose the
    request-id header.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        rid = request_id_of(scope)
        started = False
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started, status = True, message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = rid
            await send(message)

        try:
            await self._app(scope, receive, send_with_id)
        except Exception:
            logger.exception("unhandled error in %s %s (request id %s)", scope["method"], scope["path"], rid)
            if started:
                raise  # half a response is out: only closing the connection tells the client
            await error_response(500, "internal", "internal server error", rid)(scope, receive, send_with_id)
        # One line per request for whoever follows requests (--log-level debug); the check is cheap.
        logger.debug("%s %s answered %d", scope["method"], scope["path"], status)


async def read_json(request: Request, max_bytes: int, what: str) -> object:
    """The request's JSON body, read at most `max_bytes` far (413 past it; 400/422 as ``body.parse_json``)."""
    return parse_json(await read_body(request, max_bytes, f"{what} is at most {max_bytes} bytes"), what)
