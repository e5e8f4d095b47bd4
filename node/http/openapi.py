"""The OpenAPI document (``GET /openapi.json``): every route the node serves, every body, every answer.

FastAPI describes the routes it serves from their signatures; ``openapi_paths.py`` holds what it
cannot see (the predict lane, the pages, bodies and headers read by hand, answers that are not
JSON). ``complete`` puts that in and adds, to every operation:

- its error answers, all in the one error shape (``app.error_response``; OpenAI's on the OpenAI
  routes), 429 and 503 with ``Retry-After``: the API-key gate's (``gate.py``: 401 from another
  machine without a valid key, 403 for an ``invoke`` key on an ``admin`` route, as
  ``access.need_for`` says), a JSON body's (``body.py``: 400 not JSON, 413 too large, 422 not what
  the route takes) and the route's own, ``ERRORS``, which names every operation: a route added
  without saying what it can answer fails tests/unit/http/test_api_document.py. FastAPI's generic
  422 stays only where a typed parameter can raise it;
- the headers of its answers (``X-Request-Id`` on all; the route, attempts and ``WWW-Authenticate``
  where they come);
- its security: the ``bearer`` scheme (the API key) as an option, since loopback clients need no
  key, and none on the open routes; Swagger UI's "Authorize" then sends the key (``api_docs.py``).

``install`` replaces ``app.openapi``. schemathesis fuzzes the API from this document
(tests/integration/http/test_openapi_fuzz.py): an answer it does not list is a failure there.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from ..mesh.access import Scope, need_for
from .openai.chat import ChatParams
from .openai.completions import CompletionParams
from .openai.embeddings import EmbeddingsParams
from .openai.images import ImagesParams

__all__ = ["ERRORS", "complete", "install"]

ERROR = {"$ref": "#/components/schemas/Error"}
OPENAI_ERROR = {"$ref": "#/components/schemas/OpenAIError"}
_TEXT = {"type": "string"}
_NULLABLE_TEXT = {"anyOf": [_TEXT, {"type": "null"}]}
_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message", "request_id"],
            "properties": {"type": _TEXT, "message": _TEXT, "request_id": _TEXT},
        }
    },
}
# OpenAI's error body (``openai/errors.py``); the gate's 401/403 in meshnode's shape fit it too.
_OPENAI_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": _TEXT,
                "type": _TEXT,
                "param": _NULLABLE_TEXT,
                "code": _NULLABLE_TEXT,
                "request_id": _TEXT,
            },
        }
    },
}
_OPENAI_MODELS: dict[tuple[str, str], type[BaseModel]] = {
    ("post", "/v1/embeddings"): EmbeddingsParams,
    ("post", "/v1/images/generations"): ImagesParams,
    ("post", "/v1/chat/completions"): ChatParams,
    ("post", "/v1/completions"): CompletionParams,
}
_OPENAI_PREFIXES = ("/v1/models", "/v1/embeddings", "/v1/images/", "/v1/chat/", "/v1/completions")
_HEADERS = {
    "RequestId": {
        "description": "the request's id (the client's X-Request-Id when it sent a short plain one)",
        "required": True,
        "schema": _TEXT,
    },
    "Route": {"description": "the nodes the request crossed, comma-separated", "schema": _TEXT},
    "Attempts": {"description": "replicas tried: more than 1 after a failover", "schema": _TEXT},
    "RetryAfter": {"description": "seconds until a retry may succeed", "schema": {"type": "integer"}},
    "Authenticate": {"description": 'Bearer realm="meshnode"', "schema": _TEXT},
}
_SECURITY = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": (
            "An API key (meshnode keys create --scope invoke|admin), needed from other machines "
            "only: loopback clients and nodes run with --insecure-http need none."
        ),
    }
}
_WHY = {
    "400": "not JSON, or a header or parameter out of bounds",
    "401": "no valid API key (a client on another machine)",
    "403": "an API key of too small a scope (admin needed)",
    "404": "no such name",
    "406": "no answer in a type the Accept header allows",
    "409": "a request with this X-Request-Id is in flight",
    "410": "the job ended and its result expired, or it was cancelled",
    "413": "body over the size limit",
    "422": "JSON (or a parameter) that is not what the route takes",
    "429": "full: every replica is busy or would finish after the deadline; or too many streams",
    "500": "the predictor raised, or answered in a shape its kind does not allow",
    "502": "the node running the job died and the job could not run again",
    "503": "not ready: replicas loading, restarting or failed; or the node cannot store more",
    "504": "the deadline passed",
}
# A request committed to a replica (predict, the OpenAI calls): what the forwarder and replica answer.
_CALL = (400, 404, 406, 409, 429, 500, 503, 504)
# A failed job's result is the error predict would have given (its retryable ones are retried).
_JOB_FAILED = (400, 404, 406, 409, 410, 422, 500, 502, 504)
# Each operation's own error answers, besides the gate's and its JSON body's (see the docstring).
ERRORS: dict[tuple[str, str], tuple[int, ...]] = {
    ("get", "/health"): (),
    ("get", "/ready"): (),  # its 503 is an answer of its own (openapi_paths.ANSWERS)
    ("get", "/v1/mesh"): (),
    ("get", "/v1/doctor"): (),
    ("get", "/v1/doctor/dial/{node}"): (404,),
    ("get", "/v1/events"): (429,),
    ("post", "/v1/predict/{deployment}"): _CALL,
    ("get", "/v1/deployments"): (),
    ("get", "/v1/deployments/{name}"): (404,),
    ("put", "/v1/deployments/{name}"): (),
    ("delete", "/v1/deployments/{name}"): (404,),
    ("post", "/v1/jobs/{name}"): (400, 404, 503),
    ("get", "/v1/jobs"): (422,),
    ("get", "/v1/jobs/{name}"): (404, 410),
    ("delete", "/v1/jobs/{name}"): (404, 410),
    ("get", "/v1/jobs/{job_id}/result"): (*_JOB_FAILED, 503),
    ("get", "/v1/jobs/{job_id}/events"): (404, 410),
    ("get", "/v1/models"): (),
    ("get", "/v1/models/{model}"): (404,),
    ("get", "/v1/models/store"): (),
    ("post", "/v1/models/store"): (),
    ("get", "/v1/models/store/{name}"): (404, 422),
    ("delete", "/v1/models/store/{name}"): (404, 422),
    ("post", "/v1/models/store/{name}/pull"): (404, 422, 503),
    ("get", "/v1/models/store/{name}/pull"): (422,),
    ("post", "/v1/embeddings"): _CALL,
    ("post", "/v1/images/generations"): _CALL,
    ("get", "/v1/images/files/{name}"): (400, 404),
    ("post", "/v1/chat/completions"): _CALL,
    ("post", "/v1/completions"): _CALL,
    ("get", "/v1/keys"): (),
    ("post", "/v1/keys"): (),
    ("delete", "/v1/keys/{key_id}"): (404,),
    ("get", "/v1/keyring"): (),
    ("post", "/v1/keyring"): (),
    ("get", "/.well-known/meshnode/jwks.json"): (),
    ("get", "/metrics"): (),
    ("get", "/v1/prometheus/targets"): (),
    ("get", "/"): (),
    # Only the listed names are open: another one from another machine meets the gate first.
    ("get", "/dashboard/{name}"): (401, 404),
    ("get", "/docs"): (),
    ("get", "/docs/{name}"): (401, 404),
    ("get", "/openapi.json"): (),
}
# The model stores live under the OpenAI prefix /v1/models but are meshnode's own (errors included).
_MODEL_STORE_PREFIX = "/v1/models/store"
_TAGS = (
    ("/v1/predict/", "predict"),
    (_MODEL_STORE_PREFIX, "models"),
    ("/v1/jobs", "jobs"),
    (_OPENAI_PREFIXES, "openai"),
    ("/v1/deployments", "deployments"),
    (("/v1/keys", "/v1/keyring", "/.well-known/"), "keys"),
    (("/metrics", "/v1/prometheus/"), "metrics"),
    (("/health", "/ready", "/v1/mesh", "/v1/doctor", "/v1/events"), "mesh"),
)
_PARAMETER = re.compile(r"\{(\w+)\}")


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` return the completed document (built once, on first use)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(
                get_openapi(title=app.title, version=app.version, routes=app.routes)
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with the hand-described routes, bodies, answers, errors, security and tags."""
    # Here, not at the top: app.py imports this module, and the hand-written parts read predict.py's
    # limits, which imports app.py.
    from .openapi_paths import ANSWERS, BODIES, DESCRIPTION, HAND_PATHS, JOB_STATUSES, MEDIA, PARAMETERS, TAGS

    schema.setdefault("info", {})["description"] = DESCRIPTION
    components = schema.setdefault("components", {})
    models = components.setdefault("schemas", {})
    models.update(Error=_ERROR_SCHEMA, OpenAIError=_OPENAI_ERROR_SCHEMA)
    components["headers"] = _HEADERS
    components["securitySchemes"] = _SECURITY
    schema["security"] = [{"bearer": []}, {}]  # optional: see _SECURITY's description
    schema["tags"] = TAGS
    bodies = dict(BODIES)
    for key, model in _OPENAI_MODELS.items():
        described = model.model_json_schema(ref_template="#/components/schemas/{model}")
        models.update(described.pop("$defs", {}))
        bodies[key] = described
    paths = schema.setdefault("paths", {})
    paths.update(HAND_PATHS)
    for path, item in paths.items():
        for method, operation in item.items():
            key = (method, path)
            operation.setdefault("tags", [_tag(path)])
            operation.setdefault("parameters", []).extend(PARAMETERS.get(key, ()))
            if key in bodies:
                content = {"application/json": {"schema": bodies[key]}}
                operation["requestBody"] = {"required": True, "content": content}
            _answers(path, method, operation, MEDIA.get(key), ANSWERS.get(key, {}))
    if path_item := paths.get("/v1/jobs"):
        for parameter in path_item["get"]["parameters"]:
            if parameter["name"] == "status":
                parameter["schema"] = {"anyOf": [{"enum": JOB_STATUSES}, {"type": "null"}]}
    # FastAPI's validation shapes are replaced by the one error shape everywhere.
    for unused in ("HTTPValidationError", "ValidationError"):
        models.pop(unused, None)
    return schema


def _answers(
    path: str,
    method: str,
    operation: dict[str, Any],
    media: dict[str, Any] | None,
    answers: dict[str, dict[str, Any]],
) -> None:
    """Success answers as served (`media`, more `answers`), then every error answer of the operation."""
    key = (method, path)
    responses = operation.setdefault("responses", {})
    for code in [code for code in responses if code[0] in "45"]:
        del responses[code]  # FastAPI's guesses (a 422 for any parameter); the real ones follow
    if media is not None:
        responses.setdefault("200", {"description": "OK"})["content"] = media
    responses.update(answers)
    needed = need_for(method.upper(), _example(path, operation))
    if needed is None:
        operation["security"] = []
    codes = set(ERRORS.get(key, ()))
    codes |= set() if needed is None else {401} if needed is Scope.INVOKE else {401, 403}
    if "requestBody" in operation:
        codes |= {400, 413, 422}
    openai = path.startswith(_OPENAI_PREFIXES) and not path.startswith(_MODEL_STORE_PREFIX)
    shape = OPENAI_ERROR if openai else ERROR
    for code in sorted(str(code) for code in codes):
        answer: dict[str, Any] = {
            "description": _WHY[code],
            "content": {"application/json": {"schema": shape}},
        }
        if code in ("429", "503"):
            answer["headers"] = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}
        elif code == "401":
            answer["headers"] = {"WWW-Authenticate": {"$ref": "#/components/headers/Authenticate"}}
        responses[code] = answer
    called = key in _OPENAI_MODELS or path.startswith("/v1/predict/")
    for answer in responses.values():
        headers = answer.setdefault("headers", {})
        headers["X-Request-Id"] = {"$ref": "#/components/headers/RequestId"}
        if called and "Retry-After" not in headers:
            headers["X-Mesh-Route"] = {"$ref": "#/components/headers/Route"}
            headers["X-Mesh-Attempts"] = {"$ref": "#/components/headers/Attempts"}


def _example(path: str, operation: dict[str, Any]) -> str:
    """`path` with each parameter given its first allowed value (else a name): what the gate sees."""
    allowed = {
        parameter["name"]: parameter.get("schema", {}).get("enum", ["x"])[0]
        for parameter in operation.get("parameters", ())
        if parameter.get("in") == "path"
    }
    return _PARAMETER.sub(lambda match: str(allowed.get(match[1], "x")), path)


def _tag(path: str) -> str:
    for prefixes, tag in _TAGS:
        if path.startswith(prefixes):
            return tag
    return "pages"
