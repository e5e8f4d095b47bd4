"""The jobs routes behind the real gate: an outsider without an API key reaches none of them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from meshnode.config import AgentConfig
from meshnode.http.app import create_app
from meshnode.http.gate import Gate
from meshnode.http.jobs import add_job_routes
from meshnode.mesh.types import NodeId
from meshnode.mesh.webhook_schedule import DEFAULT_SCHEDULE
from meshnode.serving.job_files import JobFiles
from meshnode.serving.job_limits import JobLimits
from meshnode.serving.job_peers import JobPeers
from meshnode.serving.job_store import JobStore
from meshnode.serving.job_webhooks import WebhookSender
from meshnode.serving.jobs import JobService
from tests.unit.http.test_gate import LOCAL, REMOTE, Keys, Node

JOB = "0123456789abcdefghijkl"
ROUTES = [
    ("POST", "/v1/jobs/echo"),
    ("GET", "/v1/jobs"),
    ("GET", f"/v1/jobs/{JOB}"),
    ("GET", f"/v1/jobs/{JOB}/result"),
    ("GET", f"/v1/jobs/{JOB}/events"),
    ("DELETE", f"/v1/jobs/{JOB}"),
]


class NoMembers:
    def members(self) -> list[object]:
        return []

    def member(self, node: object) -> None:
        return None


async def never_called(*args: object, **kwargs: object) -> object:
    raise AssertionError("nothing may be served for a refused request")


@pytest.fixture
async def gate(tmp_path: Path) -> AsyncIterator[Gate]:
    config = AgentConfig(name="n", data_dir=tmp_path)
    webhooks = WebhookSender(lambda *_: {}, DEFAULT_SCHEDULE, lambda record: "")
    jobs = JobService(
        me=NodeId("me"),
        open_store=lambda: JobStore(tmp_path),
        files=JobFiles(tmp_path / "job-results"),
        peers=JobPeers(NoMembers(), never_called),  # type: ignore[arg-type]
        serve=never_called,
        known=lambda name: True,
        limits=JobLimits.of(config),
        webhooks=webhooks,
    )
    app = create_app(Node())
    add_job_routes(app, jobs, max_body_bytes=1024, default_timeout_s=60)
    yield Gate(app, Keys().key, insecure=False)
    await webhooks.close()


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_a_client_on_another_machine_without_a_key_is_refused(
    gate: Gate, method: str, path: str
) -> None:
    transport = httpx.ASGITransport(app=gate, client=REMOTE)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as stranger:
        answer = await stranger.request(method, path, json={} if method == "POST" else None)
    assert answer.status_code == 401, answer.text


async def test_loopback_reaches_the_routes(gate: Gate) -> None:
    transport = httpx.ASGITransport(app=gate, client=LOCAL)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as local:
        answer = await local.get("/v1/jobs/not-a-job-id")
    assert answer.status_code == 404 and "22 characters" in answer.json()["error"]["message"]
