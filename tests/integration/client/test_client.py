"""The Python client against real agents: mDNS discovery, failover, streams, files, errors, timeouts.

Two agents on 127.0.0.1 find each other by mDNS; each hosts its own replica of every deployment, so
either can answer any request. The client finds them by mDNS as a user on a LAN would.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshnode import (
    AsyncMeshClient,
    ClientError,
    DeploymentNotFound,
    GatewayTimeout,
    MeshClient,
    NoNodeAvailable,
    RequestRejected,
    RequestTimeout,
    StreamBroken,
)
from meshnode.client.answers import Result
from tests.integration.agents import HOST, AgentProcess, Mesh, wait_for

APPS = Path(__file__).parents[1] / "serving_apps.py"
DEPLOY = [
    *("--deploy", "echo=meshnode.apps.echo:Echo"),
    *("--deploy", "stream=meshnode.apps.stream:Stream"),
    *("--deploy", f"png={APPS}:PngMaker"),
    *("--deploy", f"probe={APPS}:Probe"),
]
PIECES = [f"Answer for life is: {i}" for i in range(1, 6)]
# Browsing always takes this long; announcements on loopback arrive well within it.
BROWSE_S = 3.0
# Replica workers of four apps on two agents start side by side on two shared cores.
SERVING_TIMEOUT_S = 90.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def serves(agent: AgentProcess, deployments: set[str]) -> bool:
    """Whether the agent gossips every one of ``deployments`` as ready on itself."""
    agent.check_running()
    return deployments <= set(agent.members()[agent.node_id]["models"])


@contextlib.contextmanager
def serving_mesh(workdir: Path, deploy: list[str]) -> Iterator[Mesh]:
    """Two mDNS agents, each with a replica of every deployment, once both serve them all."""
    with Mesh(workdir, 2, mdns=True, seeded=False, extra_args={0: deploy, 1: deploy}) as mesh:
        mesh.wait_formed(timeout=60)
        names = {arg.split("=")[0] for arg in deploy if "=" in arg}
        for agent in mesh.agents:
            wait_for(
                lambda agent=agent: serves(agent, names),
                SERVING_TIMEOUT_S,
                interval=0.2,
                message=lambda: f"replicas to be ready\n{mesh.describe()}",
            )
        yield mesh


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with serving_mesh(tmp_path_factory.mktemp("client"), DEPLOY) as started:
        yield started


@pytest.fixture
def client(mesh: Mesh) -> Iterator[MeshClient]:
    with MeshClient([agent.url for agent in mesh.agents], timeout=30) as made:
        yield made


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def test_discover_finds_both_agents_by_mdns_and_predicts(mesh: Mesh) -> None:
    urls = {agent.url for agent in mesh.agents}
    with MeshClient.discover([HOST], mesh_id=mesh.mesh_id, timeout_s=BROWSE_S) as client:
        assert set(client.seeds) == urls
        result = client.call("echo", {"text": "hello"})
        assert result.data == {"echo": {"text": "hello"}}
        assert result.node in urls
        assert result.route and set(result.route) <= {agent.name for agent in mesh.agents}
        assert result.request_id
        # The first request also learned the mesh from /v1/mesh.
        assert set(client.nodes) == urls
        assert client.last_node == result.node


def test_discover_of_an_unknown_mesh_finds_no_node() -> None:
    with pytest.raises(NoNodeAvailable, match="no node of mesh"):
        MeshClient.discover([HOST], mesh_id="no-such-mesh", timeout_s=0.5)


def assert_says_what_was_tried(exc: BaseException, browse_s: float) -> None:
    """A NoNodeAvailable of its own: where and how long mDNS browsed, and what to do instead."""
    message = str(exc)
    assert f"mDNS on {HOST} within {browse_s:g} s" in message, message
    assert "MeshClient([" in message and "--node URL" in message and "seed" in message, message
    # Nothing unrelated chained: a traceback shows this error alone.
    assert exc.__cause__ is None and exc.__context__ is None, repr(exc.__context__)


def test_discover_with_no_node_answering_says_what_was_tried_and_chains_nothing() -> None:
    lonely = f"no-such-mesh-{uuid.uuid4().hex[:8]}"  # other tests' agents on 127.0.0.1 stay out
    with pytest.raises(NoNodeAvailable) as raised:
        MeshClient.discover([HOST], mesh_id=lonely, timeout_s=0.5)
    assert_says_what_was_tried(raised.value, 0.5)

    async def discover() -> None:
        await AsyncMeshClient.discover([HOST], mesh_id=lonely, timeout_s=0.5)

    with pytest.raises(NoNodeAvailable) as raised:
        asyncio.run(discover())
    assert_says_what_was_tried(raised.value, 0.5)


def test_client_fails_over_when_the_node_it_talks_to_is_killed(tmp_path: Path) -> None:
    results: list[Result] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    with (
        serving_mesh(tmp_path, ["--deploy", "echo=meshnode.apps.echo:Echo"]) as mesh,
        MeshClient.discover([HOST], mesh_id=mesh.mesh_id, timeout_s=BROWSE_S, timeout=20) as client,
    ):

        def keep_asking() -> None:
            deadline = time.monotonic() + 120  # bounded even if the test body fails to stop it
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    results.append(client.call("echo", {"i": len(results), "delay_s": 0.02}))
                except ClientError as exc:
                    errors.append(exc)
                    return

        worker = threading.Thread(target=keep_asking, name="client-load")
        worker.start()
        try:
            wait_for(lambda: len(results) >= 10 or errors, 30, message="requests before the kill")
            victim = next(agent for agent in mesh.agents if agent.url == results[-1].node)
            survivor = next(agent for agent in mesh.agents if agent is not victim)
            before = len(results)
            victim.kill()
            wait_for(
                lambda: len(results) >= before + 30 or errors,
                60,
                message=lambda: f"requests after the kill: {len(results) - before}, errors {errors}",
            )
        finally:
            stop.set()
            worker.join(timeout=60)
    assert not worker.is_alive()
    assert not errors, errors
    assert [result.data["echo"]["i"] for result in results] == list(range(len(results)))
    # Everything after the kill went to the survivor (the request in flight may have won the race).
    assert {result.node for result in results[before + 1 :]} == {survivor.url}


def test_stream_yields_chunks_as_they_arrive(client: MeshClient) -> None:
    arrivals: list[tuple[float, str]] = []
    with client.stream("stream", {"text": "life", "interval_s": 0.4}) as chunks:
        assert chunks.route and chunks.request_id
        for chunk in chunks:
            arrivals.append((time.monotonic(), chunk))
    assert [chunk for _, chunk in arrivals] == PIECES
    # The first piece came long before the last was written (4 intervals of 0.4 s).
    assert arrivals[-1][0] - arrivals[0][0] > 1.0


def test_a_deployment_that_does_not_stream_answers_a_stream_in_one_chunk(client: MeshClient) -> None:
    with client.stream("echo", {"text": "all at once"}) as chunks:
        assert list(chunks) == [{"echo": {"text": "all at once", "stream": True}}]


def test_a_stream_that_breaks_raises_stream_broken_after_its_chunks(client: MeshClient) -> None:
    received = []
    with (
        pytest.raises(StreamBroken, match="stream broke") as caught,
        client.stream("probe", {"n": 3, "interval_s": 0.05, "fail_at": 1}) as chunks,
    ):
        for chunk in chunks:
            received.append(chunk)
    assert received == [{"i": 0}]
    assert caught.value.kind == "predictor"
    assert caught.value.request_id == chunks.request_id


def test_download_returns_and_writes_the_file(client: MeshClient, tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    content = client.download("png", {"seed": 3}, path=target)
    assert content.startswith(PNG_MAGIC)
    assert target.read_bytes() == content
    assert [path.name for path in tmp_path.iterdir()] == ["out.png"]  # no partial file left behind
    assert client.download("png", {"seed": 3}) == content


@pytest.mark.parametrize(
    ("deployment", "body", "error_type", "status"),
    [
        ("nope", {}, DeploymentNotFound, 404),
        ("echo", {"delay_s": "soon"}, RequestRejected, 422),
        ("echo", {"delay_s": 2}, GatewayTimeout, 504),
    ],
)
def test_errors_map_to_their_types(
    client: MeshClient, deployment: str, body: dict[str, object], error_type: type[ClientError], status: int
) -> None:
    with pytest.raises(error_type) as caught:
        client.predict(deployment, body, timeout=1.0, request_id=f"client-test-{status}")
    error = caught.value
    assert getattr(error, "status", None) == status
    assert getattr(error, "request_id", None) == f"client-test-{status}"
    assert getattr(error, "message", "")


def test_a_node_that_never_answers_costs_the_deadline_then_is_skipped(mesh: Mesh) -> None:
    with socket.socket() as hung:
        # Accepts connections (the kernel does) and never answers: a stopped or wedged process.
        hung.bind((HOST, 0))
        hung.listen(16)
        hung_url = f"http://{HOST}:{hung.getsockname()[1]}"
        with MeshClient([hung_url], timeout=1.0) as alone:
            started = time.monotonic()
            with pytest.raises(RequestTimeout):
                alone.predict("echo", {})
            assert time.monotonic() - started < 1.0 + alone.options.deadline_grace_s + 2.0
        with MeshClient([hung_url, mesh.agents[0].url], timeout=10.0) as client:
            assert client.predict("echo", {"x": 1}) == {"echo": {"x": 1}}
            assert client.last_node in {agent.url for agent in mesh.agents}


def test_no_reachable_node_is_no_node_available() -> None:
    with MeshClient([f"{HOST}:{closed_port()}", f"{HOST}:{closed_port()}"], timeout=5) as client:
        started = time.monotonic()
        with pytest.raises(NoNodeAvailable, match="no node answered"):
            client.predict("echo", {})
        assert time.monotonic() - started < 3.0  # refused at once: no waiting out the timeout


async def test_async_client_discovers_predicts_streams_and_downloads(mesh: Mesh) -> None:
    discovered = await AsyncMeshClient.discover([HOST], mesh_id=mesh.mesh_id, timeout_s=BROWSE_S)
    async with discovered as client:
        assert await client.predict("echo", {"a": 1}) == {"echo": {"a": 1}}
        arrivals: list[tuple[float, str]] = []
        async with await client.stream("stream", {"text": "life", "interval_s": 0.3}) as chunks:
            async for chunk in chunks:
                arrivals.append((time.monotonic(), chunk))
        assert [chunk for _, chunk in arrivals] == PIECES
        assert arrivals[-1][0] - arrivals[0][0] > 0.8
        assert (await client.download("png", {"seed": 1})).startswith(PNG_MAGIC)
        with pytest.raises(DeploymentNotFound):
            await client.predict("nope")
        assert set(await client.refresh()) == {agent.url for agent in mesh.agents}


def test_meshnode_predict_fails_over_between_nodes_and_discovers(mesh: Mesh) -> None:
    predict = [sys.executable, "-m", "meshnode", "predict"]
    dead = f"http://{HOST}:{closed_port()}"
    answer = subprocess.run(
        [*predict, "echo", '{"q": 1}', "--node", dead, "--node", mesh.agents[0].url, "--hint", "any"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip().startswith("{")
    assert '"q": 1' in answer.stdout
    assert "served by n" in answer.stderr
    discover = ["--discover", "--interface", HOST, "--mesh-id", mesh.mesh_id]
    streamed = subprocess.run(
        [*predict, "stream", '{"text": "life", "interval_s": 0.05}', "--stream", *discover],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout.splitlines() == PIECES
    missing = subprocess.run(
        [*predict, "nope", "--node", mesh.agents[1].url], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 1
    assert "Error: 404: " in missing.stderr and "Traceback" not in missing.stderr
    unreachable = subprocess.run(
        [*predict, "echo", "--node", dead], capture_output=True, text=True, timeout=60
    )
    assert unreachable.returncode == 1
    assert "no node answered" in unreachable.stderr and "Traceback" not in unreachable.stderr
