"""The Python client: ``from meshnode import MeshClient`` (and ``AsyncMeshClient`` for asyncio).

    with MeshClient.discover(interfaces=["192.168.1.20"]) as mesh:     # or MeshClient(["10.0.0.2:8470"])
        mesh.predict("echo", {"text": "hello"})                        # the JSON answer
        with mesh.stream("stream", {"text": "life"}) as pieces:       # chunks as they arrive
            for piece in pieces:
                print(piece)
        mesh.download("t2i", {"prompt": "a lighthouse"}, path="out.png")

The client keeps a list of the mesh's live nodes (from ``/v1/mesh``, refreshed every
``refresh_interval_s`` on the next request), sends each request to the node that answered last or a
random live one, and fails over to another node when one refuses the connection, drops it before
answering, or is not ready (503). The decisions live in ``client_exchange``, shared with the asyncio
client; this module only carries them out with ``httpx.Client``. Errors: ``client_errors``
(``ClientError`` and below). More in docs/client.md.

A ``MeshClient`` may be shared by threads, as its ``httpx.Client`` may; it starts no thread itself
(``discover`` borrows one only when called inside a running event loop).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, TypeVar, Unpack

import httpx

from .client_answers import Result, StreamInfo
from .client_base import (
    DISCOVER_TIMEOUT_S,
    HTTP_SETTINGS,
    Body,
    CallOptions,
    ClientBase,
    Closing,
    DeploymentSpec,
    FileOptions,
    SavePath,
    discover_seeds,
    save_file,
)
from .client_exchange import JSON_TYPE, Finished, Opened, Pause, Read, Send, Steps, step

__all__ = ["ChunkStream", "MeshClient"]

T = TypeVar("T")


class MeshClient(ClientBase[httpx.Client], Closing):
    """A blocking client of a meshnode mesh; see the module docstring and docs/client.md."""

    @classmethod
    def discover(
        cls,
        interfaces: Sequence[str] | None = None,
        *,
        mesh_id: str | None = None,
        timeout_s: float = DISCOVER_TIMEOUT_S,
        **options: Any,
    ) -> MeshClient:
        """Find the mesh by mDNS on ``interfaces`` (default: this machine's LAN address) and connect.

        Browses for ``timeout_s`` seconds; ``mesh_id`` picks one mesh where several share the LAN;
        ``options`` go to the constructor. Raises ``NoNodeAvailable`` when no node answered.
        """
        return cls(_run_coroutine(discover_seeds(interfaces, mesh_id, timeout_s)), **options)

    def call(
        self, deployment: str, body: Body = None, *, accept: str = JSON_TYPE, **options: Unpack[CallOptions]
    ) -> Result:
        """Run one request on ``deployment``: its answer (decoded JSON, or bytes) and where it ran."""
        return self._run(self._fetch(deployment, body, accept, True, **options))

    def predict(self, deployment: str, body: Body = None, **options: Unpack[CallOptions]) -> Any:
        """Run one request on ``deployment`` and return its JSON answer."""
        return self.call(deployment, body, **options).data

    def stream(self, deployment: str, body: Body = None, **options: Unpack[CallOptions]) -> ChunkStream:
        """Start a streamed request (``"stream": true``); iterate the result for its chunks."""
        return ChunkStream(self._run(self._open_stream(deployment, body, **options)))

    def download(
        self, deployment: str, body: Body = None, *, path: SavePath = None, **options: Unpack[FileOptions]
    ) -> bytes:
        """A file answer (``accept``, default image/png): its bytes, also saved to ``path`` if given."""
        content: bytes = self._run(self._fetch_file(deployment, body, **options)).data
        if path is not None:
            save_file(path, content)
        return content

    def deploy(self, name: str, app: str, **spec: Unpack[DeploymentSpec]) -> dict[str, Any]:
        """Declare (or change) deployment ``name`` running ``app`` mesh-wide; returns its view."""
        view: dict[str, Any] = self._run(self._deploy(name, app, spec))
        return view

    def undeploy(self, name: str) -> None:
        """Remove deployment ``name`` mesh-wide (``DeploymentNotFound`` if the mesh does not know it)."""
        self._run(self._undeploy(name))

    def deployments(self) -> list[dict[str, Any]]:
        """Every deployment as one node sees it: desired and actual replicas, where, what is missing."""
        body = self._run(self._deployments())
        listed: list[dict[str, Any]] = body["deployments"]
        return listed

    def refresh(self) -> list[str]:
        """Ask the mesh for its live nodes now; returns the nodes known afterwards."""
        self._run(self._planner.refresh(self._refresh_deadline()))
        return self.nodes

    def close(self) -> None:
        """Close the connections to the nodes."""
        self._http.close()

    def _open_http(self) -> httpx.Client:
        return httpx.Client(**HTTP_SETTINGS)

    def _run(self, steps: Steps[T]) -> T:
        action = step(steps, None)
        while not isinstance(action, Finished):
            action = step(steps, self._carry_out(action))
        return action.value

    def _carry_out(self, action: Send | Read | Pause) -> object:
        """Do what the planner asked; a request error is handed back to it, not raised."""
        try:
            match action:
                case Send(method, url, headers, body, timeout):
                    request = self._http.build_request(
                        method, url, headers=headers, json=body, timeout=timeout
                    )
                    return self._http.send(request, stream=True)
                case Read(response):
                    try:
                        return response.read()
                    finally:
                        response.close()
                case Pause(seconds):
                    time.sleep(seconds)
        except httpx.RequestError as exc:
            return exc
        return None


class ChunkStream(StreamInfo, Closing):
    """The chunks of one streamed answer, in order, as they arrive; also a context manager.

    Iterating raises ``StreamBroken`` where the stream broke off. Close it (or leave its ``with``
    block) to stop early; the node then cancels the work. ``route``, ``request_id`` and ``node`` say
    where it runs.
    """

    def __init__(self, opened: Opened) -> None:
        """Stream the ``opened`` answer."""
        super().__init__(opened)
        self._lines = opened.response.iter_lines()

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            while self._decoder.wants_more():
                self._decoder.feed(next(self._lines, None))
            return self._take(StopIteration)
        except BaseException as exc:
            self.close()
            raise self._failed(exc)  # noqa: B904 - _failed sets the cause of what it translates

    def close(self) -> None:
        """Stop reading and close the connection."""
        self._opened.response.close()


def _run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to the end, also when called from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    # A running loop (a notebook, an async framework) cannot be re-entered: use a loop of our own.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="meshnode-discover") as pool:
        return pool.submit(asyncio.run, coroutine).result()
