"""An ended job's result lives ``job_ttl_s``, then answers 410 Gone (not 404), everywhere it is asked."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.integration.agents import Mesh, wait_for

APPS = Path(__file__).parents[1] / "serving_apps.py"


def test_an_expired_result_answers_410_and_its_id_stays_known(tmp_path: Path) -> None:
    args = ["--deploy", f"probe={APPS}:Probe", "--set", "job_ttl_s=1"]
    with Mesh(tmp_path, 2, extra_args={0: args, 1: ["--set", "job_ttl_s=1"]}) as mesh:
        mesh.wait_formed()
        host, entry = mesh.agents
        wait_for(lambda: httpx.post(f"{entry.url}/v1/predict/probe", json={}).status_code == 200, 60)
        job_id = httpx.post(f"{entry.url}/v1/jobs/probe", json={"x": 1}).json()["id"]
        wait_for(lambda: httpx.get(f"{entry.url}/v1/jobs/{job_id}/result").status_code == 200, 30, 0.05)
        for agent in (entry, host):
            wait_for(lambda a=agent: httpx.get(f"{a.url}/v1/jobs/{job_id}").status_code == 410, 30, 0.1)
            gone = httpx.get(f"{agent.url}/v1/jobs/{job_id}/result")
            assert gone.status_code == 410 and gone.json()["error"]["type"] == "gone"
            assert "expired" in gone.json()["error"]["message"]
