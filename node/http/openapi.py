"""The OpenAPI document (``GET /openapi.json``): FastAPI's, completed with what FastAPI cannot see.

FastAPI describes the routes it serves from their signatures. Three things it cannot know:

- ``POST /v1/predict/{deployment}`` is served ahead of FastAPI by the predict lane (``predict.py``);
- the JSON bodies that routes read themselves (``body.read_body``: deployments, keys, keyring; the
  OpenAI routes, from the pydantic models they validate with, ``openai/``), and answers that are
  not JSON (OpenAI's streams, an image URL's PNG);
- the error answers every route may give: the one JSON error shape (``app.error_response``) with
  400/413/422 for bad input, 401/403 from the API-key gate (``gate.py``), 404 for a name that is not
  there, 429/503 with ``Retry-After``, 504 past the deadline.

``install`` replaces ``app.openapi`` so the document lists all of it; schemathesis fuzzes the API from
this document (tests/integration/http/test_openapi_fuzz.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from ..mesh.access import Scope, need_for
from .openai.chat import ChatParams
from .openai.completions import CompletionParams
from .openai.embeddings import EmbeddingsParams
from .openai.images import ImagesParams

__all__ = ["install"]

ERROR = {"$ref": "#/components/schemas/Error"}
AS_ERROR = {"application/json": {"schema": ERROR}}
_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message", "request_id"],
            "properties": {
                "type": {"type": "string"},
                "message": {"type": "string"},
                "request_id": {"type": "string"},
            },
        }
    },
}
# OpenAI's error body (``openai/errors.py``); the gate's 401/403 in meshnode's shape fit it too.
_NULLABLE_TEXT = {"anyOf": [{"type": "string"}, {"type": "null"}]}
OPENAI_ERROR = {"$ref": "#/components/schemas/OpenAIError"}
_OPENAI_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": _NULLABLE_TEXT,
                "code": _NULLABLE_TEXT,
                "request_id": {"type": "string"},
            },
        }
    },
}
_OPENAI_MODELS: dict[tuple[str, str], type[BaseModel]] = {
    ("/v1/embeddings", "post"): EmbeddingsParams,
    ("/v1/images/generations", "post"): ImagesParams,
    ("/v1/chat/completions", "post"): ChatParams,
    ("/v1/completions", "post"): CompletionParams,
}
_OPENAI_PREFIXES = ("/v1/models", "/v1/embeddings", "/v1/images/", "/v1/chat/", "/v1/completions")
_STREAMED = {"/v1/chat/completions", "/v1/completions"}
_RETRY_AFTER = {
    "Retry-After": {"description": "seconds until a retry may succeed", "schema": {"type": "integer"}}
}
_WHY = {
    "400": "not JSON, or a bad header",
    "401": "no valid API key (a client on another machine)",
    "403": "an API key of too small a scope",
    "404": "no such name",
    "409": "a request with this X-Request-Id is in flight",
    "406": "no answer in a type the Accept header allows",
    "413": "body over the size limit",
    "422": "JSON that is not what the route takes",
    "429": "every replica is full, or would finish after the deadline",
    "503": "not ready: replicas loading, restarting or failed",
    "500": "the predictor raised, or answered in a shape its kind does not allow",
    "504": "the deadline passed",
}
_INT = {"type": "integer", "minimum": 0, "maximum": 1000}
_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("/v1/deployments/{name}", "put"): {
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
        },
    },
    ("/v1/keys", "post"): {
        "type": "object",
        "required": ["scope"],
        "additionalProperties": False,
        "properties": {"scope": {"enum": ["invoke", "admin"]}, "name": {"type": "string", "maxLength": 64}},
    },
    ("/v1/keyring", "post"): {
        "type": "object",
        "required": ["op"],
        "additionalProperties": False,
        "properties": {
            "op": {"enum": ["install", "use", "remove"]},
            "token": {"type": "string"},
            "key_id": {"type": "string"},
        },
    },
}
_PREDICT = {
    "post": {
        "summary": "Run a request anywhere in the mesh",
        "description": (
            "JSON in; JSON, a stream (Server-Sent Events with Accept: text/event-stream, else NDJSON) "
            "or a file (the Accept type) out. Headers: X-Request-Timeout, X-Mesh-Hint (or "
            "X-Fal-Runner-Hint); answers carry X-Mesh-Route, X-Mesh-Attempts and X-Request-Id."
        ),
        "operationId": "predict",
        "parameters": [
            {"name": "deployment", "in": "path", "required": True, "schema": {"type": "string"}},
            {"name": "X-Request-Timeout", "in": "header", "schema": {"type": "number", "maximum": 3600}},
            {"name": "X-Mesh-Hint", "in": "header", "schema": {"type": "string", "maxLength": 128}},
        ],
        "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
        "responses": {
            "200": {
                "description": "the predictor's answer",
                "content": {
                    "application/json": {"schema": {}},
                    "text/event-stream": {"schema": {"type": "string"}},
                    "application/x-ndjson": {"schema": {"type": "string"}},
                    "image/*": {"schema": {"type": "string", "format": "binary"}},
                },
            },
            "405": {"description": "only POST", "content": {"application/json": {"schema": ERROR}}},
            "500": {
                "description": "the predictor raised",
                "content": {"application/json": {"schema": ERROR}},
            },
        },
    }
}


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` return the completed document (built once, on first use)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            app.openapi_schema = complete(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with the predict route, the self-read bodies and every route's error answers."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = _ERROR_SCHEMA
    components["OpenAIError"] = _OPENAI_ERROR_SCHEMA
    bodies = dict(_BODIES)
    for key, model in _OPENAI_MODELS.items():
        described = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(described.pop("$defs", {}))
        bodies[key] = described
    paths = schema.setdefault("paths", {})
    paths["/v1/predict/{deployment}"] = _PREDICT
    for path, item in paths.items():
        for method, operation in item.items():
            if path.startswith(_OPENAI_PREFIXES):
                _openai_answers(path, operation)
            body = bodies.get((path, method))
            if body is not None:
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": body}},
                }
            _errors(path, method, operation)
    return schema


def _openai_answers(path: str, operation: dict[str, Any]) -> None:
    """What an OpenAI route answers besides JSON: a stream, or an image URL's PNG."""
    ok = operation.setdefault("responses", {}).setdefault("200", {"description": "OK"})
    if path in _STREAMED:
        ok["content"] = {
            "application/json": {"schema": {"type": "object"}},
            "text/event-stream": {"schema": {"type": "string"}},
        }
    elif path.startswith("/v1/images/files/"):
        ok["content"] = {"image/png": {"schema": {"type": "string", "format": "binary"}}}


def _errors(path: str, method: str, operation: dict[str, Any]) -> None:
    needed = need_for(method.upper(), path.replace("{", "").replace("}", ""))
    codes = [] if needed is None else ["401"] if needed is Scope.INVOKE else ["401", "403"]
    if "requestBody" in operation:
        codes += ["400", "413", "422"]
    if "{" in path:
        codes += ["404", "422"]
    if path.startswith("/v1/predict/"):
        codes += ["400", "404", "406", "429", "503", "504"]
    shape = ERROR
    if path.startswith(_OPENAI_PREFIXES):
        shape = OPENAI_ERROR
        if method == "post":
            codes += ["400", "404", "406", "409", "413", "422", "429", "500", "503", "504"]
        elif path.startswith("/v1/images/files/"):
            codes += ["400", "404"]
    responses = operation.setdefault("responses", {})
    for code in sorted(set(codes)):
        answer: dict[str, Any] = {
            "description": _WHY[code],
            "content": {"application/json": {"schema": shape}},
        }
        if code in ("429", "503"):
            answer["headers"] = _RETRY_AFTER
        responses[code] = answer  # also replaces FastAPI's 422: errors come in the one shape
