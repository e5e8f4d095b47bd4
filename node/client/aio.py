"""The asyncio client: ``from meshnode import AsyncMeshClient``, ``MeshClient`` awaited.

    async with await AsyncMeshClient.discover(interfaces=["192.168.1.20"]) as mesh:
        answer = await mesh.predict("echo", {"text": "hello"})
        async with await mesh.stream("stream", {"text": "life"}) as pieces:
            async for piece in pieces:
                print(piece)

Same node list, failover, retries and errors as ``MeshClient``: every method is the same plan, built
in ``base.py``; this module only carries plans out (``AsyncDriver``, with ``httpx.AsyncClient``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeVar, Unpack

import httpx

from .answers import Result, StreamedAnswer
from .base import (
    DISCOVER_TIMEOUT_S,
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
from .exchange import (
    JSON_TYPE,
    Action,
    Close,
    Finished,
    NextLine,
    Opened,
    Pause,
    Read,
    Save,
    Send,
    Steps,
    step,
)

__all__ = ["AsyncChunkStream", "AsyncDriver", "AsyncMeshClient"]

T = TypeVar("T")


class AsyncMeshClient(ClientBase["AsyncDriver"], AsyncClosing):
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
        return await self._driver.run(self._call(deployment, body, accept, **options))

    async def predict(self, deployment: str, body: Body = None, **options: Unpack[CallOptions]) -> Any:
        """Run one request on ``deployment`` and return its JSON answer."""
        return await self._driver.run(self._predict(deployment, body, **options))

    async def stream(
        self, deployment: str, body: Body = None, **options: Unpack[CallOptions]
    ) -> AsyncChunkStream:
        """Start a streamed request (``"stream": true``); ``async for`` over the result for its chunks."""
        opened = await self._driver.run(self._stream(deployment, body, **options))
        return AsyncChunkStream(self._driver, opened)

    async def download(
        self, deployment: str, body: Body = None, *, path: SavePath = None, **options: Unpack[FileOptions]
    ) -> bytes:
        """A file answer (``accept``, default image/png): its bytes, also saved to ``path`` if given."""
        return await self._driver.run(self._download(deployment, body, path, **options))

    async def deploy(self, name: str, app: str, **spec: Unpack[DeploymentSpec]) -> dict[str, Any]:
        """Declare (or change) deployment ``name`` running ``app`` mesh-wide; returns its view."""
        return await self._driver.run(self._deploy(name, app, spec))

    async def undeploy(self, name: str) -> None:
        """Remove deployment ``name`` mesh-wide (``DeploymentNotFound`` if the mesh does not know it)."""
        await self._driver.run(self._undeploy(name))

    async def deployments(self) -> list[dict[str, Any]]:
        """Every deployment as one node sees it: desired and actual replicas, where, what is missing."""
        return await self._driver.run(self._deployments())

    async def refresh(self) -> list[str]:
        """Ask the mesh for its live nodes now; returns the nodes known afterwards."""
        return await self._driver.run(self._refresh())

    async def aclose(self) -> None:
        """Close the connections to the nodes."""
        await self._driver.http.aclose()

    def _open_driver(self) -> AsyncDriver:
        return AsyncDriver(httpx.AsyncClient(**self._http_settings))


class AsyncChunkStream(StreamedAnswer, AsyncClosing):
    """The chunks of one streamed answer, for ``async for``; also an async context manager."""

    def __init__(self, driver: AsyncDriver, opened: Opened) -> None:
        """Stream the ``opened`` answer, reading it with ``driver``."""
        super().__init__(opened, opened.response.aiter_lines())
        self._driver = driver

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        return self._chunk_or(StopAsyncIteration, await self._driver.run(self._next_chunk()))

    async def aclose(self) -> None:
        """Stop reading and close the connection."""
        await self._opened.response.aclose()


class AsyncDriver:
    """Carries out plans with ``httpx.AsyncClient``, awaited: all the I/O of ``AsyncMeshClient``."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        """Send with ``http``."""
        self.http = http

    async def run(self, steps: Steps[T]) -> T:
        """Carry out ``steps`` to their end; what they return."""
        reply: object = None
        while not isinstance(action := step(steps, reply), Finished):
            try:
                reply = await self._carry_out(action)
            except BaseException as exc:  # the plan decides what a failure means (exchange.py)
                reply = exc
        return action.value

    async def _carry_out(self, action: Action) -> object:
        match action:
            case Send(method, url, headers, body, timeout):
                request = self.http.build_request(method, url, headers=headers, json=body, timeout=timeout)
                return await self.http.send(request, stream=True)
            case Read(response):
                try:
                    return await response.aread()
                finally:
                    await response.aclose()
            case NextLine(AsyncIterator() as lines):
                return await anext(lines, None)
            case Close(response):
                await response.aclose()
            case Pause(seconds):
                await asyncio.sleep(seconds)
            case Save(path, content):
                await asyncio.to_thread(save_file, path, content)
            case _:
                raise TypeError(f"an asyncio client cannot carry out {action!r}")
        return None
