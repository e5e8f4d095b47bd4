"""The OpenAI routes on the node's FastAPI app: each reads its kind's parameters, calls, answers.

    GET  /v1/models, /v1/models/{id}      models.py       the deployments this mesh serves
    POST /v1/embeddings                   embeddings.py
    POST /v1/images/generations           images.py       (+ image_store.py for URLs)
    GET  /v1/images/files/{token}.png     image_store.py  a URL's image (no key: the token is one)
    POST /v1/chat/completions             chat.py         (+ textgen.py: sampling, n, streams)
    POST /v1/completions                  completions.py  (+ textgen.py)

Each handler: validated parameters (``edge.read_params``) -> the deployment ``model`` names and
whether it serves the kind (``models.Catalog``) -> one ``Call`` per result -> the node's ``serve``
-> OpenAI's answer. Every error is OpenAI's body (``errors.py``, via ``edge.openai_errors``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from ...dataplane.forward import Served
from ...errors import NotFound
from ..app import request_id
from ..body import base_url
from ..reply import json_bytes
from ..sse import EventStream
from . import chat, completions, embeddings, images
from .edge import Edge, openai_errors, read_params, refuse_failed, reply_data, route_headers, serve_all
from .errors import ParamError
from .image_store import FILES_PREFIX, ImageStore
from .models import Target
from .textgen import Result, Shape, events, result_of

__all__ = ["add_openai_routes"]

_JSON = "application/json"


def add_openai_routes(app: FastAPI, edge: Edge, store: ImageStore | None) -> None:
    """Mount the OpenAI-compatible routes (images as URLs only where the node has a `store`)."""
    catalog = edge.catalog
    max_bytes = edge.limits.max_request_bytes

    @app.get("/v1/models")
    @openai_errors
    async def list_models(request: Request) -> Response:
        """The deployments this mesh serves, with the kinds of request each accepts."""
        return JSONResponse(catalog.listing())

    @app.get("/v1/models/{model:path}")
    @openai_errors
    async def get_model(request: Request, model: str) -> Response:
        """One deployment, or a model served inside one (404 model_not_found)."""
        return JSONResponse(catalog.describe(model))

    @app.post("/v1/embeddings")
    @openai_errors
    async def create_embeddings(request: Request) -> Response:
        """Vectors for a string or a list of strings."""
        params = await read_params(request, embeddings.EmbeddingsParams, max_bytes)
        target = catalog.resolve(params.model, "embeddings")
        calls = edge.calls(request, target, [embeddings.predictor_input(params)], stream=False, accept=_JSON)
        served = await serve_all(edge.serve, calls, edge.hint(request, target))
        data = await reply_data(served[0])
        return _json(embeddings.answer(params, data), route_headers(served))

    @app.post("/v1/images/generations")
    @openai_errors
    async def create_images(request: Request) -> Response:
        """`n` images for a prompt, as URLs on this node or base64."""
        params = await read_params(request, images.ImagesParams, max_bytes)
        model = params.model or catalog.only("images")
        if model is None:
            raise ParamError("model", "model is required: more than one deployment serves images, or none")
        target = catalog.resolve(model, "images")
        if (params.response_format or "url") == "url" and store is None:
            raise ParamError("response_format", "this node keeps no images: ask for b64_json")
        bodies = images.predictor_inputs(params)
        calls = edge.calls(request, target, bodies, stream=False, accept="image/png")
        served = await serve_all(edge.serve, calls, edge.hint(request, target))
        pngs = images.pngs([await reply_data(one) for one in served])
        if params.response_format == "b64_json":
            data = [images.b64(png) for png in pngs]
        else:
            assert store is not None
            base = base_url(request)
            data = [{"url": f"{base}{FILES_PREFIX}{await store.put(png)}"} for png in pngs]
        return _json(images.answer(data), route_headers(served))

    @app.get(FILES_PREFIX + "{name}")
    @openai_errors
    async def image_file(request: Request, name: str) -> Response:
        """An image made for a ``url`` answer, while its link is valid."""
        if store is None:
            raise ParamError(None, "this node keeps no images")
        owner = store.owner_of(name)
        if owner is not None and owner != store.owner:
            # Made by another node: send the client there (a link works on every node of the mesh).
            keeper = catalog.base_url_of(owner)
            if keeper is None:
                raise NotFound("no such image: the node that made it is gone")
            return RedirectResponse(f"{keeper}{FILES_PREFIX}{name}", status_code=307)
        png, left_s = await store.get(name)
        cache = f"private, max-age={max(0, int(left_s))}"
        return Response(png, media_type="image/png", headers={"Cache-Control": cache})

    @app.post("/v1/chat/completions")
    @openai_errors
    async def create_chat_completion(request: Request) -> Response:
        """A conversation's next message, whole or streamed token by token."""
        params = await read_params(request, chat.ChatParams, max_bytes)
        target = catalog.resolve(params.model, "chat")
        bodies = chat.predictor_inputs(params)
        words = [chat.prompt_words(params)] * len(bodies)
        shape = chat.ChatShape(request_id(request), params.model, _include_usage(params))
        served, results = await _generate(request, edge, target, bodies, words, chat.affinity(params))
        if results is None:
            return _stream(request, edge, served, shape, [0] * len(bodies), words)
        return _json(chat.answer(params, request_id(request), results), route_headers(served))

    @app.post("/v1/completions")
    @openai_errors
    async def create_completion(request: Request) -> Response:
        """The text that follows a prompt (or several), whole or streamed."""
        params = await read_params(request, completions.CompletionParams, max_bytes)
        target = catalog.resolve(params.model, "completions")
        bodies, groups = completions.predictor_inputs(params)
        words = completions.prompt_words(params)
        shape = completions.CompletionShape(request_id(request), params.model, _include_usage(params))
        served, results = await _generate(request, edge, target, bodies, words, completions.affinity(params))
        if results is None:
            return _stream(request, edge, served, shape, groups, words)
        rid = request_id(request)
        return _json(completions.answer(params, rid, results, groups), route_headers(served))


async def _generate(
    request: Request,
    edge: Edge,
    target: Target,
    bodies: list[dict[str, Any]],
    words: list[int],
    key: str | None,
) -> tuple[list[Served], list[Result] | None]:
    """Commit every choice's call; the whole results, or None when the answer streams."""
    stream = bool(bodies[0]["stream"])
    calls = edge.calls(request, target, bodies, stream=stream, accept=_JSON)
    served = await serve_all(edge.serve, calls, edge.hint(request, target), key)
    if stream:
        await refuse_failed(served)
        return served, None
    results = [result_of(await reply_data(one), count) for one, count in zip(served, words, strict=True)]
    return served, results


def _stream(
    request: Request, edge: Edge, served: list[Served], shape: Shape, groups: list[int], words: list[int]
) -> Response:
    return EventStream(
        events(served, shape, groups, words, request_id(request)),
        keepalive_s=edge.limits.keepalive_s,  # comments while the model thinks: proxies keep the stream
        headers={**route_headers(served), "Cache-Control": "no-cache"},
    )


def _json(data: Any, headers: dict[str, str]) -> Response:
    """A predictor's answer in OpenAI's shape: the JSON ``JSONResponse`` sends, by orjson (``reply.py``:
    an embedding's 384 numbers in 10 µs of CPU rather than 210)."""
    return Response(json_bytes(data), media_type=_JSON, headers=headers)


def _include_usage(params: chat.ChatParams | completions.CompletionParams) -> bool:
    return bool(params.stream and params.stream_options and params.stream_options.include_usage)
