"""HTTPS on the HTTP port (``meshnode join --tls-cert --tls-key``) with real agents and real handshakes.

A private CA made in the test signs a certificate for 127.0.0.1. The mesh: ``n0`` serves HTTPS with
it and hosts ``echo``; ``n1`` joins it and serves plain HTTP, as in a mesh half-way through turning
TLS on. Both announce themselves by mDNS on 127.0.0.1. Checked: clients that trust the CA (Python,
asyncio, the command line, by argument or by ``$MESHNODE_CA_CERT``) get answers; clients that do not
get a one-line error that says so; plain HTTP to the TLS port gets nothing; the TLS flag travels in
gossip (``/v1/mesh`` on either node) and in mDNS; bad certificate files stop ``join`` with one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from meshnode import AsyncMeshClient, MeshClient, NoNodeAvailable
from meshnode.client.errors import TLSError
from meshnode.client.tls import CA_ENV
from tests.integration.agents import HOST, AgentProcess, Mesh, free_port, wait_for
from tests.integration.http.certs import Authority, ServerFiles

MESHNODE = [sys.executable, "-m", "meshnode"]
# One replica worker on two shared cores.
SERVING_TIMEOUT_S = 60.0
# Browsing always takes this long; announcements on loopback arrive well within it.
BROWSE_S = 3.0
# A command-line client: Python start-up plus one request.
COMMAND_TIMEOUT_S = 30.0
# A join that fails on its certificate exits before it binds or joins anything.
FAILED_JOIN_TIMEOUT_S = 30.0


class Certs:
    """The CA file, the node's certificate for 127.0.0.1, and a certificate from another CA."""

    def __init__(self, folder: Path) -> None:
        authority = Authority.create(folder / "ca")
        self.ca = authority.pem
        self.server: ServerFiles = authority.issue(folder / "ca", "node", [HOST])
        self.stranger: ServerFiles = Authority.create(folder / "other").issue(folder / "other", "x", [HOST])


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[Mesh]:
    tls = ["--tls-cert", str(certs.server.cert), "--tls-key", str(certs.server.key)]
    deploy = ["--deploy", "echo=meshnode.apps.echo:Echo"]
    workdir = tmp_path_factory.mktemp("tls-mesh")
    with Mesh(workdir, 2, mdns=True, extra_args={0: [*tls, *deploy]}, ca=certs.ca) as started:
        started.wait_formed(timeout=60)
        tls_node = started.agents[0]
        wait_for(
            lambda: "echo" in tls_node.members()[tls_node.node_id]["models"],
            SERVING_TIMEOUT_S,
            interval=0.2,
            message=lambda: f"echo to be ready\n{started.describe()}",
        )
        yield started


@pytest.fixture
def tls_node(mesh: Mesh) -> AgentProcess:
    return mesh.agents[0]


@pytest.fixture
def plain_node(mesh: Mesh) -> AgentProcess:
    return mesh.agents[1]


@pytest.fixture(autouse=True)
def no_ca_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test says which CA it trusts; a variable set where the tests run must not decide."""
    monkeypatch.delenv(CA_ENV, raising=False)


def meshnode(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a ``meshnode`` command to its end, without any CA from this environment unless given."""
    base = {key: value for key, value in os.environ.items() if key != CA_ENV}
    return subprocess.run(
        [*MESHNODE, *args],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        env={**base, **(env or {})},
    )


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("Error:")]


# -- the Python client -------------------------------------------------------------------------


def test_the_client_that_trusts_the_ca_learns_the_mesh_and_predicts(
    tls_node: AgentProcess, certs: Certs
) -> None:
    with MeshClient([tls_node.url], verify=certs.ca, timeout=20) as client:
        result = client.call("echo", {"text": "over tls"})
        assert result.data == {"echo": {"text": "over tls"}}
        assert result.node == f"https://{tls_node.http}"
        assert tls_node.name in result.route


async def test_the_asyncio_client_verifies_the_same_way(tls_node: AgentProcess, certs: Certs) -> None:
    async with AsyncMeshClient([tls_node.url], verify=str(certs.ca), timeout=20) as client:
        assert await client.predict("echo", {"n": 1}) == {"echo": {"n": 1}}


def test_the_ca_may_come_from_the_environment(
    tls_node: AgentProcess, certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CA_ENV, str(certs.ca))
    with MeshClient([tls_node.url], timeout=20) as client:
        assert client.predict("echo", {"env": True}) == {"echo": {"env": True}}


def test_without_the_ca_the_client_says_the_certificate_did_not_verify(tls_node: AgentProcess) -> None:
    with MeshClient([tls_node.url], timeout=20) as client, pytest.raises(TLSError) as caught:
        client.predict("echo", {})
    message = str(caught.value)
    assert tls_node.url in message
    assert "certificate did not verify" in message
    assert "\n" not in message
    assert not caught.value.retryable


def test_a_certificate_for_another_name_does_not_verify(tls_node: AgentProcess, certs: Certs) -> None:
    """The node's certificate names 127.0.0.1 only: reached as localhost, it must be refused."""
    port = tls_node.http.rpartition(":")[2]
    with (
        MeshClient([f"https://localhost:{port}"], verify=certs.ca, timeout=20) as client,
        pytest.raises(TLSError, match="certificate is not valid for 'localhost'"),
    ):
        client.predict("echo", {})


def test_plain_http_to_the_tls_port_gets_no_answer(tls_node: AgentProcess) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{tls_node.http}/health", timeout=5, trust_env=False)
    with (
        MeshClient([f"http://{tls_node.http}"], timeout=20) as client,
        pytest.raises(NoNodeAvailable, match="use an https:// URL"),
    ):
        client.predict("echo", {})


# -- the TLS flag in gossip and mDNS -------------------------------------------------------------


def test_both_nodes_views_say_which_member_serves_https(
    tls_node: AgentProcess, plain_node: AgentProcess
) -> None:
    for observer in (tls_node, plain_node):
        members = observer.members()
        assert members[tls_node.node_id]["tls"] is True
        assert members[plain_node.node_id]["tls"] is False
        # The address keeps its shape; the flag says the scheme.
        assert members[tls_node.node_id]["http"] == tls_node.http


def test_a_client_learns_https_urls_and_never_falls_back_to_plain_http(
    tls_node: AgentProcess, plain_node: AgentProcess, certs: Certs
) -> None:
    with MeshClient([plain_node.url], verify=certs.ca) as client:
        assert set(client.refresh()) == {f"https://{tls_node.http}", plain_node.url}
    # Over TLS the client keeps to TLS: the plain node would see its requests and keys in clear.
    with MeshClient([tls_node.url], verify=certs.ca) as client:
        assert client.refresh() == [f"https://{tls_node.http}"]


def test_mdns_announces_https_for_the_tls_node(
    mesh: Mesh, tls_node: AgentProcess, plain_node: AgentProcess, certs: Certs
) -> None:
    with MeshClient.discover([HOST], mesh_id=mesh.mesh_id, timeout_s=BROWSE_S, verify=certs.ca) as client:
        assert set(client.seeds) == {f"https://{tls_node.http}", plain_node.url}


# -- the command line ------------------------------------------------------------------------------


def test_peers_over_https_with_the_ca(tls_node: AgentProcess, plain_node: AgentProcess, certs: Certs) -> None:
    result = meshnode("peers", "--node", tls_node.url, "--ca-cert", str(certs.ca), "--json")
    assert result.returncode == 0, result.stderr
    names = {member["name"]: member["tls"] for member in json.loads(result.stdout)["members"]}
    assert names == {tls_node.name: True, plain_node.name: False}


def test_peers_without_the_ca_fails_in_one_line(tls_node: AgentProcess) -> None:
    result = meshnode("peers", "--node", tls_node.url)
    assert result.returncode == 1
    (line,) = error_lines(result)
    assert "certificate did not verify" in line and "--ca-cert" in line


def test_predict_and_deployments_over_https_with_the_ca_from_the_environment(
    tls_node: AgentProcess, certs: Certs
) -> None:
    env = {CA_ENV: str(certs.ca)}
    result = meshnode("predict", "echo", '{"text": "cli"}', "--node", tls_node.url, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"echo": {"text": "cli"}}
    listed = meshnode("deployments", "--json", "--node", tls_node.url, env=env)
    assert listed.returncode == 0, listed.stderr
    assert "echo" in {item["name"] for item in json.loads(listed.stdout)["deployments"]}


def test_predict_without_the_ca_fails_in_one_line(tls_node: AgentProcess) -> None:
    result = meshnode("predict", "echo", "--node", tls_node.url)
    assert result.returncode == 1
    (line,) = error_lines(result)
    assert "certificate did not verify" in line


def test_a_ca_file_that_is_not_one_is_refused_naming_the_flag(tls_node: AgentProcess, certs: Certs) -> None:
    result = meshnode("peers", "--node", tls_node.url, "--ca-cert", str(certs.server.key))
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "--ca-cert" in line and "no PEM CA certificate" in line


# -- bad certificate files stop `join` before it joins ----------------------------------------------


def failed_join(tmp_path: Path, *tls_args: str) -> subprocess.CompletedProcess[str]:
    http, gossip = f"{HOST}:{free_port()}", f"{HOST}:{free_port()}"
    command = ["join", "--name", "bad", "--profile", "local", "--no-mdns", "--http", http, "--mesh", gossip]
    command += ["--data-dir", str(tmp_path / "bad"), *tls_args]
    result = subprocess.run(
        [*MESHNODE, *command], capture_output=True, text=True, timeout=FAILED_JOIN_TIMEOUT_S
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert " up: " not in result.stderr, "the node started although its certificate is unusable"
    return result


def test_a_missing_key_file_is_one_line_naming_the_flag(tmp_path: Path, certs: Certs) -> None:
    result = failed_join(tmp_path, "--tls-cert", str(certs.server.cert), "--tls-key", str(tmp_path / "nope"))
    (line,) = error_lines(result)
    assert "--tls-key" in line and "does not exist" in line


def test_a_certificate_without_its_key_is_refused(tmp_path: Path, certs: Certs) -> None:
    result = failed_join(tmp_path, "--tls-cert", str(certs.server.cert))
    (line,) = error_lines(result)
    assert "--tls-cert" in line and "--tls-key" in line


def test_a_key_of_another_certificate_stops_the_start_in_one_line(tmp_path: Path, certs: Certs) -> None:
    result = failed_join(tmp_path, "--tls-cert", str(certs.server.cert), "--tls-key", str(certs.stranger.key))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if "--tls-key" in line]
    assert len(lines) == 1, result.stderr
    assert "is not the private key of the certificate" in lines[0]
