"""What the Python client raises: one small tree under ``ClientError``, each error retryable or not.

    MeshnodeError                  (meshnode.errors: the base of everything meshnode raises)
    └── ClientError                the client gave up on a request
        ├── NoNodeAvailable        no node answered at all (none known, or every one unreachable)
        ├── TLSError               no node could be reached over TLS: a certificate that did not
        │                          verify, or a node that does not speak HTTPS (never retried)
        ├── RequestTimeout         no answer within the request's timeout
        ├── RequestFailed          the mesh answered with an HTTP error: .status .kind .message
        │   │                      .request_id .node .retry_after_s
        │   ├── RequestRejected    400, 413, 422: the body, a header or its size was refused
        │   ├── Unauthorized       401, 403: no valid API key, or one of too small a scope
        │   ├── DeploymentNotFound 404: no deployment of that name in the mesh
        │   ├── Unavailable        429, 503: saturated or still loading (retryable, Retry-After)
        │   ├── GatewayTimeout     504: the mesh gave up at the deadline (also a RequestTimeout)
        │   ├── PredictorFailed    500: the predictor raised (or the node failed; see .kind)
        │   ├── JobNotFound        404 for a job id: never made, or ended and forgotten
        │   ├── JobGone            410: the job was cancelled, or its result expired
        │   └── JobFailed          the job ended failed: its error as predict would have answered
        │                          it (.status .kind .message), and .job
        ├── StreamBroken           an answer that had started broke off: an error event in a
        │                          stream, or the connection dropped mid-answer (never retried)
        └── JobNotFinished         the job has not ended: result() too early, or wait() past its
                                   timeout; .job is its last status (retryable: ask again later)

``ClientError`` derives from ``MeshnodeError`` so that ``except MeshnodeError`` still catches
everything meshnode raises on purpose, as the one error tree drawn in ``meshnode.errors`` promises.
It is its own branch rather than reusing the server's classes (``NotFound``...) because a client
error describes a remote answer (its request id, the node that gave it) and, for the transport
failures, no answer at all; a server class raised in a client would read as if this process had
refused the request.

``.kind`` is the ``type`` field of the JSON error body (``"not_found"``, ``"predictor"``...), the same
name the server's errors use for it.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING

from ..errors import MeshnodeError

if TYPE_CHECKING:
    from .job_view import Job

__all__ = [
    "ClientError",
    "DeploymentNotFound",
    "GatewayTimeout",
    "JobFailed",
    "JobGone",
    "JobNotFinished",
    "JobNotFound",
    "NoNodeAvailable",
    "PredictorFailed",
    "RequestFailed",
    "RequestRejected",
    "RequestTimeout",
    "StreamBroken",
    "TLSError",
    "Unauthorized",
    "Unavailable",
    "error_fields",
    "error_from_answer",
]

# How much of a body that is not a meshnode JSON error goes into a message.
_MAX_TEXT_CHARS = 200


class ClientError(MeshnodeError):
    """Base of every error the client raises."""

    kind = "client"


class NoNodeAvailable(ClientError):
    """No node answered: none was known, or every one refused or dropped the connection."""

    retryable = True
    kind = "no_node"


class TLSError(ClientError):
    """Every node tried failed its TLS handshake; the message names each node and why.

    A certificate the client does not trust (its private CA not given, or a name the certificate
    does not hold), or a node that does not serve HTTPS. Not retryable: waiting changes neither.
    """

    kind = "tls"


class RequestTimeout(ClientError):
    """No answer arrived within the request's timeout."""

    kind = "timeout"


class RequestFailed(ClientError):
    """The mesh answered with an HTTP error; ``str()`` is ``"STATUS: message"``."""

    def __init__(
        self,
        status: int,
        kind: str,
        message: str,
        *,
        request_id: str = "",
        node: str = "",
        retry_after_s: float | None = None,
    ) -> None:
        """An error answer: its status, ``type``, message, request id and the node that gave it."""
        super().__init__(message, retry_after_s=retry_after_s)
        self.status = status
        self.kind = kind
        self.request_id = request_id
        self.node = node

    def __str__(self) -> str:
        return f"{self.status}: {self.message}"


class RequestRejected(RequestFailed):
    """400, 413 or 422: the request itself was refused; sending it again will not help."""


class Unauthorized(RequestFailed):
    """401 or 403: the node wants an API key (``api_key=``, ``$MESHNODE_API_KEY``), or a bigger scope."""


class DeploymentNotFound(RequestFailed):
    """404: the mesh has no deployment of that name."""


class Unavailable(RequestFailed):
    """429 or 503: every replica is busy, or the deployment is still loading; retry after a while."""

    retryable = True


class GatewayTimeout(RequestFailed, RequestTimeout):
    """504: the mesh gave up on the request at its deadline."""


class PredictorFailed(RequestFailed):
    """500: the predictor raised (``kind == "predictor"``) or the node failed (``"internal"``)."""


class JobNotFound(RequestFailed):
    """404 for a job id: no node holds a job of that id (never made, or ended and forgotten)."""


class JobGone(RequestFailed):
    """410: the job was cancelled, or ended and its result expired; it has no result to give."""


class JobFailed(RequestFailed):
    """The job ended failed: ``status``, ``kind`` and ``message`` are what predict would have answered."""

    def __init__(
        self, status: int, kind: str, message: str, *, job: Job, request_id: str = "", node: str = ""
    ) -> None:
        """The failed ``job`` (its last status) and the error answer its result gave."""
        super().__init__(status, kind, message, request_id=request_id, node=node)
        self.job = job

    def __str__(self) -> str:
        return f"job {self.job.id} failed: {self.status}: {self.message}"


class JobNotFinished(ClientError):
    """The job has not ended yet (queued or running): ``job`` is its last status."""

    retryable = True
    kind = "not_finished"

    def __init__(self, message: str, *, job: Job) -> None:
        """Why the result is not there, and the job's last known status."""
        super().__init__(message)
        self.job = job


class StreamBroken(ClientError):
    """An answer that had started broke off; it is never sent again, as its work may have run."""

    kind = "stream_broken"

    def __init__(
        self, message: str, *, kind: str = "stream_broken", request_id: str = "", node: str = ""
    ) -> None:
        """A broken answer: why (``kind``, from the error event when there was one) and which request."""
        super().__init__(message)
        self.kind = kind
        self.request_id = request_id
        self.node = node


_BY_STATUS: dict[int, type[RequestFailed]] = {
    400: RequestRejected,
    401: Unauthorized,
    403: Unauthorized,
    404: DeploymentNotFound,
    413: RequestRejected,
    422: RequestRejected,
    429: Unavailable,
    500: PredictorFailed,
    503: Unavailable,
    504: GatewayTimeout,
}


def error_fields(content: bytes, headers: Mapping[str, str], status: int) -> tuple[str, str, str]:
    """``(type, message, request id)`` of an error answer, also when it is not meshnode's JSON."""
    try:
        error = json.loads(content)["error"]
        return str(error["type"]), str(error["message"]), str(error.get("request_id") or "")
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    text = content.decode("utf-8", errors="replace").strip()[:_MAX_TEXT_CHARS]
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    return "http_error", text or phrase, headers.get("x-request-id", "")


def error_from_answer(
    status: int,
    headers: Mapping[str, str],
    content: bytes,
    node: str,
    *,
    now: float | None = None,
    classes: Mapping[int, type[RequestFailed]] | None = None,
) -> RequestFailed:
    """The client error for an HTTP error answer (status >= 400) from ``node``.

    ``classes`` overrides the class of some statuses (a 404 about a job is ``JobNotFound``).
    """
    kind, message, request_id = error_fields(content, headers, status)
    error_class = (classes or {}).get(status) or _BY_STATUS.get(status, RequestFailed)
    retry_after_s = parse_retry_after(headers.get("retry-after"), time.time() if now is None else now)
    return error_class(status, kind, message, request_id=request_id, node=node, retry_after_s=retry_after_s)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a Retry-After header (a number of seconds or an HTTP date, RFC 9110), else None."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError):
            return None
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)
