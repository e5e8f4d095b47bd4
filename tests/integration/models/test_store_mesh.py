"""The model store between real agents: `meshnode models add` on one node, every node sees it, rm everywhere.

Two agents share one module (starting agents dominates on 2 cores), and the tiny diffusion pipeline
is built once. The commands run as a user runs them: ``python -m meshnode models ...`` in its own
process, against the agents' HTTP and data dirs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.agents import Mesh, wait_for

MESHNODE = [sys.executable, "-m", "meshnode"]
COMMAND_TIMEOUT_S = 60.0
GOSSIP_TIMEOUT_S = 20.0


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with Mesh(tmp_path_factory.mktemp("store"), 2) as started:
        started.wait_formed(timeout=60)
        yield started


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("diffusers")
    from meshnode.inference.tiny_diffusion import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "tiny-sd", seed=0)


def meshnode(*args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "MESHNODE_API_KEY"}
    return subprocess.run(
        [*MESHNODE, *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, env=env
    )


def row(body: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((item for item in body["models"] if item["name"] == name), None)


def holders_seen(mesh: Mesh, name: str) -> dict[str, list[str]]:
    """Each agent's holders of `name`, as its GET /v1/models/store says."""
    seen = {}
    for agent in mesh.agents:
        found = row(agent.get("/v1/models/store").json(), name)
        seen[agent.name] = [] if found is None else found["holders"]
    return seen


def test_add_on_one_node_is_seen_by_every_node_and_listed(mesh: Mesh, tiny: Path) -> None:
    n0, n1 = mesh.agents
    added = meshnode(
        "models", "add", str(tiny), "--name", "tiny-sd", "--data-dir", str(n0.data_dir), "--node", n0.url
    )
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("added tiny-sd (")
    assert "holds it now and gossips it" in added.stderr
    stored = n0.data_dir / "model-store" / "tiny-sd"
    assert (stored / "model_index.json").read_bytes() == (tiny / "model_index.json").read_bytes()

    wait_for(
        lambda: holders_seen(mesh, "tiny-sd") == {"n0": ["n0"], "n1": ["n0"]},
        GOSSIP_TIMEOUT_S,
        0.1,
        lambda: str(holders_seen(mesh, "tiny-sd")),
    )
    view = n1.get("/v1/models/store").json()
    local = n0.get("/v1/models/store").json()["local"]
    assert [item["name"] for item in local] == ["tiny-sd"]
    assert view["local"] == []  # n1 holds nothing itself
    listed = row(view, "tiny-sd")
    assert listed is not None
    assert listed["digest"] == local[0]["digest"][:16]
    assert listed["bytes"] == local[0]["bytes"] > 1_000_000
    assert listed["pulling"] == []
    assert str(n0.data_dir) not in n0.get("/v1/models/store").text  # no folder paths

    table = meshnode("models", "ls", "--node", n1.url)
    assert table.returncode == 0, table.stderr
    header, line = table.stdout.splitlines()[:2]
    assert header.split() == ["NAME", "DIGEST", "SIZE", "HOLDERS", "PULLING"]
    assert line.split()[:2] == ["tiny-sd", listed["digest"]]
    assert line.split()[-2:] == ["n0", "-"]


def test_bad_names_are_refused_with_clear_errors(mesh: Mesh) -> None:
    # What `models add` refuses before asking any node: tests/unit/cli/test_models_cli.py.
    n0 = mesh.agents[0]
    for name, status in (("bad%20name", 422), ("-x", 422), (".partial", 422), ("nothing-here", 404)):
        response = httpx.delete(f"{n0.url}/v1/models/store/{name}", timeout=10)
        assert response.status_code == status, (name, response.text)
        assert response.json()["error"]["message"]
    missing = meshnode("models", "rm", "nothing-here", "--node", n0.url)
    assert missing.returncode == 1
    assert "404" in missing.stderr
    assert "no node in the mesh holds a model named 'nothing-here'" in missing.stderr


def test_rm_removes_it_from_every_holder(mesh: Mesh, tiny: Path) -> None:
    n0, n1 = mesh.agents
    for agent in (n0, n1):
        added = meshnode(
            "models",
            "add",
            str(tiny),
            "--name",
            "both",
            "--data-dir",
            str(agent.data_dir),
            "--node",
            agent.url,
        )
        assert added.returncode == 0, added.stderr
    wait_for(
        lambda: holders_seen(mesh, "both") == {"n0": ["n0", "n1"], "n1": ["n0", "n1"]},
        GOSSIP_TIMEOUT_S,
        0.1,
        lambda: str(holders_seen(mesh, "both")),
    )
    removed = meshnode("models", "rm", "both", "--node", n1.url)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.strip() == "removed both from n0, n1"
    for agent in (n0, n1):
        assert not (agent.data_dir / "model-store" / "both").exists()
    wait_for(
        lambda: holders_seen(mesh, "both") == {"n0": [], "n1": []},
        GOSSIP_TIMEOUT_S,
        0.1,
        lambda: str(holders_seen(mesh, "both")),
    )
