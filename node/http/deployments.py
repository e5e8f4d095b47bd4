"""``/v1/deployments``: declare, change, remove and inspect deployments from any node.

The body of ``PUT /v1/deployments/{name}`` is a deployment spec (``mesh/deployment.py``, the one
validator shared with the wire); a bad one gets 422 naming the field and the reason, and so does an
app this node may not run (``inference/app_policy.py``: not in its Python environment or its
``--app-dir`` folders, or a ``config.yaml`` app without ``--allow-external-apps``), which is then
neither imported nor gossiped. The declaration is stamped by this node's hybrid logical clock and
gossiped; every node then places it the same way (``serving/deployments.py``). ``GET`` answers from
this node's view, so right after a ``PUT`` a node far away may not list it for a gossip round or two.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic_core import to_json

from ..errors import NotFound, Unprocessable
from ..inference.app_ref import AppLoadError, parse_app_ref
from ..mesh.deployment import DeploymentSpec, SpecError, check_name
from ..mesh.records import Record
from ..serving.views import ViewInputs, view_of
from .app import read_json
from .rendered import RenderedList

__all__ = ["add_deployment_routes"]

# A spec is a few hundred bytes; anything this large is not one.
MAX_SPEC_BYTES = 64 * 1024


class DeploymentsView(Protocol):
    """What the routes need from the agent's placement shell (``serving/deployments.py``)."""

    def views(self) -> list[dict[str, Any]]:
        """Every declared deployment."""
        ...

    def view(self, name: str) -> dict[str, Any] | None:
        """One deployment, or None."""
        ...

    def record(self, name: str) -> Record | None:
        """The winning record of `name`."""
        ...

    def declare(self, name: str, spec: DeploymentSpec | None) -> Record | None:
        """Declare, change or remove `name` mesh-wide."""
        ...

    def refusal(self, app: str) -> str | None:
        """Why this node may not run `app`, or None when it may (checked without importing it)."""
        ...


@runtime_checkable
class ViewSources(Protocol):
    """What the agent's placement shell also offers: each view's inputs, as immutable values."""

    def view_inputs(self) -> list[ViewInputs]:
        """What each declared deployment's view reads (``serving/views.py``), in listing order."""
        ...


def add_deployment_routes(app: FastAPI, deployments: DeploymentsView) -> None:
    """Mount ``GET /v1/deployments`` and ``GET/PUT/DELETE /v1/deployments/{name}``.

    When `deployments` offers each view's inputs (``ViewSources``: the agent's does), the listing
    answers from JSON kept per deployment and renders a view again only when its inputs changed
    (``rendered.py``): the same bytes as serializing ``views()``, without building a thousand views
    on the event loop at every poll of the dashboard or ``meshnode top``.
    """
    # inf_nan_mode as FastAPI's serializer for the old `dict[str, Any]` answer (pydantic's default).
    kept = RenderedList[str, ViewInputs](
        b'{"deployments":[', b"]}", lambda inputs: to_json(view_of(inputs), inf_nan_mode="null")
    )
    sources = deployments if isinstance(deployments, ViewSources) else None

    @app.get("/v1/deployments", response_model=dict[str, Any])
    async def list_deployments() -> Any:
        """Every deployment: desired and actual replicas, where they run, why any are missing."""
        if sources is None:
            return {"deployments": deployments.views()}
        pieces = [(inputs.record.name, inputs) for inputs in sources.view_inputs()]
        return Response(await kept.body(pieces), media_type="application/json")

    @app.get("/v1/deployments/{name}")
    async def get_deployment(name: str) -> dict[str, Any]:
        """One deployment's view (404 when it is not declared)."""
        view = deployments.view(name)
        if view is None:
            raise NotFound(f"no deployment named {name!r}")
        return view

    @app.put("/v1/deployments/{name}", status_code=200)
    async def put_deployment(name: str, request: Request) -> JSONResponse:
        """Declare or change a deployment mesh-wide (201 when it is new; 422 for an app not allowed here)."""
        spec = _spec_of(name, await _body(request))
        why = deployments.refusal(spec.app)
        if why is not None:
            raise Unprocessable(f"app: {why}")
        held = deployments.record(name)
        created = held is None or held.removed or held.stamp == 0
        deployments.declare(name, spec)
        view = deployments.view(name) or {"name": name, "spec": spec.to_wire()}
        return JSONResponse(view, status_code=201 if created else 200)

    @app.delete("/v1/deployments/{name}")
    async def delete_deployment(name: str) -> dict[str, Any]:
        """Remove a deployment mesh-wide; its placed replicas drain and stop (pinned ones stay)."""
        if deployments.declare(name, None) is None:
            raise NotFound(f"no deployment named {name!r}")
        return {"name": name, "removed": True}


async def _body(request: Request) -> object:
    return await read_json(request, MAX_SPEC_BYTES, "a deployment spec")


def _spec_of(name: str, body: object) -> DeploymentSpec:
    """The validated spec, or 422 naming the field and the reason."""
    try:
        check_name(name)
        spec = DeploymentSpec.from_wire(body)
    except SpecError as exc:
        raise Unprocessable(f"{exc.field}: {exc.reason}") from exc
    try:
        parse_app_ref(spec.app)
    except AppLoadError as exc:
        raise Unprocessable(f"app: {exc}") from exc
    return spec
