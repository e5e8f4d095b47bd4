"""The asyncio client: ``from meshnode import AsyncMeshClient``, ``MeshClient``'s twin, awaited.

    async with await AsyncMeshClient.discover(interfaces=["192.168.1.20"]) as mesh:
        answer = await mesh.predict("echo", {"text": "hello"})
        async with await mesh.stream("stream", {"text": "life"}) as pieces:
            async for piece in pieces:
                print(piece)

Same node list, failover, retries and errors as ``MeshClient``: they are decided in
``client_exchange``; this module carries them out with ``httpx.AsyncClient``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeVar, Unpack

import httpx

from .client_answers import Result, StreamInfo
from .client_base import (
    DISCOVER_TIMEOUT_S,
    HTTP_SETTINGS,
    AsyncClosing,
    Body,
    CallOptions,
    ClientBase,
    DeploymentSpec,
    FileOptions,
    SavePath,
    discover_seeds,
    save_file,
)
from .client_exchange import JSON_TYPE, Finished, Opened, Pause, Read, Send, Steps, step

__all__ = ["AsyncChunkStream", "AsyncMeshClient"]

T = TypeVar("T")


class AsyncMeshClient(ClientBase[httpx.AsyncClient], AsyncClosing):
    """A client of a meshnode mesh for asyncio: every method of ``MeshClient``, awaited."""

    @classmethod
    async def discover(
        cls,
        interfaces: Sequence[str] | None = None,
        *,
        mesh_id: str | None = None,
        timeout_s: float = DISCOVER_TIMEOUT_S,
        **options: Any,
    ) -> AsyncMeshClient:
        """Find the mesh by mDNS on ``interfaces`` (default: this machine's LAN address) and connect."""
        return cls(await discover_seeds(interfaces, mesh_id, timeout_s), **options)

    async def call(
        self, deployment: str, body: Body = None, *, accept: str = JSON_TYPE, **options: Unpack[CallOptions]
    ) -> Result:
        """Run one request on ``deployment``: its answer (decoded JSON, or bytes) and where it ran."""
        return await self._run(self._fetch(deployment, body, accept, True, **options))

    async def predict(self, deployment: str, body: Body = None, **options: Unpack[CallOptions]) -> Any:
        """Run one request on ``deployment`` and return its JSON answer."""
        return (await self.call(deployment, body, **options)).data

    async def stream(
        self, deployment: str, body: Body = None, **options: Unpack[CallOptions]
    ) -> AsyncChunkStream:
        """Start a streamed request (``"stream": true``); ``async for`` over the result for its chunks."""
        return AsyncChunkStream(await self._run(self._open_stream(deployment, body, **options)))

    async def download(
        self, deployment: str, body: Body = None, *, path: SavePath = None, **options: Unpack[FileOptions]
    ) -> bytes:
        """A file answer (``accept``, default image/png): its bytes, also saved to ``path`` if given."""
        content: bytes = (await self._run(self._fetch_file(deployment, body, **options))).data
        if path is not None:
            await asyncio.to_thread(save_file, path, content)
        return content

    async def deploy(self, name: str, app: str, **spec: Unpack[DeploymentSpec]) -> dict[str, Any]:
        """Declare (or change) deployment ``name`` running ``app`` mesh-wide; returns its view."""
        view: dict[str, Any] = await self._run(self._deploy(name, app, spec))
        return view

    async def undeploy(self, name: str) -> None:
        """Remove deployment ``name`` mesh-wide (``DeploymentNotFound`` if the mesh does not know it)."""
        await self._run(self._undeploy(name))

    async def deployments(self) -> list[dict[str, Any]]:
        """Every deployment as one node sees it: desired and actual replicas, where, what is missing."""
        body = await self._run(self._deployments())
        listed: list[dict[str, Any]] = body["deployments"]
        return listed

    async def refresh(self) -> list[str]:
        """Ask the mesh for its live nodes now; returns the nodes known afterwards."""
        await self._run(self._planner.refresh(self._refresh_deadline()))
        return self.nodes

    async def aclose(self) -> None:
        """Close the connections to the nodes."""
        await self._http.aclose()

    def _open_http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(**HTTP_SETTINGS)

    async def _run(self, steps: Steps[T]) -> T:
        action = step(steps, None)
        while not isinstance(action, Finished):
            action = step(steps, await self._carry_out(action))
        return action.value

    async def _carry_out(self, action: Send | Read | Pause) -> object:
        """Do what the planner asked; a request error is handed back to it, not raised."""
        try:
            match action:
                case Send(method, url, headers, body, timeout):
                    request = self._http.build_request(
                        method, url, headers=headers, json=body, timeout=timeout
                    )
                    return await self._http.send(request, stream=True)
                case Read(response):
                    try:
                        return await response.aread()
                    finally:
                        await response.aclose()
                case Pause(seconds):
                    await asyncio.sleep(seconds)
        except httpx.RequestError as exc:
            return exc
        return None


class AsyncChunkStream(StreamInfo, AsyncClosing):
    """The chunks of one streamed answer, for ``async for``; also an async context manager."""

    def __init__(self, opened: Opened) -> None:
        """Stream the ``opened`` answer."""
        super().__init__(opened)
        self._lines = opened.response.aiter_lines()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        try:
            while self._decoder.wants_more():
                self._decoder.feed(await anext(self._lines, None))
            return self._take(StopAsyncIteration)
        except BaseException as exc:
            await self.aclose()
            raise self._failed(exc)  # noqa: B904 - _failed sets the cause of what it translates

    async def aclose(self) -> None:
        """Stop reading and close the connection."""
        await self._opened.response.aclose()
