"""Both faces, ``MeshClient`` and ``AsyncMeshClient``, run the same plans to the same results.

Each test drives the two clients against one scripted mesh (``httpx.MockTransport``: no sockets)
and expects the same answers, the same requests on the wire and the same errors, so the faces cannot
drift apart: whatever they decide, they decide in the shared core; they differ only in their I/O.
"""

from __future__ import annotations

import inspect
import json
import random
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshnode import AsyncMeshClient, DeploymentNotFound, MeshClient, StreamBroken
from meshnode.client.aio import AsyncChunkStream, AsyncDriver
from meshnode.client.base import HTTP_SETTINGS
from meshnode.client.sync import BlockingDriver, ChunkStream

A, B = "http://10.0.0.1:8470", "http://10.0.0.2:8470"
NAMES = {A: "node-a", B: "node-b"}
Handler = Callable[[httpx.Request], httpx.Response]
Face = MeshClient | AsyncMeshClient
Stream = ChunkStream | AsyncChunkStream
SSE = "text/event-stream"


class Mesh:
    """Nodes A and B, both alive, answering as agents do; ``refused`` nodes refuse connections."""

    def __init__(
        self, *, refused: tuple[str, ...] = (), stream_body: httpx.SyncByteStream | None = None
    ) -> None:
        self.refused = refused
        self.stream_body = stream_body
        #: (method, url, body) of every request that reached a node.
        self.seen: list[tuple[str, str, Any]] = []
        self.deployments: dict[str, dict[str, Any]] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        node = f"{request.url.scheme}://{request.url.netloc.decode()}"
        if node in self.refused:
            raise httpx.ConnectError("connection refused", request=request)
        body: Any = json.loads(request.content) if request.content else None
        self.seen.append((request.method, str(request.url), body))
        headers = {"X-Mesh-Route": NAMES[node], "X-Request-Id": "r1"}
        name = request.url.path.rsplit("/", 1)[1]
        match request.method, request.url.path:
            case "GET", "/v1/mesh":
                members = [{"id": url, "status": "alive", "http": url[7:]} for url in (A, B)]
                return httpx.Response(200, json={"self": node, "members": members})
            case "POST", "/v1/predict/echo":
                return httpx.Response(200, json={"echo": body}, headers=headers)
            case "POST", "/v1/predict/png":
                return httpx.Response(
                    200, content=b"\x89PNG", headers={**headers, "content-type": "image/png"}
                )
            case "POST", "/v1/predict/stream":
                events = 'data: {"i": 0}\n\ndata: null\n\ndata: text\n\nevent: done\ndata: {}\n\n'
                content = None if self.stream_body else events.encode()
                return httpx.Response(
                    200, content=content, stream=self.stream_body, headers={**headers, "content-type": SSE}
                )
            case "PUT", _:
                self.deployments[name] = {"name": name, **body}
                return httpx.Response(200, json=self.deployments[name])
            case "GET", "/v1/deployments":
                return httpx.Response(200, json={"deployments": list(self.deployments.values())})
            case "DELETE", _ if name in self.deployments:
                del self.deployments[name]
                return httpx.Response(200, json={})
        error = {"type": "not_found", "message": "no such thing", "request_id": "r1"}
        return httpx.Response(404, json={"error": error})


class BrokenBody(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A streamed body that sends ``sent`` and then loses its connection."""

    def __init__(self, sent: bytes) -> None:
        self.sent = sent
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield self.sent
        raise httpx.ReadError("connection reset")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.sent
        raise httpx.ReadError("connection reset")

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


@asynccontextmanager
async def both_faces(handler: Handler, nodes: list[str]) -> AsyncIterator[list[Face]]:
    """A ``MeshClient`` and an ``AsyncMeshClient`` of ``nodes``, both sending through ``handler``."""
    transport = httpx.MockTransport(handler)
    blocking = MeshClient(nodes, prefer_first=True, rng=random.Random(1))
    blocking._driver.http.close()
    blocking._driver = BlockingDriver(httpx.Client(transport=transport, **HTTP_SETTINGS))
    awaited = AsyncMeshClient(nodes, prefer_first=True, rng=random.Random(1))
    await awaited._driver.http.aclose()
    awaited._driver = AsyncDriver(httpx.AsyncClient(transport=transport, **HTTP_SETTINGS))
    try:
        yield [blocking, awaited]
    finally:
        blocking.close()
        await awaited.aclose()


async def settle(value: Any) -> Any:
    """What a face's method returned, awaited where the face is the asyncio one."""
    return await value if inspect.isawaitable(value) else value


async def drain(stream: Stream) -> list[Any]:
    """Every chunk of ``stream``, by the iteration its face offers."""
    if isinstance(stream, ChunkStream):
        return list(stream)
    return [chunk async for chunk in stream]


async def test_both_faces_answer_alike_and_send_the_same_requests(tmp_path: Path) -> None:
    outcomes = []
    for index in range(2):
        mesh = Mesh()
        async with both_faces(mesh, [A]) as faces:
            face = faces[index]
            target = tmp_path / f"{index}.png"
            result = await settle(face.call("echo", {"x": 1}, request_id="r1"))
            outcomes.append(
                (
                    (result.data, result.route, result.request_id, result.node),
                    await settle(face.predict("echo", {"x": 2}, timeout=5.0, hint="h")),
                    await settle(face.download("png", {"seed": 1}, path=target)),
                    target.read_bytes(),
                    await settle(face.deploy("echo", "meshnode.apps.echo:Echo", min_replicas=2)),
                    await settle(face.deployments()),
                    await settle(face.undeploy("echo")),
                    await settle(face.deployments()),
                    sorted(await settle(face.refresh())),
                    mesh.seen,
                )
            )
    assert outcomes[0] == outcomes[1]
    answer, predicted, content, saved, view, listed, undeployed, emptied, nodes, _ = outcomes[0]
    assert answer == ({"echo": {"x": 1}}, ("node-a",), "r1", A)
    assert predicted == {"echo": {"x": 2}}
    assert content == saved == b"\x89PNG"
    assert view == {"name": "echo", "app": "meshnode.apps.echo:Echo", "min_replicas": 2}
    assert (listed, undeployed, emptied, nodes) == ([view], None, [], [A, B])


async def test_both_faces_fail_over_a_refused_node_and_raise_the_same_errors() -> None:
    async with both_faces(Mesh(refused=(A,)), [A, B]) as faces:
        for face in faces:
            result = await settle(face.call("echo", {"x": 1}))
            assert (result.data, result.node) == ({"echo": {"x": 1}}, B)
            assert face.last_node == B
            with pytest.raises(DeploymentNotFound, match="no such thing"):
                await settle(face.predict("nope"))
            with pytest.raises(ValueError, match="deployment"):
                await settle(face.predict(""))


async def test_both_faces_stream_every_chunk_and_close_at_the_end() -> None:
    async with both_faces(Mesh(), [A]) as faces:
        for face in faces:
            stream = await settle(face.stream("stream", {"x": 1}))
            assert (stream.route, stream.request_id, stream.node) == (("node-a",), "r1", A)
            assert await drain(stream) == [{"i": 0}, None, "text"]  # a null chunk is not the end
            assert stream._opened.response.is_closed
            assert await drain(stream) == []  # and the end stays the end


async def test_both_faces_close_a_stream_left_early() -> None:
    async with both_faces(Mesh(), [A]) as faces:
        blocking, awaited = faces
        assert isinstance(blocking, MeshClient) and isinstance(awaited, AsyncMeshClient)
        with blocking.stream("stream") as stream:
            assert next(stream) == {"i": 0}
        assert stream._opened.response.is_closed
        async with await awaited.stream("stream") as async_stream:
            assert await anext(async_stream) == {"i": 0}
        assert async_stream._opened.response.is_closed


async def test_a_stream_that_breaks_is_closed_and_raised_as_stream_broken_by_both_faces() -> None:
    for index in range(2):
        body = BrokenBody(b'data: {"i": 0}\n\ndata: {"i": 1}\n')
        async with both_faces(Mesh(stream_body=body), [A]) as faces:
            stream = await settle(faces[index].stream("stream"))
            received = []
            with pytest.raises(StreamBroken, match="mid-answer") as caught:
                if isinstance(stream, ChunkStream):
                    for chunk in stream:
                        received.append(chunk)
                else:
                    async for chunk in stream:
                        received.append(chunk)
            assert received == [{"i": 0}]
            assert caught.value.kind == "disconnected"
            assert isinstance(caught.value.__cause__, httpx.ReadError)
            assert body.closed
