"""The asyncio client: ``from meshnode import AsyncMeshClient``, ``MeshClient`` awaited.

    async with await AsyncMeshClient.discover(interfaces=["192.168.1.20"]) as mesh:
        answer = await mesh.predict("echo", {"text": "hello"})
        async with await mesh.stream("stream", {"text": "life"}) as pieces:
            async for piece in pieces:
                print(piece)
        job = await mesh.submit("t2i", {"prompt": "a lighthouse"})
        async for status in mesh.events(job.id):
            print(status.status, status.progress)

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
from .exchange import JSON_TYPE, Opened
from .job_plans import ProgressCallback, SubmitOptions
from .job_view import Job, JobList
from .job_watch import JobWatch
from .steps import Action, Close, Finished, Lines, NextLine, Pause, Read, Save, Send, Steps, step

__all__ = ["AsyncChunkStream", "AsyncDriver", "AsyncJobEvents", "AsyncMeshClient"]

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

    async def submit(self, deployment: str, body: Body = None, **options: Unpack[SubmitOptions]) -> Job:
        """Queue a request on ``deployment`` as a job; returns once its copies are stored."""
        return await self._driver.run(self._submit(deployment, body, **options))

    async def status(self, job_id: str) -> Job:
        """Where the job is: queued (its position), running (its progress), or how it ended."""
        return await self._driver.run(self._status(job_id))

    async def result(self, job_id: str) -> Any:
        """The job's answer, as ``predict`` returns it (bytes for a file); ``JobNotFinished`` until then."""
        return await self._driver.run(self._result(job_id))

    async def wait(
        self, job_id: str, timeout: float | None = None, on_progress: ProgressCallback | None = None
    ) -> Any:
        """Wait for the job to end (``on_progress`` hears each status) and return its answer."""
        return await self._driver.run(self._wait(job_id, timeout, on_progress))

    async def cancel(self, job_id: str) -> Job:
        """Cancel the job (a running one stops, as a predict whose caller left); its status."""
        return await self._driver.run(self._cancel(job_id))

    def events(self, job_id: str) -> AsyncJobEvents:
        """The job's statuses as they change, until it ends; ``async for`` over it (``aclose`` stops)."""
        return AsyncJobEvents(self._driver, self._watch(job_id))

    async def jobs(
        self,
        deployment: str | None = None,
        status: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> JobList:
        """A page of the mesh's jobs, newest first, of ``deployment`` and in ``status`` when given.

        The next page: ``jobs(..., cursor=page.next_cursor)``, while ``page.has_more``.
        """
        return await self._driver.run(self._jobs(deployment, status, limit, cursor))

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


class AsyncJobEvents(AsyncClosing):
    """One job's statuses as they change, for ``async for``; also an async context manager."""

    def __init__(self, driver: AsyncDriver, watch: JobWatch) -> None:
        """Follow the job of ``watch``, reading with ``driver``."""
        self._driver = driver
        self._watch = watch

    def __aiter__(self) -> AsyncIterator[Job]:
        return self

    async def __anext__(self) -> Job:
        job = await self._driver.run(self._watch.next_job())
        if job is None:
            raise StopAsyncIteration
        return job

    async def aclose(self) -> None:
        """Stop following the job (it goes on running)."""
        await self._driver.run(self._watch.close())


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
            case Lines(response):
                return response.aiter_lines()
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
