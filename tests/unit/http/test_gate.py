"""The API-key gate and the key routes, in process: the real ASGI app, clients at chosen addresses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from meshnode.http.app import create_app
from meshnode.http.gate import Gate
from meshnode.http.keys import add_key_routes
from meshnode.mesh.access import ApiKey, KeyTable

REMOTE = ("10.0.0.5", 40000)
LOCAL = ("127.0.0.1", 40000)


class Keys:
    """The key table as the runner keeps it, without the gossip."""

    def __init__(self) -> None:
        self.table = KeyTable()

    def key(self, key_id: str) -> ApiKey | None:
        return self.table.get(key_id)

    def all_keys(self) -> list[ApiKey]:
        return self.table.all()

    def merge_key(self, key: ApiKey) -> None:
        self.table.merge(key)


@pytest.fixture
def keys() -> Keys:
    return Keys()


class Node:
    node_id = "a" * 32

    def mesh_view(self) -> dict[str, Any]:
        return {"self": self.node_id, "members": []}

    def readiness(self) -> tuple[bool, str]:
        return True, "ready"


@pytest.fixture
def gate(keys: Keys) -> Gate:
    app = create_app(Node())  # the node's own app: its error handlers, /health, /v1/mesh
    add_key_routes(app, keys)

    @app.post("/v1/predict/echo")
    async def predict() -> dict[str, Any]:
        return {"echo": True}

    return Gate(app, keys.key, insecure=False)


@pytest.fixture
async def local(gate: Gate) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=gate, client=LOCAL)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        yield client


def remote(gate: Gate, key: str | None = None) -> httpx.AsyncClient:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    transport = httpx.ASGITransport(app=gate, client=REMOTE)
    return httpx.AsyncClient(transport=transport, base_url="http://node", headers=headers)


async def make(local: httpx.AsyncClient, scope: str) -> str:
    response = await local.post("/v1/keys", json={"scope": scope, "name": f"{scope} test"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"id", "key", "name", "scope", "created_ms", "revoked"}
    return str(body["key"])


async def test_loopback_needs_no_key_and_liveness_is_open_to_all(
    gate: Gate, local: httpx.AsyncClient
) -> None:
    assert (await local.post("/v1/predict/echo")).status_code == 200
    async with remote(gate) as stranger:
        assert (await stranger.get("/health")).status_code == 200
        assert (await stranger.get("/v1/mesh")).status_code == 401


async def test_a_remote_client_without_a_key_gets_401_in_the_one_error_shape(gate: Gate) -> None:
    async with remote(gate) as stranger:
        for method, path in (("POST", "/v1/predict/echo"), ("GET", "/v1/keys"), ("PUT", "/v1/deployments/x")):
            response = await stranger.request(method, path, json={})
            assert response.status_code == 401, (method, path)
            assert response.headers["www-authenticate"].startswith("Bearer")
            error = response.json()["error"]
            assert error["type"] == "unauthenticated" and error["request_id"]
    assert gate.refused["unauthenticated"] == 3


async def test_an_invoke_key_predicts_and_an_admin_key_also_manages(
    gate: Gate, local: httpx.AsyncClient
) -> None:
    invoke, admin = await make(local, "invoke"), await make(local, "admin")
    async with remote(gate, invoke) as caller:
        assert (await caller.post("/v1/predict/echo")).status_code == 200
        refused = await caller.post("/v1/keys", json={"scope": "admin"})
        assert refused.status_code == 403 and refused.json()["error"]["type"] == "forbidden"
    async with remote(gate, admin) as operator:
        assert (await operator.post("/v1/predict/echo")).status_code == 200
        listed = (await operator.get("/v1/keys")).json()["keys"]
        assert {key["scope"] for key in listed} == {"invoke", "admin"}
        assert all("key" not in key and "digest" not in key for key in listed)


async def test_a_revoked_key_stops_working_at_once(gate: Gate, local: httpx.AsyncClient) -> None:
    invoke = await make(local, "invoke")
    key_id = invoke.split("_")[1]
    revoked = await local.delete(f"/v1/keys/{key_id}")
    assert revoked.json() == {"id": key_id, "revoked": True}
    async with remote(gate, invoke) as caller:
        assert (await caller.post("/v1/predict/echo")).status_code == 401
    assert (await local.delete("/v1/keys/ffffffffffff")).status_code == 404


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"scope": "root"}, 422),
        ({"name": "no scope"}, 422),
        ({"scope": "invoke", "extra": 1}, 422),
        ({"scope": "invoke", "name": "x" * 65}, 422),
        ({"scope": "invoke", "name": "tab\there"}, 422),
        ([], 422),
    ],
)
async def test_bad_key_requests_get_a_clear_4xx(local: httpx.AsyncClient, body: object, status: int) -> None:
    response = await local.post("/v1/keys", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"]


async def test_a_huge_or_broken_key_request_is_refused_unread(local: httpx.AsyncClient) -> None:
    assert (await local.post("/v1/keys", content=b"{" * 10_000)).status_code == 413
    assert (await local.post("/v1/keys", content=b"{not json")).status_code == 400


async def test_a_refused_websocket_is_closed_before_it_is_accepted(gate: Gate) -> None:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/v1/ws/predict/echo", "headers": [], "client": REMOTE}
    await gate(scope, receive, send)
    assert [message["type"] for message in sent] == ["websocket.close"]
    assert sent[0]["code"] == 1008
