"""The HTTP API against a fake agent: response shapes, readiness, one error shape, request ids."""

from __future__ import annotations

import contextvars
import os
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from meshnode.errors import NotFound, Overloaded
from meshnode.http.app import create_app, request_id_of

MEMBER_FIELDS = {
    "id",
    "name",
    "status",
    "http",
    "tls",
    "mesh",
    "data",
    "data_key",
    "key_ids",
    "region",
    "zone",
    "device",
    "load",
    "models",
    "hints",
    "incarnation",
    "replicas",
    "speeds",
    "reach",
    "relays",
    "traffic",
    "store",
    "pulls",
    "features",
}


def member(node_id: str, name: str, status: str = "alive", **extra: Any) -> dict[str, Any]:
    return {
        "id": node_id,
        "name": name,
        "status": status,
        "http": "127.0.0.1:8470",
        "tls": False,
        "mesh": "127.0.0.1:8471",
        "data": "127.0.0.1:40001",
        "data_key": "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7",
        "key_ids": ["0a1b2c3d"],
        "region": "eu",
        "zone": "eu-1",
        "device": {"cpu": "Test CPU", "cores": 2, "memory": 1 << 34, "accelerators": [], "kind": "cpu"},
        "load": {"cpu": 12.5, "in_flight": 0},
        "models": ["tiny-sd"],
        "hints": ["lora-a"],
        "incarnation": 3,
        "replicas": {"tiny-sd": {"state": "ready", "queue": 0, "slots": 1, "capacity": 65}},
        "speeds": {"tiny-sd": {"service_ms": 150.0, "rps": 6.5}},
        "reach": "direct",
        "relays": [],
        "traffic": {"window_s": 10.0, "requests": {"tiny-sd": [20, 0, 0, 0, 0, 0, 5, 15]}, "links": {}},
        "store": {"tiny-sd": {"digest": "0123456789abcdef", "bytes": 8_000_000}},
        "pulls": {},
        "features": ["load-news"],
        **extra,
    }


class FakeAgent:
    def __init__(self) -> None:
        self.node_id = "a" * 32
        self.ready: tuple[bool, str] = (True, "")
        self.members = [member(self.node_id, "alpha"), member("b" * 32, "beta", status="suspect")]

    def mesh_view(self) -> dict[str, Any]:
        return {"self": self.node_id, "members": self.members}

    def readiness(self) -> tuple[bool, str]:
        return self.ready


@pytest.fixture
def agent() -> FakeAgent:
    return FakeAgent()


@pytest.fixture
def app(agent: FakeAgent) -> FastAPI:
    app = create_app(agent)

    @app.get("/test/not-found")
    async def not_found() -> None:
        raise NotFound("no deployment named 'ghost'")

    @app.get("/test/overloaded")
    async def overloaded() -> None:
        raise Overloaded("every replica is busy", retry_after_s=2.5)

    @app.get("/test/bug")
    async def bug() -> None:
        raise RuntimeError("secret internals")

    @app.get("/test/typed")
    async def typed(count: int) -> dict[str, int]:
        return {"count": count}

    return app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    # httpx's in-process ASGI transport rather than starlette's TestClient, which warns (an error
    # here) unless the separate httpx2 package is installed.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node") as client:
        yield client


def assert_error(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"type", "message", "request_id"}
    assert body["error"]["type"] == kind
    assert body["error"]["request_id"] == response.headers["X-Request-Id"]
    assert "Traceback" not in response.text
    return dict(body["error"])


async def test_health_names_the_node(client: httpx.AsyncClient, agent: FakeAgent) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "node": agent.node_id}


async def test_mesh_has_exactly_the_design_fields(client: httpx.AsyncClient, agent: FakeAgent) -> None:
    agent.members.append(member("c" * 32, "gamma", status="left", rtt={"sd": 1.0}))
    response = await client.get("/v1/mesh")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"self", "members"}
    assert body["self"] == agent.node_id
    assert [item["name"] for item in body["members"]] == ["alpha", "beta", "gamma"]
    for item in body["members"]:
        # Fields the agent keeps beyond these (rtt here) are not part of the API.
        assert set(item) == MEMBER_FIELDS
    assert body["members"][0] == member(agent.node_id, "alpha")


async def test_ready_is_200_when_ready(client: httpx.AsyncClient) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"ready": True}
    assert "Retry-After" not in response.headers


async def test_not_ready_is_503_with_reason_and_retry_after(
    client: httpx.AsyncClient, agent: FakeAgent
) -> None:
    agent.ready = (False, "joining: no seed answered yet")
    response = await client.get("/ready")
    assert response.status_code == 503
    assert response.json() == {"ready": False, "reason": "joining: no seed answered yet"}
    assert int(response.headers["Retry-After"]) >= 1


async def test_unknown_path_is_a_json_404(client: httpx.AsyncClient) -> None:
    error = assert_error(await client.get("/nope"), 404, "not_found")
    assert "/nope" in error["message"]


async def test_wrong_method_is_a_json_405(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/mesh")
    error = assert_error(response, 405, "method_not_allowed")
    assert "POST" in error["message"]
    assert response.headers["Allow"] == "GET"


async def test_validation_error_is_a_json_422(client: httpx.AsyncClient) -> None:
    error = assert_error(await client.get("/test/typed", params={"count": "many"}), 422, "validation")
    assert "count" in error["message"]


async def test_meshnode_error_gets_its_status(client: httpx.AsyncClient) -> None:
    error = assert_error(await client.get("/test/not-found"), 404, "not_found")
    assert error["message"] == "no deployment named 'ghost'"


async def test_retryable_error_sets_retry_after(client: httpx.AsyncClient) -> None:
    response = await client.get("/test/overloaded")
    assert_error(response, 429, "overloaded")
    assert response.headers["Retry-After"] == "3"


async def test_unexpected_exception_is_a_500_without_details(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    response = await client.get("/test/bug", headers={"X-Request-Id": "bug-1"})
    error = assert_error(response, 500, "internal")
    assert "secret internals" not in response.text
    assert "RuntimeError" not in error["message"]
    # The details go to the log instead, findable by the request id the client saw.
    [record] = [record for record in caplog.records if record.name == "meshnode.http.app"]
    assert "bug-1" in record.getMessage()
    assert record.exc_info is not None


async def test_sane_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/health", headers={"X-Request-Id": "client-req.42"})
    assert response.headers["X-Request-Id"] == "client-req.42"
    error = assert_error(await client.get("/nope", headers={"X-Request-Id": "abc-123"}), 404, "not_found")
    assert error["request_id"] == "abc-123"


@pytest.mark.parametrize("offered", ["", "has space", "x" * 200, "line\tbreak"])
async def test_insane_request_id_is_replaced(client: httpx.AsyncClient, offered: str) -> None:
    response = await client.get("/health", headers={"X-Request-Id": offered})
    generated = response.headers["X-Request-Id"]
    assert generated != offered
    assert len(generated) == 32


async def test_every_response_gets_a_fresh_request_id(client: httpx.AsyncClient) -> None:
    ids = {(await client.get("/health")).headers["X-Request-Id"] for _ in range(3)}
    assert len(ids) == 3


def test_ids_made_here_are_32_hex_digits_all_different_and_a_forked_child_draws_its_own() -> None:
    # In a context of its own: request_id_of makes each id the current request's, for log lines,
    # and that must not stay behind for the tests that run after this one.
    ids = contextvars.copy_context().run(
        lambda: [request_id_of({"type": "http", "headers": []}) for _ in range(10_000)]
    )
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in ids)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        os.write(write, request_id_of({"type": "http", "headers": []}).encode())
        os._exit(0)
    os.waitpid(child, 0)
    theirs = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    assert theirs[:16] != ids[0][:16]  # not the parent's prefix: its count could repeat ours


def test_a_failure_from_a_worker_or_peer_becomes_the_error_of_its_kind() -> None:
    from meshnode.errors import (
        Conflict,
        NotReady,
        Overloaded,
        PredictorError,
        Unprocessable,
        error_for_failure,
    )

    assert isinstance(error_for_failure("invalid_request", "x", retryable=False), Unprocessable)
    assert isinstance(error_for_failure("conflict", "x", retryable=False), Conflict)
    overloaded = error_for_failure("overloaded", "full", retryable=True)
    assert isinstance(overloaded, Overloaded) and overloaded.retry_after_s == 1.0
    assert isinstance(error_for_failure("peer_lost", "gone", retryable=True), NotReady)
    crashed = error_for_failure("predictor", "boom", retryable=False)
    assert isinstance(crashed, PredictorError) and crashed.message == "boom"
    assert isinstance(error_for_failure("from-a-newer-version", "?", retryable=False), PredictorError)
