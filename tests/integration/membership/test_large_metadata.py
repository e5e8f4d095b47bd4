"""Real agents: what a node with large metadata says of itself reaches its peers by gossip.

n0 hosts an app with sixty hints, so its metadata is ~2 KB, more than a gossip packet's budget.
Push-pull (anti-entropy) is an hour apart on both agents: once the mesh has formed, only gossip can
carry a change. A model added to n0's store (a change of its metadata) must then reach n1 within
seconds, as it does for a node whose metadata is small.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.agents import Mesh, wait_for

APPS = Path(__file__).parents[1] / "serving_apps.py"
NO_PUSH_PULL = ("--set", "push_pull_interval_s=3600")
GOSSIP_TIMEOUT_S = 20.0
HINTS = 60


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    extra = {0: ("--deploy", f"hinted={APPS}:ManyHints", *NO_PUSH_PULL), 1: NO_PUSH_PULL}
    with Mesh(tmp_path_factory.mktemp("large-meta"), 2, extra_args=extra) as started:
        started.wait_formed(timeout=60)
        yield started


def hints_seen_by(view: dict[str, Any], name: str) -> int:
    member = next((m for m in view["members"] if m["name"] == name), None)
    return 0 if member is None else len(member["hints"])


def holders_of(view: dict[str, Any], model: str) -> list[str]:
    row = next((item for item in view["models"] if item["name"] == model), None)
    return [] if row is None else row["holders"]


def test_a_change_of_large_metadata_reaches_the_peer_without_push_pull(mesh: Mesh, tmp_path: Path) -> None:
    n0, n1 = mesh.agents
    # The replica's hints make n0's metadata large; n1 may have them from the join's push-pull.
    wait_for(lambda: hints_seen_by(n0.get("/v1/mesh").json(), "n0") == HINTS, 60, 0.2, lambda: "n0's hints")
    wait_for(
        lambda: hints_seen_by(n1.get("/v1/mesh").json(), "n0") == HINTS,
        GOSSIP_TIMEOUT_S,
        0.2,
        lambda: f"n1 sees {hints_seen_by(n1.get('/v1/mesh').json(), 'n0')} of n0's hints",
    )
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(os.urandom(4096))
    env = {key: value for key, value in os.environ.items() if key != "MESHNODE_API_KEY"}
    command = [sys.executable, "-m", "meshnode", "models", "add", str(folder), "--name", "weights"]
    added = subprocess.run(
        [*command, "--data-dir", str(n0.data_dir), "--node", n0.url],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert added.returncode == 0, added.stderr
    wait_for(
        lambda: holders_of(n1.get("/v1/models/store").json(), "weights") == ["n0"],
        GOSSIP_TIMEOUT_S,
        0.1,
        lambda: f"n1's store view: {n1.get('/v1/models/store').json()}",
    )
