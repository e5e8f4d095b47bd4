"""Only allowed apps run, with real agents: app folders, external apps, and nodes that may not host.

Three agents share one mesh for the module: ``n0`` with an app folder, ``n1`` with none, ``n2`` with
the same app folder and ``--allow-external-apps``. The apps leave a marker file named after the agent
that imported them (a worker's parent is its agent), so a test can tell who ran what, and that a
refused app ran nowhere.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshnode.mesh.placement import host_of, rank
from meshnode.mesh.types import NodeId
from tests.integration.agents import AgentProcess, Mesh, wait_for

EXAMPLE = Path(__file__).resolve().parents[3] / "apps" / "external_server"
OUTSIDE = "outside this node's app folders"
# A worker spawned, imported, set up and reported ready, on two busy cores.
READY_TIMEOUT_S = 90.0

MARKER_APP = '''
"""Leaves a marker named after the agent that imported it, then answers with that agent's pid."""
import os
from pathlib import Path

Path({markers!r}, "{prefix}-" + str(os.getppid())).touch()


class {cls}:
    def predict(self, request, header=None):
        return {{"agent": os.getppid()}}
'''


@dataclass(frozen=True)
class Files:
    apps: Path  # the app folder of n0 and n2
    outside: Path  # a file no node may run
    markers: Path  # where imported apps leave their marker

    def marked(self, prefix: str) -> set[str]:
        return {path.name for path in self.markers.glob(f"{prefix}-*")}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    base = tmp_path_factory.mktemp("app-policy")
    apps, markers = base / "apps", base / "markers"
    apps.mkdir()
    markers.mkdir()
    (apps / "marker_app.py").write_text(MARKER_APP.format(markers=str(markers), prefix="app", cls="Marker"))
    outside = base / "outside" / "evil.py"
    outside.parent.mkdir()
    outside.write_text(MARKER_APP.format(markers=str(markers), prefix="evil", cls="Evil"))
    (apps / "escape.py").symlink_to(outside)  # inside the folder by name only
    external = apps / "ext"
    external.mkdir()
    for name in ("config.yaml", "server.py"):
        shutil.copy(EXAMPLE / name, external / name)
    return Files(apps, outside, markers)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, files: Files) -> Iterator[Mesh]:
    app_dir = ["--app-dir", str(files.apps)]
    flags = {0: app_dir, 1: [], 2: [*app_dir, "--allow-external-apps"]}
    with Mesh(tmp_path_factory.mktemp("app-policy-mesh"), 3, extra_args=flags) as started:
        started.wait_formed(timeout=60)
        yield started


def put(agent: AgentProcess, name: str, spec: object) -> httpx.Response:
    return httpx.put(f"{agent.url}/v1/deployments/{name}", json=spec, timeout=10)


def view(agent: AgentProcess, name: str) -> dict[str, Any]:
    response = agent.get(f"/v1/deployments/{name}")
    return response.json() if response.status_code == 200 else {}


def ready_on(agent: AgentProcess, name: str) -> set[str]:
    return {r["node"] for r in view(agent, name).get("replicas", []) if r["status"] == "ready"}


def running(agent: AgentProcess, name: str) -> bool:
    """Whether the agent runs a replica of `name` (a node sitting it out runs none)."""
    entry = agent.members()[agent.node_id]["replicas"].get(name)
    return entry is not None and entry["state"] != "failed"


def undeploy(mesh: Mesh, name: str) -> None:
    assert httpx.delete(f"{mesh.agents[0].url}/v1/deployments/{name}", timeout=10).status_code == 200
    wait_for(
        lambda: not any(running(agent, name) for agent in mesh.agents),
        60,
        interval=0.2,
        message=f"{name}'s replicas to stop",
    )


def ranking(agent: AgentProcess, name: str) -> list[str]:
    """Every live node by name, best host first, from the agent's own view."""
    members = [m for m in agent.view()["members"] if m["status"] == "alive"]
    names = {m["id"]: m["name"] for m in members}
    hosts = [host_of(NodeId(m["id"]), m["device"], m["region"], m["zone"]) for m in members]
    return [names[node] for node in rank(name, hosts)]


def test_a_file_outside_the_app_folders_gets_422_on_every_node_and_runs_nowhere(
    mesh: Mesh, files: Files
) -> None:
    escapes = (
        f"{files.outside}:Evil",
        f"{files.apps}/escape.py:Evil",  # a symlink out of the folder
        f"{files.apps}/../outside/evil.py:Evil",  # .. out of the folder
    )
    for agent in mesh.agents:
        for app in escapes:
            response = put(agent, "evil", {"app": app})
            assert response.status_code == 422, (agent.name, app, response.text)
            error = response.json()["error"]
            assert error["message"].startswith("app: ") and OUTSIDE in error["message"], error
            assert error["type"] and error["request_id"], error
    # A module only the agents' working directory holds (this repository, when tests run from it)
    # is not their Python environment.
    module = put(mesh.agents[2], "evil", {"app": "tests.integration.serving_apps:Probe"})
    assert module.status_code == 422, module.text
    message = module.json()["error"]["message"]
    assert "working directory" in message or "no module named 'tests'" in message, message
    # Declared after the refusals, on the node with the least rights: once every node knows this one
    # and it serves, each has had its chance to place the refused one too, had it been gossiped.
    assert put(mesh.agents[0], "control", {"app": f"{files.apps}/marker_app.py:Marker"}).status_code == 201
    wait_for(
        lambda: all(ready_on(agent, "control") for agent in mesh.agents),
        READY_TIMEOUT_S,
        interval=0.2,
        message=lambda: str(view(mesh.agents[0], "control")),
    )
    assert [agent.get("/v1/deployments/evil").status_code for agent in mesh.agents] == [404] * 3
    assert files.marked("evil") == set()
    undeploy(mesh, "control")


def test_a_file_app_is_placed_only_on_nodes_whose_app_folders_hold_it(mesh: Mesh, files: Files) -> None:
    n0, n1, n2 = mesh.agents
    # A name whose best host is n1, the node without the folder: placement must pass it over.
    name = next(n for n in (f"only-there-{i}" for i in range(200)) if ranking(n0, n)[0] == n1.name)
    spec = {"app": f"{files.apps}/marker_app.py:Marker", "min_replicas": 2, "max_replicas": 2}
    assert put(n0, name, spec).status_code == 201

    def sat_out(agent: AgentProcess) -> dict[str, Any]:
        return next((r for r in view(agent, name).get("replicas", []) if r["node"] == n1.name), {})

    wait_for(
        lambda: ready_on(n1, name) == {n0.name, n2.name} and sat_out(n1).get("status") == "failed",
        READY_TIMEOUT_S,
        interval=0.2,
        message=lambda: str(view(n1, name)),
    )
    refused = sat_out(n0)  # as gossiped to the others
    assert refused["status"] == "failed" and refused["error"].startswith("cannot run here:"), refused
    assert OUTSIDE in refused["error"], refused
    answer = httpx.post(f"{n1.url}/v1/predict/{name}", json={}, timeout=30)
    assert answer.status_code == 200 and answer.json()["agent"] in {n0.pid, n2.pid}, answer.text
    # More replicas than nodes that may run it: the view says why.
    assert put(n2, name, {**spec, "min_replicas": 3, "max_replicas": 3}).status_code == 200
    wait_for(
        lambda: "it may not run the app there" in (view(n0, name).get("unschedulable") or ""),
        30,
        interval=0.2,
        message=lambda: str(view(n0, name)),
    )
    assert files.marked("app") == {f"app-{n0.pid}", f"app-{n2.pid}"}
    undeploy(mesh, name)


def test_a_config_yaml_app_runs_only_where_external_apps_are_allowed(mesh: Mesh, files: Files) -> None:
    n0, n1, n2 = mesh.agents
    folder = str(files.apps / "ext")
    for agent in (n0, n1):  # n0 has the folder but not the flag
        response = put(agent, "ext", {"app": folder})
        assert response.status_code == 422, (agent.name, response.text)
        assert "--allow-external-apps" in response.json()["error"]["message"], response.text
    assert n0.get("/v1/deployments/ext").status_code == 404
    assert put(n2, "ext", {"app": folder}).status_code == 201

    def answer() -> httpx.Response:
        return httpx.post(f"{n1.url}/v1/predict/ext", json={"a": 1}, timeout=30)

    wait_for(
        lambda: answer().status_code == 200, READY_TIMEOUT_S, interval=0.5, message=lambda: answer().text
    )
    assert answer().json() == {"external": {"a": 1}}
    # n0 learns of n2's ready replica by gossip, which may trail n1's first answer on a busy machine.
    wait_for(lambda: ready_on(n0, "ext") == {n2.name}, 30, interval=0.2, message=lambda: str(view(n0, "ext")))
    assert not running(n0, "ext") and not running(n1, "ext")
    undeploy(mesh, "ext")
