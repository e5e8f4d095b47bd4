"""Prometheus on real agents: per deployment counts and histograms, ``promtool``, service discovery.

Two agents of one mesh; the first hosts ``echo`` (pinned), the second forwards to it. Requests that
succeed, name no deployment (404) and carry a bad body (400) are counted on the node the client
sent them to, by deployment and code. ``promtool check metrics`` (Debian's ``prometheus`` package;
scripts/setup.sh installs it) passes on every node's ``/metrics``. A real Prometheus, started by the
test on loopback with its own config and data directory, finds both nodes through
``GET /v1/prometheus/targets`` and answers a query for echo's request rate. Both tools are skipped,
saying why, when they are not installed.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.agents import HOST, AgentProcess, Mesh, free_port, metric, stop_processes, wait_for

DOC = Path(__file__).parents[3] / "docs" / "observability.md"
ECHO = ("--deploy", "echo=meshnode.apps.echo:Echo")
READY_TIMEOUT_S = 120.0
# Prometheus reads its service discovery and scrapes every second here; a rate needs two scrapes.
PROMETHEUS_WAIT_S = 60.0


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    extra = {0: ECHO, 1: ("--region", "eu", "--zone", "eu-1")}
    with Mesh(tmp_path_factory.mktemp("prometheus"), 2, extra_args=extra) as started:
        host, entry = started.agents
        wait_for(functools.partial(ready, entry, "echo"), READY_TIMEOUT_S, 0.2, host.describe)
        yield started


def ready(agent: AgentProcess, name: str) -> bool:
    response = agent.get(f"/v1/deployments/{name}")
    return response.status_code == 200 and response.json().get("ready") == 1


def post(agent: AgentProcess, deployment: str, content: bytes) -> httpx.Response:
    return httpx.post(
        f"{agent.url}/v1/predict/{deployment}",
        content=content,
        headers={"content-type": "application/json"},
        timeout=30,
    )


def samples(agent: AgentProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = agent.get("/metrics").text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def requests_total(agent: AgentProcess, deployment: str, code: str) -> float:
    key = ("meshnode_requests_total", frozenset({("deployment", deployment), ("code", code)}))
    return samples(agent).get(key, 0.0)


def documented_queries() -> list[str]:
    """The PromQL of docs/observability.md: its query block and its Grafana dashboard's panels."""
    text = DOC.read_text()
    promql = text.split("```promql\n", 1)[1].split("```", 1)[0]
    queries, pending = [], ""
    for line in promql.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        pending = f"{pending} {line.strip()}" if line.startswith(" ") else line
        if not line.startswith(" "):
            queries.append(pending)
        else:
            queries[-1] = pending
    dashboard = json.loads(text.split("```json\n", 1)[1].split("```", 1)[0])
    for panel in dashboard["panels"]:
        queries += [target["expr"].replace("$deployment", ".*") for target in panel["targets"]]
    return queries


def test_requests_are_counted_by_deployment_and_code_on_the_node_the_client_asked(mesh: Mesh) -> None:
    host, entry = mesh.agents
    before = {code: requests_total(entry, "echo", code) for code in ("200", "400")}
    for i in range(5):
        assert post(entry, "echo", b'{"i": %d}' % i).status_code == 200
    assert post(entry, "echo", b"{not json").status_code == 400
    for i in range(3):  # made-up names: one series for all of them, never one each
        assert post(entry, f"made-up-{i}", b"{}").status_code == 404
    assert requests_total(entry, "echo", "200") == before["200"] + 5
    assert requests_total(entry, "echo", "400") == before["400"] + 1
    assert requests_total(entry, "_unknown", "404") >= 3
    got = samples(entry)
    assert not any(dict(labels).get("deployment", "").startswith("made-up") for _, labels in got)
    count = got[("meshnode_request_duration_seconds_count", frozenset({("deployment", "echo")}))]
    assert count >= 6
    inf = got[
        ("meshnode_request_duration_seconds_bucket", frozenset({("deployment", "echo"), ("le", "+Inf")}))
    ]
    assert inf == count
    # The host counted none of these: it served them, but no client asked it.
    assert requests_total(host, "echo", "200") == 0
    # Replicas: each node reports its own, so the sum over nodes is the mesh's count.
    ready_here = [
        metric(a, "meshnode_deployment_ready_replicas", "deployment").get("echo", 0) for a in mesh.agents
    ]
    assert ready_here == [1, 0]
    assert metric(host, "meshnode_replicas", "state") == {"ready": 1}
    # Other routes count by their template: the deployment views asked while waiting for echo.
    routes = metric(entry, "meshnode_http_requests_total", "route")
    assert routes.get("/v1/deployments/{name}", 0) >= 1, routes
    # Each node saw the other join (alive); nobody was suspected on a quiet loopback.
    for agent in mesh.agents:
        changes = metric(agent, "meshnode_member_changes_total", "status")
        assert changes["alive"] >= 1 and set(changes) == {"alive", "suspect", "dead", "left"}, changes


def test_a_job_counts_once_as_ended_over_the_whole_mesh(mesh: Mesh) -> None:
    entry = mesh.agents[1]

    def ended() -> float:
        key = ("meshnode_jobs_ended_total", frozenset({("deployment", "echo"), ("status", "completed")}))
        return sum(samples(agent).get(key, 0.0) for agent in mesh.agents)

    before = ended()
    submitted = post_job(entry)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    wait_for(lambda: entry.get(f"/v1/jobs/{job_id}").json()["status"] == "completed", 60, 0.2, entry.describe)
    wait_for(lambda: ended() == before + 1, 10, 0.2, lambda: f"ended: {ended()} (before {before})")


def post_job(agent: AgentProcess) -> httpx.Response:
    return httpx.post(f"{agent.url}/v1/jobs/echo", json={"job": 1}, timeout=30)


def test_the_targets_list_every_node_with_its_labels(mesh: Mesh) -> None:
    host, entry = mesh.agents
    for agent in mesh.agents:
        response = agent.get("/v1/prometheus/targets")
        assert response.status_code == 200, response.text
        groups = {group["labels"]["node"]: group for group in response.json()}
        assert set(groups) == {host.name, entry.name}
        assert groups[host.name]["targets"] == [host.http]
        assert groups[entry.name]["targets"] == [entry.http]
        assert groups[entry.name]["labels"]["region"] == "eu"
        assert groups[entry.name]["labels"]["zone"] == "eu-1"
        assert groups[entry.name]["labels"]["__scheme__"] == "http"


def test_promtool_passes_every_node_s_metrics(mesh: Mesh) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus; scripts/setup.sh installs it)")
    assert post(mesh.agents[1], "echo", b"{}").status_code == 200  # histograms with samples
    for agent in mesh.agents:
        text = agent.get("/metrics").text
        checked = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
        )
        assert checked.returncode == 0, f"{agent.name}: {checked.stdout}{checked.stderr}"
        for kind in ("foreground", "background"):  # the broadcast queue's backlog, by class
            assert f'meshnode_gossip_queued{{class="{kind}"}}' in text, agent.name


def test_a_real_prometheus_finds_the_mesh_and_answers_echo_s_request_rate(mesh: Mesh, tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (Debian package prometheus; scripts/setup.sh installs it)")
    host, entry = mesh.agents
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: meshnode\n    http_sd_configs:\n"
        f"      - url: http://{host.http}/v1/prometheus/targets\n        refresh_interval: 1s\n"
    )
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address={HOST}:{port}",
    ]
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    api = f"http://{HOST}:{port}/api/v1"
    try:

        def both_up() -> bool:
            try:
                active = httpx.get(f"{api}/targets", timeout=5).json()["data"]["activeTargets"]
            except (httpx.HTTPError, ValueError, KeyError):
                return False
            return {t["labels"].get("node") for t in active if t["health"] == "up"} == {host.name, entry.name}

        wait_for(both_up, PROMETHEUS_WAIT_S, 0.5, lambda: (tmp_path / "prometheus.log").read_text()[-2000:])
        query = 'sum(rate(meshnode_requests_total{deployment="echo",code="200"}[5s]))'
        deadline = time.monotonic() + PROMETHEUS_WAIT_S
        rate = 0.0
        while time.monotonic() < deadline and rate <= 0:
            for i in range(5):  # traffic while Prometheus scrapes, bounded by the deadline
                assert post(entry, "echo", b'{"i": %d}' % i).status_code == 200
            answer = httpx.get(f"{api}/query", params={"query": query}, timeout=5).json()
            result = answer["data"]["result"]
            rate = float(result[0]["value"][1]) if result else 0.0
            time.sleep(0.5)
        assert rate > 0, f"no rate for echo from Prometheus: {answer}"
        for expr in documented_queries():  # the docs' queries and dashboard panels are valid PromQL
            answer = httpx.get(f"{api}/query", params={"query": expr}, timeout=5).json()
            assert answer["status"] == "success", (expr, answer)
    finally:
        stop_processes([process])
        log.close()
