"""``/v1/models/store`` on a real store through the real gate: the view, removal, rescan, and keys.

The agent's parts are real (``ModelService`` over a ``ModelStore`` in a temporary folder, the gate
in front of the app); the mesh is a list of members as gossip would leave them. Removal on peers
over the data plane runs between real agents in tests/integration/models/test_store_mesh.py.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from meshnode.http.app import create_app
from meshnode.http.gate import Gate
from meshnode.http.model_store import add_model_store_routes
from meshnode.mesh.access import ApiKey, Scope, make_key
from meshnode.mesh.member import Member
from meshnode.mesh.metadata import NodeMeta
from meshnode.mesh.model_manifest import MIN_CHUNK_BYTES, short
from meshnode.mesh.types import Address, NodeId, Status
from meshnode.models.service import ModelService
from meshnode.models.store import ModelStore

SIZE = 2 + 3 * MIN_CHUNK_BYTES  # the model's two files
ME = NodeId("a" * 32)
PEER = NodeId("b" * 32)
GONE = NodeId("c" * 32)
OUTSIDER = ("203.0.113.7", 40000)
LOOPBACK = ("127.0.0.1", 40000)


class Agent:
    node_id = ME

    def mesh_view(self) -> dict[str, Any]:
        return {"self": ME, "members": []}

    def readiness(self) -> tuple[bool, str]:
        return True, ""


class Members:
    def __init__(self) -> None:
        self.list: list[Member] = []

    def members(self) -> Iterable[Member]:
        return self.list


def member(node: NodeId, name: str, status: Status = Status.ALIVE, **meta: Any) -> Member:
    return Member(node, Address("127.0.0.1:1"), 1, status, 1, NodeMeta(name=name, **meta), 0.0)


async def no_peer_calls(*args: Any) -> Any:
    raise AssertionError("no peer is called in these tests")
    yield  # pragma: no cover


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    source = tmp_path / "src"
    (source / "unet").mkdir(parents=True)
    (source / "model_index.json").write_text("{}")
    (source / "unet" / "weights.bin").write_bytes(os.urandom(3 * MIN_CHUNK_BYTES))
    store = ModelStore(tmp_path / "data" / "model-store")
    store.scan()
    store.add("tiny-sd", source, chunk_bytes=MIN_CHUNK_BYTES)
    return store


@pytest.fixture
def service(store: ModelStore) -> tuple[ModelService, Members, list[str]]:
    members = Members()
    published: list[str] = []
    service = ModelService(
        store, me=ME, members=members, call_peer=no_peer_calls, publish=lambda: published.append("meta")
    )
    digest = short(store.held()["tiny-sd"])
    members.list = [
        member(ME, "me", store=store.gossip()),
        member(
            PEER,
            "peer",
            store={"tiny-sd": {"digest": digest, "bytes": SIZE}, "other": {"digest": "1" * 16, "bytes": 5}},
            pulls={"llm": {"digest": "2" * 16, "done": 3, "total": 9}},
        ),
        member(GONE, "gone", Status.DEAD, store={"tiny-sd": {"digest": digest, "bytes": SIZE}}),
    ]
    return service, members, published


@pytest.fixture
def invoke_key() -> tuple[str, ApiKey]:
    return make_key(os.urandom(6), os.urandom(32), "reader", Scope.INVOKE, 0)


@pytest.fixture
async def clients(
    service: tuple[ModelService, Members, list[str]], invoke_key: tuple[str, ApiKey]
) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    app: FastAPI = create_app(Agent())
    add_model_store_routes(app, service[0])
    text, key = invoke_key
    gate = Gate(app, lambda key_id: key if key_id == key.id else None, insecure=False)
    made = {}
    for label, client, headers in (
        ("local", LOOPBACK, {}),
        ("outsider", OUTSIDER, {}),
        ("reader", OUTSIDER, {"Authorization": f"Bearer {text}"}),
    ):
        transport = httpx.ASGITransport(app=gate, client=client)
        made[label] = httpx.AsyncClient(transport=transport, base_url="http://node", headers=headers)
    yield made
    for client in made.values():
        await client.aclose()


async def test_the_view_lists_holders_and_pulls_of_present_nodes_and_no_paths(
    clients: dict[str, httpx.AsyncClient], store: ModelStore
) -> None:
    response = await clients["reader"].get("/v1/models/store")
    assert response.status_code == 200, response.text
    body = response.json()
    digest = store.held()["tiny-sd"]
    pull = {"node": "peer", "done": 3, "total": 9}
    assert body["models"] == [
        {"name": "llm", "digest": "2" * 16, "bytes": 9, "holders": [], "pulling": [pull]},
        {"name": "other", "digest": "1" * 16, "bytes": 5, "holders": ["peer"], "pulling": []},
        {
            "name": "tiny-sd",
            "digest": short(digest),
            "bytes": SIZE,
            "holders": ["me", "peer"],
            "pulling": [],
        },
    ]
    assert body["local"] == [{"name": "tiny-sd", "digest": digest, "bytes": SIZE, "files": 2}]
    assert str(store.folder) not in response.text


async def test_an_outsider_without_a_key_gets_401_on_every_route(
    clients: dict[str, httpx.AsyncClient],
) -> None:
    outsider = clients["outsider"]
    for method, path in (
        ("GET", "/v1/models/store"),
        ("GET", "/v1/models/store/tiny-sd"),
        ("DELETE", "/v1/models/store/tiny-sd"),
        ("POST", "/v1/models/store"),
        ("POST", "/v1/models/store/tiny-sd/pull"),
        ("GET", "/v1/models/store/tiny-sd/pull"),
    ):
        for headers in ({}, {"Authorization": "Bearer mn_made_up_key"}):
            answer = await outsider.request(method, path, headers=headers)
            assert answer.status_code == 401, (method, path, answer.text)
            assert "tiny-sd" not in answer.text.replace(path, "")


async def test_one_model_is_its_rows_and_this_node_copy_and_404_when_nobody_holds_it(
    clients: dict[str, httpx.AsyncClient],
) -> None:
    reader = clients["reader"]
    one = (await reader.get("/v1/models/store/tiny-sd")).json()
    assert [row["name"] for row in one["models"]] == ["tiny-sd"]
    assert [entry["name"] for entry in one["local"]] == ["tiny-sd"]
    missing = await reader.get("/v1/models/store/nobody-has-it")
    assert missing.status_code == 404 and "nobody-has-it" in missing.json()["error"]["message"]
    assert (await reader.get("/v1/models/store/..bad")).status_code == 422


async def test_an_invoke_key_reads_but_may_not_change_a_store(
    clients: dict[str, httpx.AsyncClient], store: ModelStore
) -> None:
    reader = clients["reader"]
    assert (await reader.delete("/v1/models/store/tiny-sd")).status_code == 403
    assert (await reader.post("/v1/models/store")).status_code == 403
    assert store.get("tiny-sd") is not None


async def test_delete_removes_a_model_held_here_and_gossips(
    clients: dict[str, httpx.AsyncClient], service: tuple[ModelService, Members, list[str]], store: ModelStore
) -> None:
    _, members, published = service
    members.list = members.list[:1]  # only this node holds it
    response = await clients["local"].delete("/v1/models/store/tiny-sd")
    assert response.status_code == 200, response.text
    assert response.json() == {"name": "tiny-sd", "removed": ["me"], "failed": []}
    assert not (store.folder / "tiny-sd").exists()
    assert published == ["meta"]
    again = await clients["local"].delete("/v1/models/store/tiny-sd")
    assert again.status_code == 404
    assert again.json()["error"]["message"] == "no node in the mesh holds a model named 'tiny-sd'"


async def test_delete_on_one_node_only_and_unknown_nodes(
    clients: dict[str, httpx.AsyncClient], store: ModelStore
) -> None:
    local = clients["local"]
    unknown = await local.delete("/v1/models/store/tiny-sd", params={"node": "nobody"})
    assert unknown.status_code == 404 and "no node named 'nobody'" in unknown.text
    not_there = await local.delete("/v1/models/store/other", params={"node": "me"})
    assert not_there.status_code == 404 and "node 'me' holds no model named 'other'" in not_there.text
    too_long = await local.delete("/v1/models/store/tiny-sd", params={"node": "x" * 129})
    assert too_long.status_code == 422
    mine = await local.delete("/v1/models/store/tiny-sd", params={"node": "me"})
    assert mine.json() == {"name": "tiny-sd", "removed": ["me"], "failed": []}
    assert store.get("tiny-sd") is None


@pytest.mark.parametrize("name", ["-x", ".partial", "a%20b", "x" * 65])
async def test_delete_refuses_a_bad_name_with_422(clients: dict[str, httpx.AsyncClient], name: str) -> None:
    response = await clients["local"].delete(f"/v1/models/store/{name}")
    assert response.status_code == 422, response.text
    assert "model name" in response.json()["error"]["message"]


async def test_rescan_holds_what_the_cli_added_and_says_why_a_folder_is_skipped(
    clients: dict[str, httpx.AsyncClient], service: tuple[ModelService, Members, list[str]], store: ModelStore
) -> None:
    _, _, published = service
    cli = ModelStore(store.folder)  # the CLI's own instance, in its own process
    cli.scan()
    cli.add("copy", store.folder.parent.parent / "src", chunk_bytes=MIN_CHUNK_BYTES)
    (store.folder / "dropped-in").mkdir()
    response = await clients["local"].post("/v1/models/store")
    assert response.status_code == 200, response.text
    body = response.json()
    assert [item["name"] for item in body["local"]] == ["copy", "tiny-sd"]
    assert "meshnode models add" in body["skipped"]["dropped-in"]
    assert str(store.folder) not in response.text
    assert published == ["meta"]
    assert set(service[0].gossip()) == {"copy", "tiny-sd"}
