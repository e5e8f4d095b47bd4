"""Jobs with large bodies, listed across nodes: every answer between nodes fits a data-plane frame.

Two agents, each job kept by one of them (``job_copies=1``), frames limited to 2 MiB
(``max_frame_bytes``) and jobs of ~300 KB of request each: the jobs one node holds are several
frames' worth. A node's answer to a listing carries each job without its body and result, and no
more records than half a frame holds, so the other node lists every job. Before, the answer carried
every job whole: a frame over the peer's limit, which libzmq answers by dropping the connection, so
the listing showed only the asking node's own jobs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.agents import Mesh, wait_for

APPS = Path(__file__).parents[1] / "serving_apps.py"
LIMITS = ["--set", f"max_frame_bytes={2 * 1024 * 1024}", "--set", "job_copies=1"]
PROBE = ["--deploy", f"probe={APPS}:Probe", *LIMITS]
JOBS = 16
PADDING = 300_000


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with Mesh(tmp_path_factory.mktemp("jobs-large"), 2, extra_args={0: PROBE, 1: PROBE}) as started:
        started.wait_formed()
        entry = started.agents[0]
        wait_for(lambda: httpx.post(f"{entry.url}/v1/predict/probe", json={}).status_code == 200, 60)
        yield started


def test_every_node_lists_every_job_however_large_their_bodies(mesh: Mesh) -> None:
    ids = set()
    for index in range(JOBS):
        body = {"index": index, "pad": "x" * PADDING}
        answer = httpx.post(f"{mesh.agents[index % 2].url}/v1/jobs/probe", json=body, timeout=30)
        assert answer.status_code == 202, answer.text
        ids.add(answer.json()["id"])
    for agent in mesh.agents:
        listed = httpx.get(f"{agent.url}/v1/jobs", params={"limit": 100}, timeout=30).json()
        assert {job["id"] for job in listed["jobs"]} == ids, agent.name
        assert not listed["has_more"]
    # Paged two at a time from one node, the same jobs, each once.
    paged: list[str] = []
    query: dict[str, object] = {"limit": 2}
    for _ in range(JOBS):
        page = httpx.get(f"{mesh.agents[0].url}/v1/jobs", params=query, timeout=30).json()
        paged += [job["id"] for job in page["jobs"]]
        if not page["has_more"]:
            break
        query["cursor"] = page["next_cursor"]
    assert sorted(paged) == sorted(ids) and len(paged) == JOBS
