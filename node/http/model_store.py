"""``/v1/models/store``: which node holds which model, and removing or re-reading models.

- ``GET /v1/models/store`` (``invoke``): the mesh's view from gossip (``models/views.py``): one row
  per model name and short digest with its holders and the nodes pulling it, and this node's own
  store (full digests, sizes, file counts; never folder paths).
- ``GET /v1/models/store/{name}`` (``invoke``): the same for one name (404 when no node holds or
  pulls it).
- ``DELETE /v1/models/store/{name}`` (``admin``): removes the model from every node that holds it
  (``?node=NAME``: from that node only); the answer names where it was removed and where it failed.
- ``POST /v1/models/store`` (``admin``): this node re-reads its store's folder and gossips it;
  ``meshnode models add`` asks for it after writing a model in.

Adding a model is not a route: it runs in the CLI process with its user's file permissions
(docs/models.md, "Security"), so no path from the network ever reaches the filesystem. A name from
the path is checked (``check_name``) before anything uses it: 422 otherwise.

These routes must be mounted before the OpenAI routes: ``GET /v1/models/{model}`` would take
``/v1/models/store`` for a model named "store". Every path here serves GET (which the OpenAI route
would answer otherwise), so each path's ``Allow`` is exactly what the OpenAPI document lists; a
re-read is a POST to the collection, not a path of its own that ``{name}`` would also match.
"""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import FastAPI, Query

from ..errors import NotFound, Unprocessable
from ..mesh.model_manifest import check_name

__all__ = ["ModelStoreView", "add_model_store_routes"]


class ModelStoreView(Protocol):
    """What the routes need of the agent's models (``models/service.ModelService``)."""

    def view(self) -> dict[str, Any]:
        """The body of ``GET /v1/models/store``."""
        ...

    async def remove(self, name: str, node: str | None = None) -> dict[str, Any]:
        """Remove `name` where it is held (NotFound when nowhere)."""
        ...

    async def scan(self) -> dict[str, Any]:
        """Re-read this node's store and gossip it."""
        ...


def add_model_store_routes(app: FastAPI, models: ModelStoreView) -> None:
    """Mount ``GET`` and ``POST /v1/models/store``, ``GET`` and ``DELETE /v1/models/store/{name}``."""

    @app.get("/v1/models/store")
    async def list_store() -> dict[str, Any]:
        """Every model held in the mesh: digest, size, holders and pulls; and this node's store."""
        return models.view()

    @app.post("/v1/models/store")
    async def rescan_store() -> dict[str, Any]:
        """Re-read this node's store folder and gossip it; the folders not held say why."""
        return await models.scan()

    @app.get("/v1/models/store/{name}")
    async def one_model(name: str) -> dict[str, Any]:
        """One model's rows (a row per digest held under the name) and this node's copy, if any."""
        _checked(name)
        view = models.view()
        rows = [row for row in view["models"] if row["name"] == name]
        if not rows:
            raise NotFound(f"no node of the mesh holds or pulls a model named {name!r}")
        return {"models": rows, "local": [entry for entry in view["local"] if entry["name"] == name]}

    @app.delete("/v1/models/store/{name}")
    async def remove_model(
        name: str, node: str | None = Query(default=None, max_length=128)
    ) -> dict[str, Any]:
        """Delete a model from every node that holds it, or from `node` only (404 where none does)."""
        _checked(name)
        return await models.remove(name, node)


def _checked(name: str) -> str:
    try:
        return check_name(name)
    except ValueError as exc:
        raise Unprocessable(str(exc)) from exc
