"""The node's whole HTTP surface, built in-process by ``server.http_server`` as the agent builds it.

Not a test module: the document and reference-page tests (``test_api_document.py``,
``test_http_reference.py``) list every route from here, so a route added anywhere ``http_server``
reaches is seen without anyone updating a list. The node's parts are stand-ins that only have to
exist while routes are mounted; requests that reach them are the tests' business.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.types import ASGIApp

from meshnode.config import AgentConfig
from meshnode.http.events import EventFeed
from meshnode.http.openai.image_store import ImageStore
from meshnode.http.predict import PREDICT_PREFIX, PredictLimits
from meshnode.http.server import http_server
from meshnode.mesh.access import ApiKey, Scope, make_key

LIMITS = PredictLimits(default_timeout_s=5.0, max_request_bytes=1 << 20)
_CONVERTER = re.compile(r"\{(\w+):\w+\}")  # /v1/models/{model:path} is /v1/models/{model} in OpenAPI


class _Stand:
    """Any part of the node: every attribute is a function answering None."""

    config = AgentConfig(name="test")  # so the doctor's routes are mounted, as on a real agent
    node_id = "n0"

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


class _Keys(_Stand):
    def __init__(self, key: ApiKey) -> None:
        self._key = key

    def key(self, key_id: str) -> ApiKey | None:
        return self._key if key_id == self._key.id else None


def node_app() -> tuple[FastAPI, ASGIApp, str]:
    """The FastAPI app, the whole ASGI stack in front of it (gate, predict lane), an invoke key."""
    text, key = make_key(os.urandom(6), os.urandom(32), "test", Scope.INVOKE, 0)
    images = ImageStore(Path(tempfile.mkdtemp(prefix="images-")), ttl_s=60, max_bytes=1 << 20)
    jobs = SimpleNamespace(limits=SimpleNamespace(max_body_bytes=1024))
    server = http_server(
        node=_Stand(),
        deployments=_Stand(),
        stats=dict,
        serve=_Stand(),
        limits=LIMITS,
        keys=_Keys(key),
        rotation=_Stand(),
        members=_Stand(),
        mesh_id="test",
        images=images,
        jobs=jobs,  # type: ignore[arg-type]
        events=EventFeed(dict, list),
        models=_Stand(),
        pulls=_Stand(),
    )
    stack = server.config.app
    app = stack
    while not isinstance(app, FastAPI):  # gate -> predict lane -> route meter -> the app
        app = app._app
    return app, stack, text


def served_operations(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path template) of every HTTP route, the predict lane's included."""
    served = {("post", PREDICT_PREFIX + "{deployment}")}
    for route in app.routes:
        if isinstance(route, APIRoute):
            path = _CONVERTER.sub(r"{\1}", route.path)
            served |= {(method.lower(), path) for method in route.methods or ()}
    return served


def websocket_paths(app: FastAPI) -> set[str]:
    """The path templates of the WebSocket routes."""
    return {route.path for route in app.routes if isinstance(route, APIWebSocketRoute)}
