"""OpenAI's error body, with the statuses and retry headers the ``openai`` SDKs act on.

Every error of an OpenAI route is ``{"error": {"message", "type", "param", "code", "request_id"}}``
(OpenAI's four fields, plus meshnode's request id, which the SDKs ignore and logs need). The status
is meshnode's own (``node/errors.py``): the SDK turns 400, 401, 403, 404, 409, 422 and 429 into
their own exception classes and any 5xx into ``InternalServerError``. ``type`` follows OpenAI:

    400 404 406 409 413 422  invalid_request_error   (code: model_not_found for an unknown model,
                                                      content_policy_violation with a ``category``
                                                      for a moderation refusal)
    401                      authentication_error    (from the API-key gate, in meshnode's shape)
    403                      permission_error
    429                      rate_limit_error        (code rate_limit_exceeded)
    500 503 504              server_error

Retries: the SDKs retry 408, 409, 429 and 5xx by themselves, waiting ``Retry-After`` (up to 60 s).
meshnode knows better than the status which errors a retry may fix, so every error says it with
OpenAI's own ``x-should-retry`` header: ``true`` for 429 and 503 (full, loading, a replica lost;
they carry ``Retry-After``), ``false`` for everything else, so a predictor that raised (500), a
deadline that passed (504) or a request id already in flight (409) is not sent three more times.

A failure after a stream started cannot change the status: it ends the stream with an SSE event
``data: {"error": {...}}``, which the SDKs raise as ``APIError`` (``stream_error``).
"""

from __future__ import annotations

import json
import math

from starlette.responses import JSONResponse

from ...errors import BadRequest, MeshnodeError, NotFound, error_fields

__all__ = ["ModelNotFound", "ParamError", "error_body", "error_response", "stream_error"]

_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
# OpenAI's own codes where meshnode has the same error: a moderation refusal is OpenAI's
# content_policy_violation (its images API answers a refused prompt so), with the category beside it.
_CODES = {"overloaded": "rate_limit_exceeded", "moderation": "content_policy_violation"}


class ParamError(BadRequest):
    """A request parameter is missing or wrong (400), naming it as OpenAI's ``param``."""

    kind = "invalid_request"

    def __init__(self, param: str | None, message: str, *, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param = param
        self.code = code


class ModelNotFound(NotFound):
    """No deployment, and no model inside one, has this name (404 ``model_not_found``)."""

    kind = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model {model!r} does not exist in this mesh: it names no deployment and no model "
            "served inside one (GET /v1/models lists them)"
        )
        self.param = "model"
        self.code = "model_not_found"


def error_body(exc: MeshnodeError, rid: str) -> dict[str, object]:
    """The OpenAI error body for a meshnode error."""
    kind = "server_error" if exc.status >= 500 else _TYPES.get(exc.status, "invalid_request_error")
    param = getattr(exc, "param", None)
    code = getattr(exc, "code", None) or _CODES.get(exc.kind, exc.kind)
    body = {"message": exc.message, "type": kind, "param": param, "code": code, "request_id": rid}
    return {"error": {**body, **error_fields(exc)}}


def error_response(exc: MeshnodeError, rid: str) -> JSONResponse:
    """The HTTP answer for a meshnode error: its status, OpenAI's body, the retry headers."""
    headers = {"x-should-retry": "true" if exc.retryable else "false"}
    if exc.retryable and exc.retry_after_s is not None:
        # Whole seconds; rounding down to 0 would invite an immediate retry storm (as app.py).
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    return JSONResponse(error_body(exc, rid), status_code=exc.status, headers=headers)


def stream_error(exc: MeshnodeError, rid: str) -> bytes:
    """The SSE event that ends a stream that broke after it started."""
    return f"data: {json.dumps(error_body(exc, rid))}\n\n".encode()
