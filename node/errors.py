"""The one error tree. Each error knows its HTTP status and whether a retry may succeed.

    MeshnodeError
    ├── ConfigError            400  bad flag, config file or address (never retryable)
    ├── BadRequest             400  malformed request body
    │   ├── Unprocessable      422  well-formed but not acceptable (not a JSON object, bad fields)
    │   ├── PayloadTooLarge    413
    │   └── Refused            400  the deployment's moderation refused it (a category, never the text)
    ├── NotFound               404  unknown deployment or path
    ├── NotAcceptable          406  no answer in a type the request's Accept allows
    ├── Conflict               409  a request id already in flight
    ├── Gone                   410  a job whose result has expired
    ├── NotReady               503  still joining or loading (retryable, with Retry-After)
    │   └── ModelUnavailable   503  a model not held here that no live peer can give now
    ├── Overloaded             429  saturated (retryable, with Retry-After)
    ├── DeadlineExceeded       504  past the request's deadline
    ├── StoreError             500  the node's sqlite state is unreadable
    └── PredictorError         500  the user's predictor raised (no traceback in the body)

Foreign exceptions (ZMQError, OSError, sqlite3 errors) are translated where they enter with
``raise ... from exc``; one handler in ``node/http/app.py`` turns these into JSON responses.
"""

from __future__ import annotations

from .mesh.moderation import CATEGORY, category_in, refusal_message


class MeshnodeError(Exception):
    """Base of every error meshnode raises on purpose."""

    status: int = 500
    retryable: bool = False
    kind: str = "internal"

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class ConfigError(MeshnodeError):
    """A flag, config file or address is invalid."""

    status = 400
    kind = "config"


class BadRequest(MeshnodeError):
    """The request body or parameters are malformed."""

    status = 400
    kind = "bad_request"


class Unprocessable(BadRequest):
    """The body parsed but is not what the endpoint accepts."""

    status = 422
    kind = "unprocessable"


class PayloadTooLarge(BadRequest):
    """The request body is over the size limit."""

    status = 413
    kind = "too_large"


class Refused(BadRequest):
    """The deployment's moderation refused the prompt or the output; ``category`` says which check.

    Not a failure of any replica: never retried elsewhere. The message names the category only,
    never the text that matched, and reads the same wherever it is made, so the category can be
    read back from a message that crossed a process or a node (``Refused.of``).
    """

    kind = "moderation"

    def __init__(self, category: str) -> None:
        category = category if CATEGORY.fullmatch(category) else "other"
        super().__init__(refusal_message(category))
        self.category = category

    @classmethod
    def of(cls, message: str) -> Refused:
        """The refusal a message made by ``Refused`` stands for ("other" when it names no category)."""
        return cls(category_in(message) or "other")


class NotFound(MeshnodeError):
    """Unknown deployment or resource."""

    status = 404
    kind = "not_found"


class NotAcceptable(MeshnodeError):
    """The answer exists in no type the request's Accept header allows."""

    status = 406
    kind = "not_acceptable"


class Conflict(MeshnodeError):
    """The request clashes with one in flight (the same X-Request-Id)."""

    status = 409
    kind = "conflict"


class Gone(MeshnodeError):
    """It existed, and is no more: a job past its result's time to live."""

    status = 410
    kind = "gone"


class NotReady(MeshnodeError):
    """The node or replica is still starting; try again shortly."""

    status = 503
    retryable = True
    kind = "not_ready"


class ModelUnavailable(NotReady):
    """The model is not held here and cannot be pulled now: no live holder, or every holder failed."""

    kind = "model_unavailable"


class Overloaded(MeshnodeError):
    """Every candidate is saturated; try again after Retry-After."""

    status = 429
    retryable = True
    kind = "overloaded"


class DeadlineExceeded(MeshnodeError):
    """The request ran past its deadline."""

    status = 504
    kind = "deadline_exceeded"


class StoreError(MeshnodeError):
    """The node's persisted state cannot be read or written."""

    status = 500
    kind = "store"


class PredictorError(MeshnodeError):
    """The predictor raised; the message is safe to show, the traceback stays in the log."""

    status = 500
    kind = "predictor"


def error_fields(exc: MeshnodeError) -> dict[str, str]:
    """What an error body carries beside type, message and request id: a refusal's category."""
    return {"category": exc.category} if isinstance(exc, Refused) else {}


# Errors that may arrive by kind from a worker or a peer.
_BY_KIND: tuple[type[MeshnodeError], ...] = (
    NotAcceptable,
    BadRequest,
    Unprocessable,
    PayloadTooLarge,
    NotFound,
    Conflict,
    NotReady,
    Overloaded,
    DeadlineExceeded,
    PredictorError,
)


def error_for_failure(kind: str, message: str, *, retryable: bool) -> MeshnodeError:
    """The error a ``Failure`` envelope stands for (it crossed a process or a node as plain data)."""
    if kind == "invalid_request":  # the predictor raised InvalidRequest
        return Unprocessable(message)
    if kind == Refused.kind:
        return Refused.of(message)
    for error_type in _BY_KIND:
        if error_type.kind == kind:
            return error_type(message, retry_after_s=1.0 if error_type.retryable else None)
    if retryable:  # a replica crashed or a peer was lost before answering
        return NotReady(message, retry_after_s=1.0)
    return PredictorError(message)
