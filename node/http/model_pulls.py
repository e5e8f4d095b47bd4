"""``/v1/models/store/{name}/pull``: start a pull of a model onto this node, and watch it.

- ``POST`` (``admin``, as every change of a store): 200 with the model when this node holds it
  already; else 202 with the pull's progress, the pull running on (one per model per node: a second
  POST, or a replica needing the model, joins it). 404 when no node of the mesh gossips a model of
  that name; 503 (``model_unavailable``, retryable) when the nodes that hold it are all down.
- ``GET`` (``invoke``): ``{"name", "status", ...}`` with status ``held`` (its digest and size),
  ``pulling`` (``progress``: digest, done, total, peers), ``failed`` (``error``: why the last pull
  failed) or ``absent`` (not here, no pull). ``meshnode models pull --wait`` polls it.

A name from the path is checked (``check_name``) first: 422 otherwise.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from ..errors import NotFound, Unprocessable
from ..mesh.model_manifest import check_name
from ..models.pulls import PullProgress
from ..models.store import StoredModel

__all__ = ["ModelPullsView", "add_model_pull_routes"]


class ModelPullsView(Protocol):
    """What the routes need of this node's pulls (``models/pulls.ModelPulls``)."""

    def held(self, name: str) -> StoredModel | None:
        """The model held here under `name`, if any."""
        ...

    def begin(self, name: str) -> asyncio.Task[StoredModel]:
        """The pull of `name`, running or started now."""
        ...

    def progress(self, name: str) -> PullProgress | None:
        """How far the pull of `name` is; None when none runs."""
        ...

    def failure(self, name: str) -> str | None:
        """Why the last pull of `name` failed, if it did."""
        ...

    def gossiped_anywhere(self, name: str) -> bool:
        """Whether any member gossips that it holds `name`."""
        ...


def add_model_pull_routes(app: FastAPI, pulls: ModelPullsView) -> None:
    """Mount ``POST`` and ``GET /v1/models/store/{name}/pull``."""

    @app.post(
        "/v1/models/store/{name}/pull",
        status_code=202,
        responses={200: {"description": "held here already"}, 404: {"description": "no node holds it"}},
    )
    async def pull_model(name: str) -> JSONResponse:
        """Pull a model onto this node from the peers that hold it (202 while it runs)."""
        _check(name)
        if pulls.held(name) is not None:
            return JSONResponse(_state(pulls, name))
        if pulls.progress(name) is None and not pulls.gossiped_anywhere(name):
            raise NotFound(f"no node of the mesh holds a model named {name!r}")
        task = pulls.begin(name)
        await asyncio.sleep(0)  # the pull's first step runs: it fails there when no live node holds it
        if task.done() and not task.cancelled() and (error := task.exception()) is not None:
            raise error
        return JSONResponse(_state(pulls, name), status_code=202 if pulls.held(name) is None else 200)

    @app.get("/v1/models/store/{name}/pull")
    async def pull_state(name: str) -> dict[str, Any]:
        """Whether this node holds a model, pulls it, or failed to: with progress or the error."""
        _check(name)
        return _state(pulls, name)


def _check(name: str) -> None:
    try:
        check_name(name)
    except ValueError as exc:
        raise Unprocessable(str(exc)) from exc


def _state(pulls: ModelPullsView, name: str) -> dict[str, Any]:
    held = pulls.held(name)
    if held is not None:
        return {"name": name, "status": "held", "digest": held.digest, "bytes": held.total_bytes}
    progress = pulls.progress(name)
    if progress is not None:
        return {"name": name, "status": "pulling", "progress": progress.to_wire()}
    error = pulls.failure(name)
    if error is not None:
        return {"name": name, "status": "failed", "error": error}
    return {"name": name, "status": "absent"}
