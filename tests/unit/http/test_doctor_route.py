"""``GET /v1/doctor`` and ``/v1/doctor/dial/{node}`` against a fake agent, and how dials are worded."""

from __future__ import annotations

import errno
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshnode.config import AgentConfig
from meshnode.http.app import create_app
from meshnode.http.doctor import dial_outcome
from meshnode.http.gate import Gate
from meshnode.mesh.access import Scope, need_for

ME = "a" * 32
PEER = "b" * 32


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.node_id = ME
        self.config = config

    def mesh_view(self) -> dict[str, Any]:
        return {
            "self": ME,
            "members": [
                {"id": ME, "name": "me", "mesh": "10.0.0.1:8471", "data": "10.0.0.1:8472"},
                {"id": PEER, "name": "peer", "mesh": "10.0.0.2:8471", "data": "10.0.0.2:8472"},
            ],
        }

    def readiness(self) -> tuple[bool, str]:
        return True, ""


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    config = AgentConfig(
        name="me",
        mesh_id="lab",
        seeds=("10.0.0.9:8471",),
        interfaces=("10.0.0.1",),
        data_dir=tmp_path,
        token="t" * 40,
    )
    app = create_app(Agent(config))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node") as client:
        yield client


async def test_the_facts_name_the_mesh_id_the_clock_and_mdns_but_never_the_token(
    client: httpx.AsyncClient,
) -> None:
    before = int(time.time() * 1000)
    response = await client.get("/v1/doctor")
    assert response.status_code == 200
    body = response.json()
    assert body["node"] == ME and body["mesh_id"] == "lab"
    assert before <= body["time_ms"] <= int(time.time() * 1000)
    assert body["max_clock_offset_s"] == 300.0 and body["uptime_s"] >= 0
    assert body["mdns"] is True and body["mdns_interfaces"] == ["10.0.0.1"]
    assert body["seeds"] == ["10.0.0.9:8471"]
    assert "t" * 40 not in response.text


async def test_only_members_other_than_the_node_are_dialed(client: httpx.AsyncClient) -> None:
    for node in ("c" * 32, ME):
        response = await client.get(f"/v1/doctor/dial/{node}")
        assert response.status_code == 404, response.text


def test_the_routes_need_a_key_from_other_machines() -> None:
    assert need_for("GET", "/v1/doctor") is Scope.INVOKE
    assert need_for("GET", f"/v1/doctor/dial/{PEER}") is Scope.INVOKE


async def test_an_outsider_without_a_key_is_refused_and_nothing_is_dialed(tmp_path: Path) -> None:
    config = AgentConfig(name="me", mesh_id="lab", data_dir=tmp_path, token="t" * 40)
    gate = Gate(create_app(Agent(config)), lambda _key_id: None, insecure=False)
    transport = httpx.ASGITransport(app=gate, client=("203.0.113.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as outsider:
        for path in ("/v1/doctor", f"/v1/doctor/dial/{PEER}"):
            answer = await outsider.get(path, headers={"Authorization": "Bearer mn_made_up_key"})
            assert answer.status_code == 401, (path, answer.text)
            assert "mesh_id" not in answer.text and "10.0.0.2" not in answer.text


def test_fake_agents_without_a_configuration_get_no_doctor_routes() -> None:
    class Bare:
        node_id = ME

        def mesh_view(self) -> dict[str, Any]:
            return {"self": ME, "members": []}

        def readiness(self) -> tuple[bool, str]:
            return True, ""

    paths = {getattr(route, "path", "") for route in create_app(Bare()).routes}
    assert "/v1/doctor" not in paths


@pytest.mark.parametrize(
    ("exc", "outcome", "words"),
    [
        (None, "ok", "connected"),
        (TimeoutError(), "timeout", "dropped"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "refused", "nothing listens"),
        (OSError(errno.EHOSTUNREACH, "No route to host"), "unreachable", "No route to host"),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), "unreachable", "no route"),
        (OSError(errno.EACCES, "Permission denied"), "error", "Permission denied"),
    ],
)
def test_a_dial_is_worded_by_how_it_failed(exc: BaseException | None, outcome: str, words: str) -> None:
    got, detail = dial_outcome(exc)
    assert got == outcome and words in detail
