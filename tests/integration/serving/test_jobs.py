"""Async jobs on real agents: submit anywhere, read anywhere, cancel, dedupe, and survive a node's death.

Three agents; ``n1`` and ``n2`` host replicas of ``probe`` (``serving_apps.Probe``: echoes, or sleeps
for ``{"do": "sleep", "s": ...}``). Jobs enter at every node; with three nodes and three copies,
every node holds every job.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.agents import AgentProcess, Mesh, wait_for

APPS = Path(__file__).parents[1] / "serving_apps.py"
PROBE = ["--deploy", f"probe={APPS}:Probe", "--deploy", f"once={APPS}:OnceOnly"]
TERMINAL = {"completed", "failed", "cancelled"}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with Mesh(tmp_path_factory.mktemp("jobs"), 3, extra_args={1: PROBE, 2: PROBE}) as started:
        started.wait_formed()
        entry = started.agents[0]
        wait_for(lambda: httpx.post(f"{entry.url}/v1/predict/probe", json={}).status_code == 200, 60)
        yield started


def submit(agent: AgentProcess, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{agent.url}/v1/jobs/probe", json=body, timeout=30, **kwargs)


def status(agent: AgentProcess, job_id: str) -> dict[str, Any]:
    answer = httpx.get(f"{agent.url}/v1/jobs/{job_id}", timeout=30)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def wait_ended(agent: AgentProcess, job_id: str, timeout: float = 60) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def ended() -> bool:
        seen.update(status(agent, job_id))
        return seen["status"] in TERMINAL

    wait_for(ended, timeout, 0.1, lambda: json.dumps(seen))
    return seen


def test_a_job_answers_202_with_its_urls_and_its_result_is_predicts_answer_on_every_node(mesh: Mesh) -> None:
    entry = mesh.agents[0]
    answer = submit(entry, {"x": 1})
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert job["status"] in ("queued", "running", "completed") and len(job["id"]) == 22
    assert job["status_url"] == f"{entry.url}/v1/jobs/{job['id']}"
    assert job["result_url"] == f"{job['status_url']}/result" and job["cancel_url"] == job["status_url"]
    done = wait_ended(entry, job["id"])
    assert done["status"] == "completed" and done["attempts"] == 1 and done["node"] in ("n0", "n1", "n2")
    predicted = httpx.post(f"{entry.url}/v1/predict/probe", json={"x": 1}).json()
    for agent in mesh.agents:
        result = httpx.get(f"{agent.url}/v1/jobs/{job['id']}/result")
        assert result.status_code == 200 and result.json() == predicted
        # Three nodes, three copies: every node holds it, and says so on /metrics.
        held = agent.get("/metrics").text
        assert 'meshnode_jobs{deployment="probe",status="completed"}' in held


def test_a_running_job_reports_running_and_its_result_is_202_until_done(mesh: Mesh) -> None:
    entry = mesh.agents[1]
    job = submit(entry, {"do": "sleep", "s": 2}).json()
    wait_for(lambda: status(entry, job["id"])["status"] == "running", 30, 0.05)
    pending = httpx.get(f"{entry.url}/v1/jobs/{job['id']}/result")
    assert pending.status_code == 202 and pending.json()["status"] == "running"
    assert wait_ended(mesh.agents[2], job["id"])["status"] == "completed"


def test_cancel_a_queued_and_a_running_job(mesh: Mesh) -> None:
    entry = mesh.agents[0]
    running = submit(entry, {"do": "sleep", "s": 30}).json()
    wait_for(lambda: status(entry, running["id"])["status"] == "running", 30, 0.05)
    cancelled = httpx.delete(f"{mesh.agents[2].url}/v1/jobs/{running['id']}")
    assert cancelled.status_code == 200
    assert wait_ended(entry, running["id"], timeout=20)["status"] == "cancelled"
    assert httpx.get(f"{entry.url}/v1/jobs/{running['id']}/result").status_code == 410


def test_the_same_idempotency_key_names_the_same_job(mesh: Mesh) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = submit(mesh.agents[0], {"x": 2}, headers=headers).json()
    again = submit(mesh.agents[2], {"x": 2}, headers=headers)
    assert again.status_code == 202 and again.json()["id"] == first["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    other = submit(mesh.agents[0], {"x": 2}, headers={"Idempotency-Key": "order-43"}).json()
    assert other["id"] != first["id"]


def test_bad_requests_get_clear_errors(mesh: Mesh) -> None:
    entry = mesh.agents[0]
    assert httpx.get(f"{entry.url}/v1/jobs/not-a-job-id").status_code == 404
    assert httpx.get(f"{entry.url}/v1/jobs/{'A' * 22}").status_code == 404
    unknown = httpx.post(f"{entry.url}/v1/jobs/nowhere", json={})
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found"
    assert submit(entry, {"stream": True}).status_code == 422
    assert submit(entry, {}, params={"webhook": "ftp://x"}).status_code == 422
    assert httpx.post(f"{entry.url}/v1/jobs/probe", content=b"{nope").status_code == 400
    big = httpx.post(f"{entry.url}/v1/jobs/probe", content=b"[" * (2 * 1024 * 1024))
    assert big.status_code == 413
    assert httpx.get(f"{entry.url}/v1/jobs", params={"status": "lost"}).status_code == 422


def test_a_failed_job_answers_the_error_predict_gives(mesh: Mesh) -> None:
    entry = mesh.agents[0]
    job = submit(entry, {"do": "raise"}).json()
    ended = wait_ended(entry, job["id"])
    assert ended["status"] == "failed" and ended["error"]["type"]
    predicted = httpx.post(f"{entry.url}/v1/predict/probe", json={"do": "raise"})
    result = httpx.get(f"{entry.url}/v1/jobs/{job['id']}/result")
    assert result.status_code == predicted.status_code == 500
    assert result.json()["error"]["message"] == predicted.json()["error"]["message"]


def test_listing_is_bounded_and_filtered(mesh: Mesh) -> None:
    entry = mesh.agents[0]
    listed = httpx.get(f"{entry.url}/v1/jobs", params={"deployment": "probe", "limit": 3}).json()["jobs"]
    assert 1 <= len(listed) <= 3 and all(job["deployment"] == "probe" for job in listed)
    created = [job["created_at"] for job in listed]
    assert created == sorted(created, reverse=True)


def test_paging_reads_every_job_once_from_any_node(mesh: Mesh) -> None:
    for index in range(5):
        assert submit(mesh.agents[index % 3], {"page": index}).status_code == 202
    whole = httpx.get(f"{mesh.agents[0].url}/v1/jobs", params={"limit": 1000}, timeout=30).json()
    assert whole["has_more"] is False and whole["next_cursor"] is None and len(whole["jobs"]) >= 5
    paged: list[str] = []
    query: dict[str, Any] = {"limit": 2}
    for page_number in range(len(whole["jobs"])):
        # Each page from another node: a cursor is the mesh's, not one node's.
        page = httpx.get(f"{mesh.agents[page_number % 3].url}/v1/jobs", params=query, timeout=30).json()
        assert len(page["jobs"]) <= 2
        paged += [job["id"] for job in page["jobs"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        query["cursor"] = page["next_cursor"]
    assert paged == [job["id"] for job in whole["jobs"]]
    for cursor in ["nope", "12.short", f"{2**60}.{'A' * 22}"]:
        refused = httpx.get(f"{mesh.agents[0].url}/v1/jobs", params={"cursor": cursor})
        assert refused.status_code == 422 and "cursor" in refused.json()["error"]["message"], refused.text


def test_events_stream_each_change_until_the_end(mesh: Mesh) -> None:
    entry = mesh.agents[2]
    job = submit(entry, {"do": "sleep", "s": 1}).json()
    statuses = []
    with httpx.stream("GET", f"{entry.url}/v1/jobs/{job['id']}/events", timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data:"):
                statuses.append(json.loads(line[5:])["status"])
    assert statuses[-1] == "completed" and "running" in statuses


def test_jobs_survive_the_death_of_the_node_running_them(mesh: Mesh) -> None:
    """Jobs queued and running on a node that is killed complete elsewhere, each once."""
    entry = mesh.agents[0]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: submit(entry, {"do": "sleep", "s": 1, "i": i}), range(30)))
    assert all(a.status_code == 202 for a in answers), [a.text for a in answers if a.status_code != 202]
    ids = [a.json()["id"] for a in answers]
    victim = mesh.agents[1]
    wait_for(lambda: any(status(entry, i)["node"] == victim.name for i in ids), 30, 0.05)
    victim.kill()
    try:
        survivors = [a for a in mesh.agents if a is not victim]
        for job_id in ids:
            ended = wait_ended(entry, job_id, timeout=120)
            assert ended["status"] == "completed", ended
            for agent in survivors:
                assert httpx.get(f"{agent.url}/v1/jobs/{job_id}/result").status_code == 200
    finally:
        victim.restart().wait_ready()
        mesh.wait_formed(60)


def test_a_jobs_status_and_events_carry_the_progress_its_predictor_reports(mesh: Mesh) -> None:
    entry = mesh.agents[0]
    job = submit(entry, {"do": "steps", "n": 8, "interval_s": 0.4}).json()
    seen: list[dict[str, Any]] = []

    def midway() -> bool:
        progress = status(entry, job["id"]).get("progress")
        return progress is not None and 0 < progress["step"] < 8

    wait_for(midway, 30, 0.05)
    with httpx.stream("GET", f"{entry.url}/v1/jobs/{job['id']}/events", timeout=30) as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                seen.append(json.loads(line[5:]))
    steps = [event["progress"]["step"] for event in seen if "progress" in event]
    assert steps == sorted(steps) and len(set(steps)) >= 2, seen
    assert seen[-1]["status"] == "completed" and seen[-1]["progress"] == {"step": 8, "total": 8}


def test_a_job_its_app_says_must_not_run_twice_fails_when_its_runner_dies(mesh: Mesh) -> None:
    entry = mesh.agents[0]
    answer = httpx.post(f"{entry.url}/v1/jobs/once", json={"do": "sleep", "s": 60}, timeout=30)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    wait_for(lambda: status(entry, job_id)["status"] == "running", 30, 0.05)
    runner = status(entry, job_id)["node"]
    victim = next(agent for agent in mesh.agents if agent.name == runner)
    survivor = next(agent for agent in mesh.agents if agent is not victim)
    victim.kill()
    try:
        ended = wait_ended(survivor, job_id, timeout=60)
        assert ended["status"] == "failed" and ended["attempts"] == 1, ended
        assert "not safe to run again" in ended["error"]["message"]
    finally:
        victim.restart().wait_ready()
        mesh.wait_formed(60)


def test_a_large_result_is_a_file_on_two_nodes_and_read_from_any(mesh: Mesh) -> None:
    entry = mesh.agents[0]
    big = {"blob": "x" * 400_000}  # its echo is over job_inline_result_bytes (256 KiB)
    job = submit(entry, big).json()
    assert wait_ended(entry, job["id"])["status"] == "completed"
    predicted = httpx.post(f"{entry.url}/v1/predict/probe", json=big, timeout=30).json()
    for agent in mesh.agents:
        result = httpx.get(f"{agent.url}/v1/jobs/{job['id']}/result", timeout=30)
        assert result.status_code == 200 and result.json() == predicted
    sha256 = hashlib.sha256(result.content).hexdigest()
    keeping = [a for a in mesh.agents if (a.data_dir / "job-results" / sha256).is_file()]
    assert len(keeping) == 2, [a.name for a in keeping]


def test_a_result_of_many_pieces_is_copied_and_read_whole_from_any_node(mesh: Mesh) -> None:
    """A result travels between nodes in pieces of 1 MiB (``job_result_files.py``): 3.5 MB is four."""
    entry = mesh.agents[2]
    job = submit(entry, {"do": "big", "n": 3_500_000}).json()
    assert wait_ended(entry, job["id"])["status"] == "completed"
    for agent in mesh.agents:
        result = httpx.get(f"{agent.url}/v1/jobs/{job['id']}/result", timeout=30)
        assert result.status_code == 200 and result.json() == {"blob": "z" * 3_500_000}
    sha256 = hashlib.sha256(result.content).hexdigest()
    keeping = [a for a in mesh.agents if (a.data_dir / "job-results" / sha256).is_file()]
    assert len(keeping) == 2, [a.name for a in keeping]
    assert not [path for a in mesh.agents for path in (a.data_dir / "job-results").glob(".*")]
