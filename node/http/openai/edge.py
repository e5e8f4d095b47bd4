"""What every OpenAI route does around its kind's mapping: read, validate, call, answer.

The same path as ``POST /v1/predict`` (``http/predict.py``), with its helpers rather than copies:

- the body is read as predict reads it (``body.py``: 413 past the node's size limit, 400 for what
  is not JSON, 422 for what the mesh cannot carry), then validated by the route's pydantic model in
  strict mode (``read_params``): a wrong parameter is a 400 naming it as OpenAI's ``param``;
- each predictor call is a ``Call`` envelope with the request's id, its deadline
  (``X-Request-Timeout``, else the node's default) and the kind's body, committed by the node's
  ``serve`` (``Forwarder.serve``: routing, failover, backpressure, cold starts) with the hint
  (``X-Mesh-Hint`` first, else a model named inside a deployment) and, for chat, the conversation's
  affinity key;
- ``n`` results are ``n`` calls made concurrently (``serve_all``); their ids are the request's id,
  then ``<id>.1``, ``<id>.2``, ... so that they never clash in a replica's table of requests;
- answers carry ``X-Mesh-Route`` (the nodes the first call crossed) and ``X-Mesh-Attempts`` (the
  replicas tried over all calls), as predict's do; ``X-Request-Id`` comes from the app's middleware.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from ...dataplane.forward import Served
from ...errors import MeshnodeError, PredictorError, error_for_failure
from ...mesh.envelope import MAX_ID_CHARS, Call, Failure, Reply
from ..app import request_id
from ..body import parse_json_object, read_body
from ..predict import (
    ATTEMPTS_HEADER,
    ROUTE_HEADER,
    PredictLimits,
    Serve,
    hint_of,
    timeout_of,
    too_large_message,
)
from .errors import ParamError, error_response
from .models import Catalog, Target

__all__ = [
    "Edge",
    "openai_errors",
    "read_params",
    "refuse_failed",
    "reply_data",
    "route_headers",
    "serve_all",
]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
Handler = Callable[..., Awaitable[Response]]


def openai_errors(handler: Handler) -> Handler:
    """`handler` answering every error in OpenAI's shape (a bug: a 500, its traceback in the log)."""

    @functools.wraps(handler)
    async def answer(request: Request, *args: Any, **kwargs: Any) -> Response:
        rid = request_id(request)
        try:
            return await handler(request, *args, **kwargs)
        except MeshnodeError as exc:
            return error_response(exc, rid)
        except Exception:
            log.exception("unhandled error in %s %s (request id %s)", request.method, request.url.path, rid)
            return error_response(MeshnodeError("internal server error"), rid)

    return answer


async def read_params(request: Request, schema: type[M], max_bytes: int) -> M:
    """The body as `schema`: read and checked as predict's, then validated strictly (400 naming the param)."""
    raw = await read_body(request, max_bytes, too_large_message(request, max_bytes))
    body = parse_json_object(raw)
    try:
        return schema.model_validate(body, strict=True)
    except ValidationError as exc:
        error = exc.errors()[0]
        param = _param(error.get("loc", ()))
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if error.get("type") == "missing":
            raise ParamError(param, f"{param} is required", code="missing_required_parameter") from None
        raise ParamError(param or None, f"{param}: {message}" if param else message) from None


@dataclass(frozen=True)
class Edge:
    """What the routes share: the node's ``serve``, its limits, and the catalog of deployments."""

    serve: Serve
    limits: PredictLimits
    catalog: Catalog

    def calls(
        self, request: Request, target: Target, bodies: Sequence[dict[str, Any]], *, stream: bool, accept: str
    ) -> list[Call]:
        """One ``Call`` per body, all with the request's deadline; ids as the module docstring says."""
        rid = request_id(request)
        timeout_ms = int(timeout_of(request, self.limits.default_timeout_s) * 1000)
        request.state.deployment = target.deployment  # counted per deployment (route_metrics.py)
        return [
            Call(
                request_id=rid if index == 0 else f"{rid[: MAX_ID_CHARS - 8]}.{index}",
                deployment=target.deployment,
                body=body,
                header=accept or None,
                stream=stream,
                accept=accept,
                timeout_ms=timeout_ms,
            )
            for index, body in enumerate(bodies)
        ]

    def hint(self, request: Request, target: Target) -> str | None:
        """The client's X-Mesh-Hint, else the model named inside the deployment."""
        return hint_of(request) or target.hint


async def serve_all(
    serve: Serve, calls: Sequence[Call], hint: str | None, affinity: str | None = None
) -> list[Served]:
    """Commit every call at once; when one fails before its output, the others are let go and it raises."""
    if len(calls) == 1:
        return [await serve(calls[0], hint, affinity=affinity)]
    tasks = [asyncio.ensure_future(serve(call, hint, affinity=affinity)) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is None:
                with contextlib.suppress(Exception):
                    await task.result().rest.aclose()  # cancels that request where it runs
        raise


async def reply_data(served: Served) -> Any:
    """The final answer of a call that does not stream: its ``Reply``'s data, or the error it ended with."""
    final = served.first
    async with contextlib.aclosing(served.rest) as rest:
        async for message in rest:
            final = message
    match final:
        case Reply(_, data, _):
            return data
        case Failure(_, kind, text, retryable):
            raise error_for_failure(kind, text, retryable=retryable)
        case _:
            raise PredictorError(f"the replica ended request {served.first.request_id} without an answer")


async def refuse_failed(served: Sequence[Served]) -> None:
    """Raise the error of a call that failed before its output, letting the other calls go first.

    A stream's status is sent with its first event, so what failed before any output still gets
    its own status (a 422 from the app, say) rather than an error event inside a 200.
    """
    failed = next((one.first for one in served if isinstance(one.first, Failure)), None)
    if failed is None:
        return
    for one in served:
        with contextlib.suppress(Exception):
            await one.rest.aclose()
    assert isinstance(failed, Failure)
    raise error_for_failure(failed.kind, failed.message, retryable=failed.retryable)


def route_headers(served: Sequence[Served]) -> dict[str, str]:
    """X-Mesh-Route of the first call, X-Mesh-Attempts over all of them."""
    return {
        ROUTE_HEADER: ",".join(served[0].route),
        ATTEMPTS_HEADER: str(sum(one.attempts for one in served)),
    }


def _param(loc: Sequence[int | str]) -> str:
    """Pydantic's error location as OpenAI names a parameter: ``messages[0].content``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
