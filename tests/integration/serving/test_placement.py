"""Leaderless placement with real agents: declare once, every node places alike, replicas fail over.

Five agents on 127.0.0.1 share one mesh for the module. Each test declares its own deployment (its
own name, so tests do not see each other's replicas) through ``PUT /v1/deployments`` or the CLI, and
removes it at the end. The predictors are in ``serving_apps.py``, declared by file path, so every
agent that may host them is started with their folder as an ``--app-dir``.
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshnode import AsyncMeshClient, DeploymentNotFound, MeshClient, RequestRejected
from meshnode.mesh.placement import host_of, rank
from meshnode.mesh.types import NodeId
from tests.integration.agents import AgentProcess, Mesh, metric, wait_for

APPS = Path(__file__).parents[1] / "serving_apps.py"
PROBE = f"{APPS}:Probe"
# Where declared file apps may come from: without it a node refuses them (docs/apps.md).
APP_DIR = ("--app-dir", str(APPS.parent))
# Quick knobs for tests: decisions within seconds, not the production minutes.
FAST = {"window_s": 1.0, "scale_up_delay_s": 0.5, "scale_down_delay_s": 3.0, "idle_timeout_s": 3.0}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with Mesh(tmp_path_factory.mktemp("placement"), 5, extra_args=everywhere(5)) as started:
        started.wait_formed(timeout=60)
        yield started


def everywhere(size: int) -> dict[int, list[str]]:
    """``extra_args`` that give each of `size` agents the app folder."""
    return {index: list(APP_DIR) for index in range(size)}


def put(agent: AgentProcess, name: str, spec: object) -> httpx.Response:
    return httpx.put(f"{agent.url}/v1/deployments/{name}", json=spec, timeout=10)


def delete(agent: AgentProcess, name: str) -> httpx.Response:
    return httpx.delete(f"{agent.url}/v1/deployments/{name}", timeout=10)


def deployment(agent: AgentProcess, name: str) -> dict[str, Any]:
    response = agent.get(f"/v1/deployments/{name}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def post(agent: AgentProcess, name: str, body: object, timeout: float = 60.0) -> httpx.Response:
    headers = {"X-Request-Timeout": str(timeout)}
    return httpx.post(f"{agent.url}/v1/predict/{name}", json=body, timeout=timeout + 10, headers=headers)


def replicas_on(agent: AgentProcess, name: str, states: tuple[str, ...] = ("ready",)) -> set[str]:
    """Names of the nodes whose replica of `name` is in one of `states`, as `agent` sees them."""
    return {
        member["name"]
        for member in agent.view()["members"]
        if member["status"] == "alive" and member["replicas"].get(name, {}).get("state") in states
    }


def all_replicas(agent: AgentProcess, name: str) -> set[str]:
    return replicas_on(agent, name, ("starting", "ready", "draining", "standby"))


def ranking(agent: AgentProcess, name: str) -> list[str]:
    """Every live node, best host first, computed here from the node's own view."""
    members = [m for m in agent.view()["members"] if m["status"] == "alive"]
    names = {m["id"]: m["name"] for m in members}
    hosts = [host_of(NodeId(m["id"]), m["device"], m["region"], m["zone"]) for m in members]
    return [names[node] for node in rank(name, hosts)]


def wait_ready_on(agent: AgentProcess, name: str, count: int, timeout: float = 90.0) -> set[str]:
    wait_for(
        lambda: len(replicas_on(agent, name)) == count and len(all_replicas(agent, name)) == count,
        timeout,
        interval=0.2,
        message=lambda: f"{count} ready replicas of {name}: {deployment(agent, name)}",
    )
    return replicas_on(agent, name)


@pytest.fixture
def cleanup(mesh: Mesh) -> Iterator[list[str]]:
    """Names to undeploy after the test, whatever happened."""
    names: list[str] = []
    yield names
    entry = next(agent for agent in mesh.agents if agent.running)
    for name in names:
        delete(entry, name)
    for name in names:
        wait_for(
            lambda name=name: all(not all_replicas(a, name) for a in mesh.agents if a.running),  # type: ignore[misc]
            60,
            interval=0.2,
            message=f"{name}'s replicas to stop after undeploy",
        )


def test_two_replicas_land_on_the_top_two_of_the_ranking_and_nowhere_else(
    mesh: Mesh, cleanup: list[str]
) -> None:
    cleanup.append("pair")
    first, last = mesh.agents[0], mesh.agents[-1]
    response = put(first, "pair", {"app": PROBE, "min_replicas": 2, "max_replicas": 2})
    assert response.status_code == 201, response.text
    placed = wait_ready_on(last, "pair", 2)
    assert placed == set(ranking(last, "pair")[:2])
    # Every node computed the same answer: each one's view shows the same two, and says so.
    for agent in mesh.agents:
        view = deployment(agent, "pair")
        assert sorted(view["placement"]["hosts"]) == sorted(placed), view
        assert view["desired"] == 2 and view["unschedulable"] is None
    assert post(last, "pair", {"x": 1}).status_code == 200
    # Each node reports its own replica, so the sum over nodes is the mesh's count.
    ready = [metric(a, "meshnode_deployment_ready_replicas", "deployment")["pair"] for a in mesh.agents]
    assert sum(ready) == 2
    for agent in mesh.agents:
        started = metric(agent, "meshnode_placement_actions_total", "action")["start"]
        assert started >= (1 if agent.name in placed else 0), agent.name
    # A second PUT changes it (200, not 201) and takes effect everywhere.
    assert put(last, "pair", {"app": PROBE, "min_replicas": 1, "max_replicas": 1}).status_code == 200


def test_a_cuda_only_deployment_never_lands_on_a_cpu_node_and_says_why(
    mesh: Mesh, cleanup: list[str]
) -> None:
    cleanup.append("gpu-only")
    spec = {"app": PROBE, "resources": {"device_kinds": ["cuda"]}}
    assert put(mesh.agents[1], "gpu-only", spec).status_code == 201

    def reported() -> bool:
        response = mesh.agents[3].get("/v1/deployments/gpu-only")  # 404 until gossip brings it
        reason = response.json().get("unschedulable") if response.status_code == 200 else None
        return isinstance(reason, str) and "cuda" in reason and "5 node(s)" in reason

    wait_for(reported, 30, interval=0.2, message=lambda: mesh.agents[3].get("/v1/deployments/gpu-only").text)
    assert not any(all_replicas(agent, "gpu-only") for agent in mesh.agents)
    started = time.monotonic()
    response = post(mesh.agents[2], "gpu-only", {"x": 1}, timeout=30)
    assert response.status_code == 503 and "unschedulable" in response.json()["error"]["message"]
    assert time.monotonic() - started < 10  # refused at once, not held until the deadline
    listed = subprocess.run(
        [sys.executable, "-m", "meshnode", "deployments", "--node", mesh.agents[2].url],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "gpu-only" in listed and "cuda" in listed


def test_scaled_to_zero_a_request_waits_for_the_cold_start_and_succeeds(
    mesh: Mesh, cleanup: list[str]
) -> None:
    cleanup.append("sleepy")
    spec = {"app": PROBE, "min_replicas": 0, "max_replicas": 1, "autoscaling": FAST}
    assert put(mesh.agents[0], "sleepy", spec).status_code == 201
    entry = mesh.agents[4]
    assert not any(all_replicas(agent, "sleepy") for agent in mesh.agents)
    # Sent to another node at once, as a client would: it may not have heard of "sleepy" yet, and
    # waits for the declaration by gossip, then for the cold start.
    response = post(entry, "sleepy", {"x": 1}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["echo"] == {"x": 1}
    # Idle past idle_timeout_s: back to zero, everywhere.
    wait_for(
        lambda: not any(all_replicas(agent, "sleepy") for agent in mesh.agents),
        60,
        interval=0.2,
        message=lambda: str(deployment(entry, "sleepy")),
    )


def test_load_scales_up_to_max_and_quiet_scales_down_after_the_delay_without_failures(
    mesh: Mesh, cleanup: list[str]
) -> None:
    cleanup.append("elastic")
    spec = {
        "app": PROBE,
        "min_replicas": 1,
        "max_replicas": 3,
        "autoscaling": {**FAST, "target_concurrency": 1},
    }
    assert put(mesh.agents[0], "elastic", spec).status_code == 201
    observer = mesh.agents[1]
    wait_ready_on(observer, "elastic", 1)
    failures: list[str] = []

    def traffic(stop: threading.Event, body: dict[str, Any], offset: int) -> None:
        """Requests through every node in turn until `stop` (and at most 2000 of them)."""
        for sent in range(2000):
            if stop.is_set():
                return
            response = post(mesh.agents[(sent + offset) % len(mesh.agents)], "elastic", body)
            if response.status_code != 200:
                failures.append(f"{response.status_code} {response.text[:200]}")

    heavy, light = threading.Event(), threading.Event()
    with concurrent.futures.ThreadPoolExecutor(7) as pool:
        # Six clients each keeping a 0.5 s request in flight: concurrency 6 against a target of 1.
        loads = [pool.submit(traffic, heavy, {"do": "sleep", "s": 0.5}, i) for i in range(6)]
        try:
            wait_ready_on(observer, "elastic", 3, timeout=120)
            assert deployment(observer, "elastic")["desired"] == 3
        finally:
            heavy.set()
        for future in loads:
            future.result(timeout=60)
        quiet_since = time.monotonic()
        # Quiet but for a trickle of quick requests that must all succeed while replicas drain.
        trickle = pool.submit(traffic, light, {"x": 1}, 0)
        try:
            wait_for(
                lambda: len(all_replicas(observer, "elastic")) == 1, 120, interval=0.2, message="scale down"
            )
        finally:
            light.set()
        trickle.result(timeout=60)
    assert time.monotonic() - quiet_since >= FAST["scale_down_delay_s"]
    assert failures == []


def test_sigkill_a_host_and_the_next_in_rank_starts_a_replacement_that_serves(
    tmp_path: Path,
) -> None:
    with Mesh(tmp_path, 4, extra_args=everywhere(4)) as small:
        small.wait_formed(timeout=60)
        entry = small.agents[0]
        assert put(entry, "sturdy", {"app": PROBE, "min_replicas": 2, "max_replicas": 2}).status_code == 201
        before = wait_ready_on(entry, "sturdy", 2)
        order = ranking(entry, "sturdy")
        victim_name = next(name for name in order[:2] if name != entry.name)
        victim = next(agent for agent in small.agents if agent.name == victim_name)
        observer = (
            next(agent for agent in small.agents if agent.name not in before) if len(before) < 4 else entry
        )
        victim.kill()
        wait_for(lambda: observer.statuses().get(victim.node_id) == "dead", 30, message="the kill to be seen")
        after = wait_ready_on(observer, "sturdy", 2, timeout=60)
        assert victim_name not in after
        survivors = [name for name in order if name != victim_name]
        assert after == set(survivors[:2])
        response = post(observer, "sturdy", {"x": 2})
        assert response.status_code == 200, response.text


def test_a_restarted_node_restores_its_deployments_before_hearing_from_anyone(tmp_path: Path) -> None:
    alone = AgentProcess("solo", tmp_path, mesh_id="restore-test", extra_args=APP_DIR)
    alone.start()
    try:
        alone.wait_ready()
        assert put(alone, "kept", {"app": PROBE, "min_replicas": 1}).status_code == 201
        assert put(alone, "dropped", {"app": PROBE, "min_replicas": 1}).status_code == 201
        assert delete(alone, "dropped").status_code == 200
        assert alone.terminate() == 0
        alone.restart()
        alone.wait_ready()
        names = {d["name"] for d in alone.get("/v1/deployments").json()["deployments"]}
        assert names == {"kept"}
        wait_ready_on(alone, "kept", 1)
        assert post(alone, "kept", {"x": 3}).status_code == 200
    finally:
        alone.stop_all()


def test_bad_specs_get_422_naming_the_field_and_unknown_names_404(mesh: Mesh) -> None:
    entry = mesh.agents[2]
    cases = [
        ({"app": PROBE, "min_replicas": 3, "max_replicas": 1}, "max_replicas"),
        ({"app": PROBE, "resources": {"device_kinds": ["tpu"]}}, "resources.device_kinds"),
        ({"app": PROBE, "autoscaling": {"window_s": -1}}, "autoscaling.window_s"),
        ({"min_replicas": 1}, "app"),
        ({"app": "file.py"}, "app"),
        ([1, 2], "spec"),
    ]
    for spec, field in cases:
        response = put(entry, "bad", spec)
        assert response.status_code == 422, (spec, response.text)
        assert response.json()["error"]["message"].startswith(f"{field}:"), response.text
    assert put(entry, "bad name", {"app": PROBE}).status_code == 422
    not_json = httpx.put(f"{entry.url}/v1/deployments/bad", content=b"{", timeout=10)
    assert not_json.status_code == 400
    too_big = put(entry, "bad", {"app": PROBE, "padding": "x" * 70_000})
    assert too_big.status_code == 413, too_big.text
    assert delete(entry, "never-declared").status_code == 404
    assert entry.get("/v1/deployments/never-declared").status_code == 404
    assert entry.get("/v1/deployments/bad").status_code == 404  # nothing was declared


def test_the_cli_deploys_lists_and_undeploys(mesh: Mesh) -> None:
    node = ["--node", mesh.agents[3].url]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "meshnode", *args], capture_output=True, text=True, timeout=30
        )

    made = cli(
        "deploy", "via-cli", PROBE, "--min-replicas", "1", "--max-replicas", "2", "--backups", "1", *node
    )
    assert made.returncode == 0, made.stderr
    assert "declared via-cli" in made.stdout
    observer = mesh.agents[0]
    wait_for(
        lambda: (
            len(replicas_on(observer, "via-cli")) == 1
            and len(replicas_on(observer, "via-cli", ("standby",))) == 1
        ),
        90,
        interval=0.2,
        message=lambda: f"one ready replica and one warm backup: {deployment(observer, 'via-cli')}",
    )
    listed = cli("deployments", *node)
    assert "via-cli" in listed.stdout and "standby" in listed.stdout, listed.stdout
    refused = cli("deploy", "via-cli", PROBE, "--min-replicas", "3", "--max-replicas", "2", *node)
    assert refused.returncode == 1 and "max_replicas" in refused.stderr
    assert cli("undeploy", "via-cli", *node).returncode == 0
    wait_for(lambda: not any(all_replicas(a, "via-cli") for a in mesh.agents), 60, message="undeploy")
    assert cli("undeploy", "via-cli", *node).returncode == 1


def test_a_replica_that_cannot_start_moves_on_and_is_finally_reported_with_its_error(
    mesh: Mesh, cleanup: list[str]
) -> None:
    cleanup.append("broken")
    # A module this node's environment lacks is refused at once; one that exists but lacks the class
    # passes the check (nothing is imported for it) and fails where it is loaded.
    missing = put(mesh.agents[0], "broken", {"app": "meshnode.apps.no_such_app:Nope"})
    assert missing.status_code == 422 and "no_such_app" in missing.json()["error"]["message"]
    assert put(mesh.agents[0], "broken", {"app": "meshnode.apps.echo:NoSuchApp"}).status_code == 201
    observer = mesh.agents[2]

    def view() -> dict[str, Any]:
        response = observer.get("/v1/deployments/broken")
        return response.json() if response.status_code == 200 else {}

    # Each node gives up after its setup failed a few times; the next in rank tries, until none is left.
    wait_for(
        lambda: "failed to start" in (view().get("unschedulable") or ""),
        180,
        interval=0.5,
        message=lambda: str(view()),
    )
    final = view()
    assert "NoSuchApp" in final["missing"], final
    assert {r["status"] for r in final["replicas"]} == {"failed"} and len(final["replicas"]) == 5, final
    started = time.monotonic()
    response = post(mesh.agents[4], "broken", {"x": 1}, timeout=30)
    assert response.status_code == 503 and "failed to start" in response.json()["error"]["message"]
    assert time.monotonic() - started < 10


def test_a_pinned_replica_declares_its_deployment_and_counts_toward_an_explicit_one(tmp_path: Path) -> None:
    # The pinner needs no --app-dir: --deploy of a file makes its folder one on that node.
    pinning = {0: ["--deploy", f"edge={PROBE}"], 1: list(APP_DIR), 2: list(APP_DIR)}
    with Mesh(tmp_path, 3, extra_args=pinning) as small:
        small.wait_formed(timeout=60)
        pinner, other = small.agents[0], small.agents[2]

        def edge() -> dict[str, Any]:
            response = other.get("/v1/deployments/edge")
            return response.json() if response.status_code == 200 else {}

        wait_for(lambda: edge().get("ready") == 1, 60, interval=0.2, message=lambda: str(edge()))
        implicit = edge()
        assert implicit["implicit"] is True and implicit["max_replicas"] == 0, implicit
        assert implicit["replicas"] == [{"node": pinner.name, "status": "ready", "pinned": True}]
        # A deliberate declaration wins over the implicit one; the pinned replica counts toward it.
        assert put(other, "edge", {"app": PROBE, "min_replicas": 2, "max_replicas": 2}).status_code == 201
        wait_for(lambda: edge().get("ready") == 2, 60, interval=0.2, message=lambda: str(edge()))
        declared = edge()
        assert declared["implicit"] is False and pinner.name in declared["placement"]["hosts"], declared
        # Removed mesh-wide, the placed replica stops; the pinned one is its node's and stays.
        assert delete(other, "edge").status_code == 200
        wait_for(
            lambda: all_replicas(other, "edge") == {pinner.name},
            60,
            interval=0.2,
            message=lambda: str(other.view()),
        )
        assert post(other, "edge", {"x": 1}).status_code == 200


def test_the_python_client_declares_lists_and_removes_deployments(mesh: Mesh) -> None:
    # The first node is down: the client passes the call to the next one.
    nodes = ["127.0.0.1:1", *(agent.url for agent in mesh.agents[:2])]
    with MeshClient(nodes, prefer_first=True, connect_timeout_s=1) as client:
        view = client.deploy("from-client", PROBE, min_replicas=1, autoscaling={"target_concurrency": 4})
        assert view["name"] == "from-client" and view["spec"]["autoscaling"]["target_concurrency"] == 4
        with pytest.raises(RequestRejected) as refused:
            client.deploy("from-client", PROBE, min_replicas=2, max_replicas=1)
        assert refused.value.status == 422 and refused.value.message.startswith("max_replicas:")
        wait_for(lambda: client.predict("from-client", {"x": 5})["echo"] == {"x": 5}, 60, interval=0.2)
        assert "from-client" in {d["name"] for d in client.deployments()}
        client.undeploy("from-client")
        with pytest.raises(DeploymentNotFound):
            client.undeploy("from-client")


async def test_the_async_client_declares_and_removes_deployments(mesh: Mesh) -> None:
    async with AsyncMeshClient([mesh.agents[3].url]) as client:
        view = await client.deploy("from-async", PROBE, backups=1)
        assert view["spec"]["backups"] == 1
        assert "from-async" in {d["name"] for d in await client.deployments()}
        await client.undeploy("from-async")
        assert "from-async" not in {d["name"] for d in await client.deployments()}


def test_spread_places_replicas_in_distinct_zones(tmp_path: Path) -> None:
    zones = {i: [*APP_DIR, "--zone", f"zone-{i % 2}", "--region", "lab"] for i in range(4)}
    with Mesh(tmp_path, 4, extra_args=zones) as small:
        small.wait_formed(timeout=60)
        entry = small.agents[0]

        def zone(node_name: str) -> int:
            return int(node_name.removeprefix("n")) % 2

        # Names whose two best-ranked nodes share a zone: without spread they would land there.
        crowded = [
            name
            for name in (f"spread-{index}" for index in range(40))
            if len({zone(node) for node in ranking(entry, name)[:2]}) == 1
        ][:2]
        assert len(crowded) == 2
        for name in crowded:
            assert put(entry, name, {"app": PROBE, "min_replicas": 2, "spread": "zone"}).status_code == 201
        for name in crowded:
            placed = wait_ready_on(entry, name, 2)
            assert {zone(node) for node in placed} == {0, 1}, (name, placed, ranking(entry, name))
