"""The parts of the OpenAPI document FastAPI cannot derive from signatures (``openapi.py`` puts them in).

- ``HAND_PATHS``: routes FastAPI does not describe. The predict lane is served ahead of FastAPI
  (``predict.py``); the dashboard, its feed, ``/metrics`` and the docs pages are routes kept out of
  FastAPI's own schema because they answer HTML, scripts, Prometheus text or an endless stream.
- ``BODIES``: the JSON bodies that routes read themselves (``body.read_body``), and ``PARAMETERS``:
  the headers and query parameters they read by hand.
- ``MEDIA``: answers that are not JSON (OpenAI's streams, an image link's PNG, a job's events).

The WebSocket route is described in ``DESCRIPTION`` (OpenAPI has no WebSockets) and docs/http.md.
"""

from __future__ import annotations

from typing import Any

from ..mesh.jobs import MAX_KEY_CHARS, MAX_URL_CHARS, JobStatus
from .api_docs import DOCS_ASSETS
from .predict import MAX_HINT_CHARS, MAX_TIMEOUT_S, MIN_TIMEOUT_S

__all__ = [
    "ANSWERS",
    "BODIES",
    "DESCRIPTION",
    "HAND_PATHS",
    "JOB_STATUSES",
    "MEDIA",
    "PARAMETERS",
    "TAGS",
]

_TEXT = {"type": "string"}
_BINARY = {"type": "string", "format": "binary"}
_OBJECT = {"type": "object"}
_ANY_OBJECT = {"type": "object", "additionalProperties": True}
_INT = {"type": "integer", "minimum": 0, "maximum": 1000}

DESCRIPTION = """\
Every meshnode node serves this API; any node takes any request and routes it through the mesh.
The reference page is `docs/http.md`.

**Keys.** From the node's own machine (loopback) no key is needed. From another machine every
route except the open ones (`/health`, `/ready`, the webhook key set, image links, the dashboard
and these docs pages) needs `Authorization: Bearer KEY`: an `invoke` key
(`meshnode keys create --scope invoke`), or an `admin` key to change deployments, keys and the
keyring. "Authorize" takes a key for "Try it out". A node run with `--insecure-http` needs none.

**Errors** are `{"error": {"type", "message", "request_id"}}` with the status saying what went
wrong (OpenAI's `{"error": {"message", "type", "param", "code"}}` on the OpenAI routes); 429 and 503
carry `Retry-After`. Every answer carries `X-Request-Id` (the client's own when it sent a short
plain one).

**Streams.** `"stream": true` in a predict body streams Server-Sent Events with
`Accept: text/event-stream` (`data:` per chunk, `event: done` or `event: error` last), else
newline-delimited JSON. Every SSE stream sends a `: keep-alive` comment after a quiet spell
(15 s by default), which SSE clients skip.

**WebSocket** (not in this document: OpenAPI has no WebSockets): `GET /v1/ws/predict/{deployment}`
takes one JSON message, predict's body (query `hint` and `timeout` for the headers), and sends
`{"type": "progress", "step", "total"}` events, `{"type": "chunk", "data"}` for a stream, then
`{"type": "result", "data", "request_id", "route"}` or
`{"type": "error", "status", "error": {...}}`, and closes (1000, or 4000 + the status).
"""

TAGS = [
    {"name": "predict", "description": "Run a request on a replica anywhere in the mesh"},
    {"name": "jobs", "description": "Durable asynchronous requests"},
    {"name": "openai", "description": "The OpenAI-compatible API"},
    {"name": "deployments", "description": "Declare, change and remove deployments mesh-wide"},
    {"name": "models", "description": "The model stores: which node holds which model"},
    {"name": "mesh", "description": "Liveness, readiness, the mesh view, its events, doctor"},
    {"name": "keys", "description": "API keys, the mesh token's keyring, the webhook key set"},
    {"name": "metrics", "description": "Prometheus metrics and service discovery"},
    {"name": "pages", "description": "The dashboard, these docs and this document"},
]


def _header(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "schema": schema, "description": description}


_HINT = _header(
    "X-Mesh-Hint",
    {"type": "string", "minLength": 1, "maxLength": MAX_HINT_CHARS},
    "steer to a replica whose hints hold this (fal's X-Fal-Runner-Hint works too)",
)
_TIMEOUT = _header(
    "X-Request-Timeout",
    {"type": "number", "minimum": MIN_TIMEOUT_S, "maximum": MAX_TIMEOUT_S},
    "the request's deadline in seconds (else the node's request_timeout_s); past it, 504",
)
_REQUEST_ID = _header(
    "X-Request-Id",
    {"type": "string", "pattern": "^[A-Za-z0-9._:/+=-]{1,128}$"},
    "this request's id, echoed in the answer and the logs; one already in flight is a 409",
)
_CALL = [_HINT, _TIMEOUT, _REQUEST_ID]  # what predict and the OpenAI routes read besides the body

PARAMETERS: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("post", "/v1/embeddings"): _CALL,
    ("post", "/v1/images/generations"): _CALL,
    ("post", "/v1/chat/completions"): _CALL,
    ("post", "/v1/completions"): _CALL,
    ("post", "/v1/jobs/{name}"): [
        _HINT,
        _TIMEOUT,
        _header(
            "Idempotency-Key",
            {"type": "string", "minLength": 1, "maxLength": MAX_KEY_CHARS},
            "the same key for the same deployment names the same job: a retry gets it (202), not a twin",
        ),
        {
            "name": "webhook",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "pattern": "^https?://", "maxLength": MAX_URL_CHARS},
            "description": "a URL that gets the job's final status, signed (docs/webhooks.md)",
        },
    ],
}

BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("put", "/v1/deployments/{name}"): {
        "type": "object",
        "required": ["app"],
        "additionalProperties": False,
        "properties": {
            "app": {"type": "string", "description": "package.module:Class, file.py:Class or a folder"},
            "min_replicas": _INT,
            "max_replicas": _INT,
            "autoscaling": {"type": "object"},
            "resources": {"type": "object"},
            "spread": {"type": "string"},
            "backups": _INT,
            "moderation": {"type": "object", "description": "prompt and output checks (docs/apps.md)"},
        },
    },
    ("post", "/v1/keys"): {
        "type": "object",
        "required": ["scope"],
        "additionalProperties": False,
        "properties": {"scope": {"enum": ["invoke", "admin"]}, "name": {"type": "string", "maxLength": 64}},
    },
    ("post", "/v1/keyring"): {
        "type": "object",
        "required": ["op"],
        "additionalProperties": False,
        "properties": {
            "op": {"enum": ["install", "use", "remove"]},
            "token": {"type": "string"},
            "key_id": {"type": "string"},
        },
    },
    # The predict body the job will run; "stream": true is refused (a job keeps the whole answer).
    ("post", "/v1/jobs/{name}"): _ANY_OBJECT,
}

_SSE = {"text/event-stream": {"schema": _TEXT}}
MEDIA: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/v1/chat/completions"): {"application/json": {"schema": _OBJECT}, **_SSE},
    ("post", "/v1/completions"): {"application/json": {"schema": _OBJECT}, **_SSE},
    ("get", "/v1/images/files/{name}"): {"image/png": {"schema": _BINARY}},
    ("get", "/v1/jobs/{job_id}/events"): _SSE,
    # The answer exactly as predict gave it: JSON, text or a file.
    ("get", "/v1/jobs/{job_id}/result"): {"*/*": {"schema": {}}},
}

_CACHED = {"ETag": {"description": "send it back as If-None-Match: 304 while unchanged", "schema": _TEXT}}


def _page(
    summary: str, media: dict[str, Any], *, op: str, param: list[str] | None = None, tagged: bool = False
) -> dict[str, Any]:
    """A GET of a page or asset (HTML, a script, a style): open, no JSON; `tagged`: with an ETag."""
    ok: dict[str, Any] = {"description": "OK", "content": media}
    responses = {"200": ok}
    if tagged:
        ok["headers"] = _CACHED
        responses["304"] = {"description": "unchanged since the ETag in If-None-Match", "headers": _CACHED}
    operation: dict[str, Any] = {
        "tags": ["pages"],
        "summary": summary,
        "operationId": op,
        "responses": responses,
    }
    if param is not None:
        operation["parameters"] = [
            {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "enum": param}}
        ]
    return {"get": operation}


_HTML = {"text/html": {"schema": _TEXT}}
_SCRIPT_OR_STYLE = {"text/javascript": {"schema": _TEXT}, "text/css": {"schema": _TEXT}}
_PREDICT = {
    "post": {
        "tags": ["predict"],
        "summary": "Run a request anywhere in the mesh",
        "description": (
            'JSON in; JSON, a stream or a file out. `"stream": true` streams: Server-Sent Events '
            "with Accept: text/event-stream (`: keep-alive` comments in quiet spells), else NDJSON. "
            "An Accept of a file type (image/png) answers the file whose path the predictor returned."
        ),
        "operationId": "predict",
        "parameters": [
            {"name": "deployment", "in": "path", "required": True, "schema": {"type": "string"}},
            *_CALL,
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ANY_OBJECT}}},
        "responses": {
            "200": {
                "description": "the predictor's answer",
                "content": {
                    "application/json": {"schema": {}},
                    "text/event-stream": {"schema": _TEXT},
                    "application/x-ndjson": {"schema": _TEXT},
                    "image/*": {"schema": _BINARY},
                },
            },
        },
    }
}

HAND_PATHS: dict[str, dict[str, Any]] = {
    "/v1/predict/{deployment}": _PREDICT,
    "/v1/events": {
        "get": {
            "tags": ["mesh"],
            "summary": "The mesh's events as Server-Sent Events (what the dashboard draws)",
            "description": "snapshot, member, deployment, replica, failover, jobs (docs/dashboard.md)",
            "operationId": "events",
            "responses": {"200": {"description": "an endless stream", "content": _SSE}},
        }
    },
    "/metrics": {
        "get": {
            "tags": ["metrics"],
            "summary": "Prometheus metrics of this node",
            "operationId": "metrics",
            "responses": {"200": {"description": "OK", "content": {"text/plain": {"schema": _TEXT}}}},
        }
    },
    "/": _page("The live dashboard", _HTML, op="dashboard"),
    "/dashboard/{name}": _page(
        "The dashboard's script or style",
        _SCRIPT_OR_STYLE,
        op="dashboard_asset",
        param=["dashboard.js", "dashboard.css"],
    ),
    "/docs": _page("These docs (Swagger UI)", _HTML, op="api_docs", tagged=True),
    "/docs/{name}": _page(
        "Swagger UI's and the page's scripts and styles",
        _SCRIPT_OR_STYLE,
        op="api_docs_asset",
        param=sorted(DOCS_ASSETS),
        tagged=True,
    ),
    "/openapi.json": {
        "get": {
            "tags": ["pages"],
            "summary": "This document",
            "operationId": "openapi",
            "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": _OBJECT}}}},
        }
    },
}
# The job statuses a listing filters by.
JOB_STATUSES = [status.value for status in JobStatus]

_RETRY_AFTER = {"$ref": "#/components/headers/RetryAfter"}
_READINESS = {
    "type": "object",
    "required": ["ready"],
    "properties": {"ready": {"type": "boolean"}, "reason": _TEXT},
}
# Answers besides FastAPI's one success: another success status, or a body FastAPI does not know.
ANSWERS: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
    ("get", "/ready"): {
        "200": {"description": "ready", "content": {"application/json": {"schema": _READINESS}}},
        "503": {
            "description": "still joining, or unable to serve or forward: the reason says which",
            "content": {"application/json": {"schema": _READINESS}},
            "headers": {"Retry-After": _RETRY_AFTER},
        },
    },
    ("put", "/v1/deployments/{name}"): {
        "201": {
            "description": "declared: the name was new",
            "content": {"application/json": {"schema": _OBJECT}},
        }
    },
    ("post", "/v1/jobs/{name}"): {
        "202": {
            "description": "queued, its copies stored (the same job again for a known Idempotency-Key)",
            "content": {"application/json": {"schema": _OBJECT}},
            "headers": {"Idempotent-Replayed": {"description": "true: a job made before", "schema": _TEXT}},
        }
    },
    ("get", "/v1/jobs/{job_id}/result"): {
        "202": {
            "description": "not done yet: the job's status",
            "content": {"application/json": {"schema": _OBJECT}},
            "headers": {"Retry-After": _RETRY_AFTER},
        }
    },
    ("get", "/v1/images/files/{name}"): {
        "307": {
            "description": "made by another node of the mesh: fetch it there",
            "headers": {"Location": {"description": "the image on the node that keeps it", "schema": _TEXT}},
        }
    },
}
