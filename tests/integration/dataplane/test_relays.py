"""A node nobody can dial joins, serves and is served through relays (docs/edge.md), on 127.0.0.1.

Real agents on loopback. ``edge`` advertises a mesh and a data address where nothing listens (as a
laptop behind NAT advertises its private address): every connection to it must be one it opened.
(The edge is the last agent, named like the others by its index.) It can dial out, so it joins
by seed as any node does, learns that nobody can dial it, takes two of the other nodes as relays,
and hosts the only replicas of ``echo``, ``stream`` and ``png``. The namespace test
(``tests/netns/test_netns_nat.py``) runs the same behind a real masquerading router.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.agents import AgentProcess, Mesh, free_port, wait_for

APPS = Path(__file__).parents[1] / "serving_apps.py"
EDGE_APPS = [
    *("--deploy", "echo=meshnode.apps.echo:Echo"),
    *("--deploy", "stream=meshnode.apps.stream:Stream"),
    *("--deploy", f"png={APPS}:PngMaker"),
    *("--deploy", f"probe={APPS}:Probe"),
]
# The local profile learns reach in about a second and forms in a few; the rest is a busy machine.
SETTLE_TIMEOUT_S = 60.0
DEAD_TIMEOUT_S = 30.0
WATCH_S = 10.0


def edge_args() -> list[str]:
    """The edge's join arguments: its replicas, and advertised addresses nobody listens on."""
    unreachable = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    return [*EDGE_APPS, "--advertise-mesh", unreachable[0], "--advertise-data", unreachable[1]]


def start(workdir: Path, direct: int, relay_count: int = 2) -> Mesh:
    """`direct` dialable agents (n0 the seed) and the edge last, formed, the edge relayed and serving."""
    args = [*edge_args(), "--set", f"relay_count={relay_count}"]
    mesh = Mesh(workdir, direct + 1, extra_args={direct: args})
    mesh.__enter__()
    try:
        mesh.wait_formed()
        wait_for(
            lambda: (
                all(relayed(agent, mesh, relay_count) for agent in mesh.agents)
                and all(serving(agent, mesh) for agent in mesh.agents)
            ),
            SETTLE_TIMEOUT_S,
            message=lambda: describe(mesh),
        )
    except BaseException:
        mesh.stop()
        raise
    return mesh


def edge_entry(observer: AgentProcess, mesh: Mesh) -> dict[str, object]:
    return next(m for m in observer.view()["members"] if m["id"] == mesh.agents[-1].node_id)


def relayed(observer: AgentProcess, mesh: Mesh, count: int = 2) -> bool:
    entry = edge_entry(observer, mesh)
    return entry["status"] == "alive" and entry["reach"] == "relayed" and len(entry["relays"]) == count  # type: ignore[arg-type]


def serving(observer: AgentProcess, mesh: Mesh) -> bool:
    replicas = edge_entry(observer, mesh)["replicas"]
    return all(replicas.get(name, {}).get("state") == "ready" for name in ("echo", "stream", "png", "probe"))  # type: ignore[attr-defined]


def describe(mesh: Mesh) -> str:
    views = {agent.name: [(m["name"], m["status"], m["reach"], m["relays"]) for m in agent.view()["members"]]
             for agent in mesh.agents if agent.running}  # fmt: skip
    return f"{json.dumps(views, indent=1)}\n{mesh.describe()}"


def post(agent: AgentProcess, deployment: str, body: object, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{agent.url}/v1/predict/{deployment}", json=body, timeout=30.0, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    started = start(tmp_path_factory.mktemp("relays"), direct=2)
    try:
        yield started
    finally:
        started.stop()


def test_the_edge_learns_nobody_can_dial_it_and_every_node_knows_its_relays(mesh: Mesh) -> None:
    n0, n1, edge = mesh.agents
    for observer in mesh.agents:
        members = {m["name"]: m for m in observer.view()["members"]}
        assert (members["n0"]["reach"], members["n1"]["reach"]) == ("direct", "direct")
        assert members[edge.name]["reach"] == "relayed"
        assert sorted(members[edge.name]["relays"]) == sorted([n0.node_id, n1.node_id])
        # Its advertised address stays what it said: peers reach it another way, not another address.
        assert members[edge.name]["mesh"] == edge_entry(edge, mesh)["mesh"]


def test_requests_entering_any_node_are_served_by_the_edge_with_one_hop_at_most(mesh: Mesh) -> None:
    for entry in mesh.agents:
        for i in range(10):
            response = post(entry, "echo", {"text": f"{entry.name}-{i}"})
            assert response.status_code == 200, response.text
            assert response.json() == {"echo": {"text": f"{entry.name}-{i}"}}
            route = response.headers["X-Mesh-Route"].split(",")
            assert route[0] == entry.name and route[-1] == mesh.agents[-1].name
            assert len(route) <= 2, route  # the entry is itself one of the edge's two relays


def test_a_stream_and_a_file_cross_the_relay(mesh: Mesh) -> None:
    entry = mesh.agents[0]
    arrivals = []
    body = {"text": "relay", "interval_s": 0.2, "stream": True}
    with httpx.stream("POST", f"{entry.url}/v1/predict/stream", json=body, timeout=30.0,
                      headers={"Accept": "text/event-stream"}) as response:  # fmt: skip
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: ") and "relay" in line:  # the pieces (then the end event)
                arrivals.append((time.monotonic(), line[6:]))
    assert [text for _, text in arrivals] == [f"Answer for relay is: {i}" for i in range(1, 6)]
    assert arrivals[-1][0] - arrivals[0][0] > 0.4  # streamed piece by piece, not held to the end
    png = post(entry, "png", {"seed": 3, "size": 300, "noise": True}, headers={"Accept": "image/png"})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG") and len(png.content) > 90_000  # several frames' worth


def test_a_client_going_away_cancels_the_stream_on_the_edge(mesh: Mesh, tmp_path: Path) -> None:
    marker = tmp_path / "cancelled"
    body = {"stream": True, "n": 50, "interval_s": 0.2, "cancelled_marker": str(marker)}
    with httpx.stream("POST", f"{mesh.agents[1].url}/v1/predict/probe", json=body, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["X-Mesh-Route"].split(",")[-1] == mesh.agents[-1].name
        next(response.iter_lines())  # the first chunk arrived; now hang up
    wait_for(marker.exists, 15, message=lambda: f"the edge's replica never saw the cancel\n{describe(mesh)}")


def test_the_edge_is_never_suspected_while_it_runs(mesh: Mesh) -> None:
    seen: set[tuple[str, str]] = set()
    deadline = time.monotonic() + WATCH_S
    while time.monotonic() < deadline:
        for observer in mesh.agents:
            seen.add((observer.name, str(edge_entry(observer, mesh)["status"])))
        time.sleep(0.25)  # sampling the view over a fixed window: there is no condition to wait for
    assert {status for _, status in seen} == {"alive"}, seen


@pytest.mark.parametrize("relay_count", [2, 1])
def test_killing_a_relay_loses_no_request_and_the_edge_takes_another(
    tmp_path: Path, relay_count: int
) -> None:
    # With one relay, requests that find it dead wait for the edge's next one (via_relays.py).
    mesh = start(tmp_path, direct=3, relay_count=relay_count)
    try:
        relays = set(edge_entry(mesh.agents[0], mesh)["relays"])  # type: ignore[arg-type]
        victim = next(agent for agent in mesh.agents[:3] if agent.node_id in relays)
        entries = [agent for agent in mesh.agents[:3] if agent is not victim]
        failures: list[str] = []
        served = itertools.count()
        stop = threading.Event()

        def load(entry: AgentProcess) -> None:
            for i in range(100_000):  # bounded; stopped by the event long before
                if stop.is_set():
                    return
                response = post(entry, "echo", {"text": str(i)})
                if response.status_code != 200:
                    failures.append(f"{entry.name}: {response.status_code} {response.text[:200]}")
                next(served)

        with concurrent.futures.ThreadPoolExecutor(len(entries)) as pool:
            running = [pool.submit(load, entry) for entry in entries]
            wait_for(lambda: next(served) > 20, 30.0)
            victim.kill()
            survivors = [a for a in mesh.agents if a is not victim]
            wait_for(
                lambda: (
                    victim.node_id not in edge_entry(mesh.agents[-1], mesh)["relays"]  # type: ignore[operator]
                    and all(relayed(agent, mesh, relay_count) for agent in survivors)
                ),
                DEAD_TIMEOUT_S,
                message=lambda: describe(mesh),
            )
            before = next(served)
            wait_for(lambda: next(served) > before + 20, 30.0)  # and it goes on serving
            stop.set()
            for future in running:
                future.result()
        assert failures == []
        for observer in survivors:
            assert edge_entry(observer, mesh)["status"] == "alive"
    finally:
        mesh.stop()


def test_a_killed_edge_is_seen_dead_by_every_node(tmp_path: Path) -> None:
    mesh = start(tmp_path, direct=2)
    try:
        edge = mesh.agents[-1]
        edge.kill()
        wait_for(
            lambda: all(edge_entry(agent, mesh)["status"] == "dead" for agent in mesh.agents[:-1]),
            DEAD_TIMEOUT_S,
            message=lambda: describe(mesh),
        )
    finally:
        mesh.stop()


def test_a_job_is_stored_on_the_edge_and_runs_there_through_its_relays(mesh: Mesh) -> None:
    entry, edge = mesh.agents[1], mesh.agents[-1]
    submitted = httpx.post(f"{entry.url}/v1/jobs/echo", json={"text": "queued"}, timeout=30.0)
    assert submitted.status_code == 202, submitted.text  # stored on all three, the edge included
    job_id = submitted.json()["id"]

    def status() -> dict[str, object]:
        return httpx.get(f"{entry.url}/v1/jobs/{job_id}", timeout=30.0).json()  # type: ignore[no-any-return]

    wait_for(lambda: status()["status"] == "completed", SETTLE_TIMEOUT_S, message=lambda: str(status()))
    # Whichever node runs the job (its rendezvous runner) calls the edge's replica, the only one.
    result = httpx.get(f"{entry.url}/v1/jobs/{job_id}/result", timeout=30.0)
    assert result.status_code == 200 and result.json() == {"echo": {"text": "queued"}}
    # The edge holds its own copy, written through its relays.
    held = httpx.get(f"{edge.url}/v1/jobs/{job_id}", timeout=30.0)
    assert held.status_code == 200 and held.json()["status"] == "completed"


def test_doctor_tells_the_edge_it_is_relayed_and_a_direct_node_that_it_is_dialed(mesh: Mesh) -> None:
    def doctor(agent: AgentProcess) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "meshnode", "doctor", "--node", agent.url]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    edge, direct = doctor(mesh.agents[-1]), doctor(mesh.agents[0])
    assert edge.returncode == 0 and direct.returncode == 0, edge.stdout + edge.stderr + direct.stdout
    relays = sorted(agent.name for agent in mesh.agents[:2])
    assert f"it is reached through {', '.join(relays)}" in edge.stdout, edge.stdout
    assert "peers can dial this node at" in direct.stdout, direct.stdout
