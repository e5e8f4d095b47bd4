"""The OpenAI layer's parts in process: API keys through the real gate, the image store, the errors.

The ``openai`` SDK talks to the node's real ASGI app (the gate, FastAPI, the OpenAI routes) through
httpx2's ASGI transport from a chosen client address, so a client on another machine can be played
without a second machine. The mesh behind it is empty: these tests are about what happens before a
request is routed.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from meshnode.errors import NotFound, Overloaded, PayloadTooLarge, PredictorError
from meshnode.http.app import create_app
from meshnode.http.gate import Gate
from meshnode.http.keys import add_key_routes
from meshnode.http.openai import embeddings
from meshnode.http.openai.edge import Edge
from meshnode.http.openai.errors import error_response
from meshnode.http.openai.image_store import ImageStore
from meshnode.http.openai.models import Catalog
from meshnode.http.openai.routes import add_openai_routes
from meshnode.http.predict import PredictLimits
from meshnode.mesh.member import Member
from meshnode.mesh.records import Record

from .test_gate import Keys

REMOTE = ("10.0.0.5", 40000)
LOCAL = ("127.0.0.1", 40000)


class Node:
    node_id = "a" * 32

    def mesh_view(self) -> dict[str, Any]:
        return {"self": self.node_id, "members": []}

    def readiness(self) -> tuple[bool, str]:
        return True, "ready"


class EmptyMesh:
    """A node alone: no members with replicas, no deployments declared."""

    view_version = 0

    def members(self) -> list[Member]:
        return []

    def views(self) -> list[dict[str, Any]]:
        return []

    def record(self, name: str) -> Record | None:
        return None


async def never_served(*_: object, **__: object) -> Any:
    raise AssertionError("nothing in these tests may reach a replica")


@pytest.fixture
def gate(tmp_path: Path) -> Gate:
    keys = Keys()
    app = create_app(Node())
    add_key_routes(app, keys)
    mesh = EmptyMesh()
    store = ImageStore(tmp_path, ttl_s=60, max_bytes=1 << 20)
    add_openai_routes(app, Edge(never_served, PredictLimits(60.0, 1 << 20), Catalog(mesh, mesh, "m")), store)
    return Gate(app, keys.key, insecure=False)


def sdk(gate: Gate, client: tuple[str, int], key: str) -> openai.AsyncOpenAI:
    transport = httpx2.ASGITransport(app=gate, client=client)
    http = httpx2.AsyncClient(transport=transport, base_url="http://node")
    return openai.AsyncOpenAI(base_url="http://node/v1", api_key=key, http_client=http, max_retries=0)


@pytest.fixture
async def invoke_key(gate: Gate) -> AsyncIterator[str]:
    transport = httpx2.ASGITransport(app=gate, client=LOCAL)
    async with httpx2.AsyncClient(transport=transport, base_url="http://node") as local:
        made = await local.post("/v1/keys", json={"scope": "invoke"})
        yield str(made.json()["key"])


async def test_a_remote_sdk_needs_an_api_key_and_an_invoke_key_is_enough(gate: Gate, invoke_key: str) -> None:
    async with sdk(gate, REMOTE, "not-a-key") as stranger:
        with pytest.raises(openai.AuthenticationError):
            await stranger.models.list()
        with pytest.raises(openai.AuthenticationError):
            await stranger.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    async with sdk(gate, REMOTE, invoke_key) as caller:
        assert (await caller.models.list()).data == []
        with pytest.raises(openai.NotFoundError) as missing:
            await caller.embeddings.create(model="nothing-here", input="x")
        assert missing.value.code == "model_not_found"
    async with sdk(gate, LOCAL, "anything") as local:
        assert (await local.models.list()).data == []
    assert gate.refused["unauthenticated"] == 2


async def test_an_image_url_needs_no_key_its_token_is_the_permission(gate: Gate) -> None:
    transport = httpx2.ASGITransport(app=gate, client=REMOTE)
    async with httpx2.AsyncClient(transport=transport, base_url="http://node") as stranger:
        unknown = await stranger.get(f"/v1/images/files/{'A' * 22}.png")
        assert unknown.status_code == 404  # not 401: the gate let it through
        assert (await stranger.post("/v1/images/generations", json={})).status_code == 401


async def test_the_image_store_expires_links_and_keeps_within_its_bytes(tmp_path: Path) -> None:
    now = [0.0]
    store = ImageStore(tmp_path, ttl_s=10, max_bytes=100, clock=lambda: now[0])
    first = await store.put(b"1" * 40)
    second = await store.put(b"2" * 40)
    assert len(first) == len("00000000-" + "x" * 22 + ".png") and first != second
    assert store.owner_of(first) == "00000000" and store.owner_of("x.png") is None
    assert await store.get(first) == (b"1" * 40, 10.0)
    third = await store.put(b"3" * 40)  # 120 bytes would not fit: the oldest goes
    with pytest.raises(NotFound):
        await store.get(first)
    assert not (tmp_path / first).exists() and store.used_bytes == 80
    now[0] = 10.0
    with pytest.raises(NotFound):
        await store.get(third)  # expired at its deadline
    assert store.used_bytes == 0 and not list(tmp_path.iterdir())
    with pytest.raises(PayloadTooLarge):
        await store.put(b"4" * 101)
    for bad in ("../etc/passwd", f"{second[:-4]}.jpg", ""):
        with pytest.raises(NotFound):
            await store.get(bad)


def test_base64_embeddings_are_little_endian_float32_as_openai_sends_them() -> None:
    params = embeddings.EmbeddingsParams.model_validate(
        {"model": "e", "input": ["a b", "c"], "encoding_format": "base64"}, strict=True
    )
    data = {"data": [{"index": 1, "embedding": [0.5, -2.0]}, {"index": 0, "embedding": [1.0, 0.25]}]}
    answer = embeddings.answer(params, data)
    rows = [struct.unpack("<2f", base64.b64decode(row["embedding"])) for row in answer["data"]]
    assert rows == [(1.0, 0.25), (0.5, -2.0)]
    # No usage from the app: words are counted.
    assert answer["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    with pytest.raises(PredictorError):
        embeddings.answer(params, {"data": [{"index": 0, "embedding": [1e300]}, {"embedding": [0.0]}]})


@pytest.mark.parametrize(
    "vector",
    [[0.5, True], [0.5, None], [0.5, "1"], "0.5", [[0.5]], {"0": 0.5}],
)
def test_float_embeddings_refuse_what_is_not_a_list_of_numbers(vector: Any) -> None:
    params = embeddings.EmbeddingsParams.model_validate({"model": "e", "input": "a"}, strict=True)
    with pytest.raises(PredictorError):
        embeddings.answer(params, {"data": [{"index": 0, "embedding": vector}]})


def test_float_embeddings_come_back_as_floats_in_input_order() -> None:
    params = embeddings.EmbeddingsParams.model_validate({"model": "e", "input": ["a", "b"]}, strict=True)
    data = {"data": [{"index": 1, "embedding": [1, 0.25]}, {"index": 0, "embedding": [0.5, -2.0]}]}
    rows = [row["embedding"] for row in embeddings.answer(params, data)["data"]]
    assert rows == [[0.5, -2.0], [1.0, 0.25]]
    assert [type(x) for row in rows for x in row] == [float] * 4  # an app's 1 is OpenAI's 1.0


def test_errors_say_whether_the_sdk_should_retry_and_when() -> None:
    full = error_response(Overloaded("every replica is full", retry_after_s=2.2), "r1")
    assert full.status_code == 429
    assert (full.headers["retry-after"], full.headers["x-should-retry"]) == ("3", "true")
    broke = error_response(PredictorError("the app raised"), "r2")
    assert broke.status_code == 500 and broke.headers["x-should-retry"] == "false"
    assert b'"type":"server_error"' in broke.body and b'"request_id":"r2"' in broke.body
