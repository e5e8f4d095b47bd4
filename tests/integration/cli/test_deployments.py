"""`meshnode deployments` with real agents: a pinned app's numbers agree, before and after its host dies.

A deployment declared only by `meshnode join --deploy` (max 0) is served by its pinned replicas alone:
when its host dies no other node starts one, even after requests reached it, and the table's
MIN, MAX, PINNED and DESIRED agree with each other (a note says why DESIRED is above MAX).
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx

from tests.integration.agents import AgentProcess, Mesh, wait_for

ECHO = "meshnode.apps.echo:Echo"
# Agents and the echo worker start side by side on two shared cores.
READY_TIMEOUT_S = 90.0
# A few placement rounds (placement_interval_s) after the host is seen dead.
SETTLE_TIMEOUT_S = 20.0


def edge(agent: AgentProcess) -> dict[str, Any]:
    response = agent.get("/v1/deployments/edge")
    return response.json() if response.status_code == 200 else {}


def table(agent: AgentProcess) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "meshnode", "deployments", "--node", agent.url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_a_pinned_apps_host_dies_no_replacement_starts_and_the_numbers_agree(tmp_path: Path) -> None:
    with Mesh(tmp_path, 2, extra_args={0: ["--deploy", f"edge={ECHO}"]}) as mesh:
        mesh.wait_formed(timeout=60)
        pinner, other = mesh.agents
        wait_for(lambda: edge(other).get("ready") == 1, READY_TIMEOUT_S, 0.2, lambda: str(edge(other)))

        # A slow request through the other node: the demand every autoscaler sees for `edge`.
        answers: list[int] = []
        slow = threading.Thread(
            target=lambda: answers.append(
                httpx.post(f"{other.url}/v1/predict/edge", json={"delay_s": 3}, timeout=30).status_code
            )
        )
        slow.start()
        try:
            wait_for(
                lambda: edge(other)["autoscaling"]["mean_concurrency"] > 0,
                15,
                0.1,
                lambda: f"the demand to be seen: {edge(other)}",
            )
        finally:
            slow.join(timeout=30)
        assert answers == [200]
        served = edge(other)
        assert (served["min_replicas"], served["max_replicas"], served["pinned"], served["desired"]) == (
            0,
            0,
            1,
            1,
        ), served
        assert "pinned only" in served["note"]
        shown = table(other)
        assert re.search(rf"^edge\s+{ECHO}\s+0\s+0\s+1\s+1\s+1\s+n0 \(ready pinned\)$", shown, re.M), shown
        assert re.search(r"^edge: pinned only \(join --deploy\): desired counts", shown, re.M), shown

        pinner.kill()
        wait_for(lambda: other.statuses().get(pinner.node_id) == "dead", 30, message="the kill to be seen")
        # No replacement: nothing wants one, and the view says why nothing serves.
        wait_for(
            lambda: edge(other).get("desired") == 0 and edge(other).get("replicas") == [],
            SETTLE_TIMEOUT_S,
            0.2,
            lambda: f"edge to want no replica: {edge(other)}\n{other.describe()}",
        )
        gone = edge(other)
        assert (gone["pinned"], gone["ready"], gone["note"]) == (0, 0, None), gone
        assert "runs only where it is pinned" in gone["missing"], gone
        assert "edge" not in other.members()[other.node_id]["replicas"]
        refused = httpx.post(f"{other.url}/v1/predict/edge", json={}, timeout=30)
        assert refused.status_code == 503, refused.text
        assert "runs only where it is pinned" in refused.json()["error"]["message"]
        shown = table(other)
        assert re.search(rf"^edge\s+{ECHO}\s+0\s+0\s+0\s+0\s+0\s+-$", shown, re.M), shown
        assert "edge: runs only where it is pinned (meshnode join --deploy)" in shown, shown
