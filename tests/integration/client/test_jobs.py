"""Jobs through ``MeshClient``, ``AsyncMeshClient`` and ``meshnode jobs``, against real agents.

Two agents, each with a replica of ``probe`` (``serving_apps.Probe``: echoes the body and the Accept
it was given; sleeps for ``{"do": "sleep", "s": N}``; raises for ``{"do": "raise"}``). The command is
run as a user runs it (``.venv/bin/meshnode jobs ...``, a subprocess) against the same mesh, so the
Python and command-line surfaces share one mesh's start-up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest

from meshnode import (
    AsyncMeshClient,
    DeploymentNotFound,
    Job,
    JobFailed,
    JobGone,
    JobNotFinished,
    JobNotFound,
    MeshClient,
)
from meshnode.client.job_view import Progress
from tests.integration.agents import AgentProcess, Mesh, wait_for

APPS = Path(__file__).parents[1] / "serving_apps.py"
# `follow` serves the last test alone: the 60 s sleeps the tests before it cancel go on in their
# workers (a sync predict cannot be interrupted) and hold probe's slots for up to a minute.
PROBE = ["--deploy", f"probe={APPS}:Probe", "--deploy", f"follow={APPS}:Probe"]
MESHNODE = str(Path(sys.executable).parent / "meshnode")
UNKNOWN_ID = "A" * 22
# Two agents and their replica workers share two busy cores with other test runs: generous bounds.
WAIT_S = 60.0
COMMAND_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with Mesh(tmp_path_factory.mktemp("jobs_client"), 2, extra_args={0: PROBE, 1: PROBE}) as started:
        started.wait_formed()
        for agent in started.agents:
            wait_for(partial(serves, agent), WAIT_S, message=started.describe)
        yield started


@pytest.fixture
def client(mesh: Mesh) -> Iterator[MeshClient]:
    with MeshClient([agent.url for agent in mesh.agents], timeout=30) as made:
        yield made


def serves(agent: AgentProcess) -> bool:
    """Whether ``agent`` answers a predict of ``probe`` (its replica, or the other's, is ready)."""
    return httpx.post(f"{agent.url}/v1/predict/probe", json={}, timeout=30).status_code == 200


def meshnode(mesh: Mesh, *args: str) -> subprocess.CompletedProcess[str]:
    """``meshnode jobs ARGS --node URL`` (the first agent) as a user runs it."""
    command = [MESHNODE, "jobs", *args, "--node", mesh.agents[0].url]
    return subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)


def test_the_sync_client_submits_waits_and_reads_the_result_on_every_node(
    mesh: Mesh, client: MeshClient
) -> None:
    job = client.submit("probe", {"do": "sleep", "s": 0.5})
    assert isinstance(job, Job) and len(job.id) == 22 and job.status in ("queued", "running", "completed")
    assert job.deployment == "probe" and not job.replayed
    heard: list[Job] = []
    assert client.wait(job.id, timeout=WAIT_S, on_progress=heard.append) == {"slept": 0.5}
    assert heard[-1].status == "completed" and heard[-1].attempts == 1
    assert [status.status for status in client.events(job.id)] == ["completed"]
    for agent in mesh.agents:
        with MeshClient([agent.url]) as single:
            assert single.result(job.id) == {"slept": 0.5}
            assert single.status(job.id).node in {agent.name for agent in mesh.agents}


def test_wait_hears_each_step_the_predictor_reports(client: MeshClient) -> None:
    job = client.submit("probe", {"do": "steps", "n": 6, "interval_s": 0.3})
    heard: list[Job] = []
    assert client.wait(job.id, timeout=WAIT_S, on_progress=heard.append) == {"steps": 6}
    steps = [status.progress.step for status in heard if status.progress is not None]
    assert steps == sorted(steps) and len(set(steps)) >= 2, heard
    assert heard[-1].status == "completed" and heard[-1].progress == Progress(6, 6)


async def test_the_async_client_follows_events_cancels_a_running_job_and_it_is_gone(mesh: Mesh) -> None:
    async with AsyncMeshClient([agent.url for agent in mesh.agents], timeout=30) as mesh_client:
        job = await mesh_client.submit("probe", {"do": "sleep", "s": 60})
        seen: list[str] = []

        async def follow() -> None:
            async for status in mesh_client.events(job.id):
                if status.status == "running" and "running" not in seen:
                    assert (await mesh_client.cancel(job.id)).id == job.id
                seen.append(status.status)

        await asyncio.wait_for(follow(), WAIT_S)
        assert "running" in seen and seen[-1] == "cancelled"
        with pytest.raises(JobGone, match="cancelled"):
            await mesh_client.result(job.id)
        with pytest.raises(JobGone):
            await mesh_client.wait(job.id, timeout=WAIT_S)
        answer = await mesh_client.wait((await mesh_client.submit("probe", {"x": 1})).id, timeout=WAIT_S)
        assert answer == {"echo": {"x": 1}, "header": "application/json"}


def test_the_same_idempotency_key_submits_one_job(client: MeshClient) -> None:
    key = f"order-{uuid.uuid4().hex}"
    first = client.submit("probe", {"x": 2}, idempotency_key=key)
    again = client.submit("probe", {"x": 2}, idempotency_key=key)
    assert again.id == first.id and again.replayed and not first.replayed
    assert client.submit("probe", {"x": 2}, idempotency_key=f"{key}-other").id != first.id
    assert client.wait(first.id, timeout=WAIT_S) == {"echo": {"x": 2}, "header": "application/json"}


def test_errors_say_what_is_wrong_with_the_job(client: MeshClient) -> None:
    with pytest.raises(JobNotFound, match="no job"):
        client.status(UNKNOWN_ID)
    with pytest.raises(JobNotFound):
        client.result(UNKNOWN_ID)
    with pytest.raises(DeploymentNotFound):
        client.submit("nowhere", {})
    failing = client.submit("probe", {"do": "raise"})
    with pytest.raises(JobFailed, match="predictor says no") as caught:
        client.wait(failing.id, timeout=WAIT_S)
    assert (caught.value.status, caught.value.kind, caught.value.job.status) == (500, "predictor", "failed")
    with pytest.raises(JobFailed, match="predictor says no"):
        client.result(failing.id)
    sleeping = client.submit("probe", {"do": "sleep", "s": 60})
    with pytest.raises(JobNotFinished) as unfinished:
        client.result(sleeping.id)
    assert unfinished.value.job.status in ("queued", "running")
    with pytest.raises(JobNotFinished, match=r"did not end within 0\.5 s"):
        client.wait(sleeping.id, timeout=0.5)
    client.cancel(sleeping.id)


def test_the_listing_is_filtered_and_bounded(client: MeshClient) -> None:
    client.wait(client.submit("probe", {"x": 3}).id, timeout=WAIT_S)
    listed = client.jobs("probe", limit=2)
    assert 1 <= len(listed) <= 2 and all(job.deployment == "probe" for job in listed)
    completed = client.jobs(status="completed")
    assert completed and all(job.status == "completed" for job in completed)
    client.wait(client.submit("probe", {"x": 6}).id, timeout=WAIT_S)
    whole = client.jobs("probe", limit=1000)
    assert not whole.has_more and len(whole) >= 2
    page, paged = client.jobs("probe", limit=1), []
    while True:
        paged += [job.id for job in page]
        if not page.has_more:
            break
        page = client.jobs("probe", limit=1, cursor=page.next_cursor)
    assert paged == [job.id for job in whole]


def test_the_command_submits_waits_reads_lists_and_cancels(mesh: Mesh, tmp_path: Path) -> None:
    submitted = meshnode(mesh, "submit", "probe", '{"x": 4}')
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert len(job_id) == 22 and job_id in submitted.stderr
    answer = meshnode(mesh, "result", job_id, "--wait")
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout) == {"echo": {"x": 4}, "header": "application/json"}
    status = meshnode(mesh, "status", job_id)
    assert status.returncode == 0 and json.loads(status.stdout)["status"] == "completed"
    waited = meshnode(mesh, "submit", "probe", '{"do": "sleep", "s": 0.3}', "--wait")
    assert waited.returncode == 0 and json.loads(waited.stdout) == {"slept": 0.3}, waited.stderr
    written = meshnode(mesh, "submit", "probe", '{"x": 5}', "--output", str(tmp_path / "answer.json"))
    assert written.returncode == 0 and "wrote" in written.stderr, written.stderr
    assert json.loads((tmp_path / "answer.json").read_text())["echo"] == {"x": 5}
    listed = meshnode(mesh, "ls", "--deployment", "probe", "--status", "completed", "--limit", "50")
    assert listed.returncode == 0 and listed.stdout.startswith("ID  "), listed.stderr
    assert job_id in listed.stdout and "completed" in listed.stdout
    one = meshnode(mesh, "ls", "--deployment", "probe", "--limit", "1", "--json")
    following = json.loads(one.stdout)["next_cursor"]
    assert len(json.loads(one.stdout)["jobs"]) == 1 and following, one.stderr
    assert f"meshnode jobs ls --cursor {following}" in meshnode(mesh, "ls", "--limit", "1").stderr
    rest = json.loads(meshnode(mesh, "ls", "--deployment", "probe", "--cursor", following, "--json").stdout)
    every = json.loads(
        meshnode(mesh, "ls", "--deployment", "probe", "--limit", "1", "--all", "--json").stdout
    )
    assert [job["id"] for job in every["jobs"]] == [
        *(j["id"] for j in json.loads(one.stdout)["jobs"]),
        *(job["id"] for job in rest["jobs"]),
    ]
    assert every["next_cursor"] is None and len(every["jobs"]) >= 3
    long_job = meshnode(mesh, "submit", "probe", '{"do": "sleep", "s": 60}').stdout.strip()
    cancelled = meshnode(mesh, "cancel", long_job)
    assert cancelled.returncode == 0 and long_job in cancelled.stdout, cancelled.stderr


def test_the_command_prints_one_error_line_with_exit_status_1(mesh: Mesh) -> None:
    unknown = meshnode(mesh, "status", UNKNOWN_ID)
    assert unknown.returncode == 1 and unknown.stderr.startswith("Error: 404: no job"), unknown.stderr
    failed = meshnode(mesh, "submit", "probe", '{"do": "raise"}', "--wait")
    assert (
        failed.returncode == 1 and "failed: 500: " in failed.stderr and "predictor says no" in failed.stderr
    )
    assert "Traceback" not in failed.stderr and failed.stdout == ""
    long_job = meshnode(mesh, "submit", "probe", '{"do": "sleep", "s": 60}').stdout.strip()
    early = meshnode(mesh, "result", long_job)
    assert early.returncode == 1 and "add --wait" in early.stderr, early.stderr
    assert meshnode(mesh, "cancel", long_job).returncode == 0
    assert meshnode(mesh, "ls", "--status", "lost").returncode == 2


def test_wait_follows_the_job_to_the_other_node_when_its_node_dies(mesh: Mesh) -> None:
    """Runs last: it kills an agent for good (the module's mesh ends here), mid-stream of the client."""
    victim, survivor = mesh.agents[1], mesh.agents[0]
    following = threading.Event()
    heard: list[Job] = []

    def hear(job: Job) -> None:
        heard.append(job)
        following.set()

    with (
        MeshClient([victim.url, survivor.url], prefer_first=True, timeout=30) as client,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        job = client.submit("follow", {"do": "sleep", "s": 3})
        waiting = pool.submit(client.wait, job.id, WAIT_S * 2, hear)
        assert following.wait(WAIT_S) and client.last_node == victim.url
        victim.kill()
        # Had it run on the victim, the survivor takes it over once it sees the death and reruns it;
        # either way the client reads on from the survivor.
        assert waiting.result(WAIT_S * 2) == {"slept": 3}
        assert heard[-1].status == "completed" and client.last_node == survivor.url
