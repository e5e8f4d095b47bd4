"""Pre-warming with real agents: under a ramp of load, the next node in rank loads a replica before
the autoscaler's proposal asks for it, and serves as soon as the autoscaler does.

Three agents on 127.0.0.1. The deployment's knobs make the autoscaler slow to propose (a window of
6 s, a target of 4 requests in flight) and the forecast's horizon long (20 s), so the order of the
events does not hang on the machine's speed: the test asserts that order, never a duration. (With
a target of 3 the proposal came 2-3 s after the pre-warm and a noisy run could close that gap; at
4 it comes 5-6 s after.)
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.agents import Mesh, wait_for

APPS = Path(__file__).parents[1] / "serving_apps.py"
SPEC = {
    "app": f"{APPS}:Probe",
    "min_replicas": 1,
    "max_replicas": 2,
    "autoscaling": {
        "target_concurrency": 4,
        "window_s": 6.0,
        "scale_up_delay_s": 2.0,
        "scale_down_delay_s": 60.0,
        "prewarm": True,
        "prewarm_horizon_s": 20.0,
    },
}
# One more client every RAMP_STEP_S seconds, each keeping a 0.5 s request in flight, up to MAX_CLIENTS.
RAMP_STEP_S = 2.5
MAX_CLIENTS = 9


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    app_dir = ["--app-dir", str(APPS.parent)]
    with Mesh(tmp_path_factory.mktemp("prewarm"), 3, extra_args={i: app_dir for i in range(3)}) as started:
        started.wait_formed(timeout=60)
        yield started


def test_a_ramp_loads_the_next_replica_before_the_autoscaler_proposes_it_and_it_serves_at_once(
    mesh: Mesh,
) -> None:
    entry = mesh.agents[0]
    response = httpx.put(f"{entry.url}/v1/deployments/ramping", json=SPEC, timeout=10)
    assert response.status_code == 201, response.text

    def view() -> dict[str, Any]:
        body: dict[str, Any] = entry.get("/v1/deployments/ramping").json()
        return body

    def nodes(body: dict[str, Any], status: str) -> set[str]:
        return {r["node"] for r in body["replicas"] if r["status"] == status}

    try:
        wait_for(lambda: len(nodes(view(), "ready")) == 1, 60, message=lambda: str(view()))
        first = nodes(view(), "ready")
        stop = threading.Event()
        failures: list[int] = []

        def client(index: int) -> None:
            for _ in range(200):  # bounded: at most 200 requests of 0.5 s per client
                if stop.is_set():
                    return
                answer = httpx.post(
                    f"{mesh.agents[index % 3].url}/v1/predict/ramping",
                    json={"do": "sleep", "s": 0.5},
                    timeout=60,
                )
                if answer.status_code != 200:
                    failures.append(answer.status_code)

        events: dict[str, float] = {}
        standby: set[str] = set()
        prewarming: dict[str, Any] | None = None
        with concurrent.futures.ThreadPoolExecutor(MAX_CLIENTS) as pool:
            started = time.monotonic()
            clients = []
            try:
                deadline = started + 60
                while time.monotonic() < deadline and "desired" not in events:
                    now = time.monotonic()
                    if len(clients) < MAX_CLIENTS and now - started >= len(clients) * RAMP_STEP_S:
                        clients.append(pool.submit(client, len(clients)))
                    body = view()
                    if body["autoscaling"]["prewarming"] and "prewarm" not in events:
                        events["prewarm"], prewarming = now, body["autoscaling"]["prewarming"]
                    if nodes(body, "standby") and "standby" not in events:
                        events["standby"], standby = now, nodes(body, "standby")
                    if body["autoscaling"]["proposal"] > 1:
                        events.setdefault("proposal", now)
                    if body["desired"] > 1:
                        events["desired"] = now
                    time.sleep(0.1)
                assert set(events) == {"prewarm", "standby", "proposal", "desired"}, (events, view())
                # The order of events: the pre-warmed replica was loaded (standby: not routed to)
                # before the autoscaler's proposal first exceeded the replica serving. Each node
                # forecasts from the demand gossip brought it, so the node that loads the replica can
                # forecast before this entry does: its standby may show here before the entry's own
                # `prewarming` (a CI run saw it 2.2 s earlier). Both come before the proposal.
                assert events["standby"] < events["proposal"] <= events["desired"]
                assert events["prewarm"] < events["proposal"]
                assert prewarming is not None and prewarming["reason"].startswith("demand rising")
                assert prewarming["node"] in standby and standby.isdisjoint(first)
                # The autoscaler's scale-up promotes it: the two replicas are the first and the
                # pre-warmed one, no other node started one.
                wait_for(lambda: nodes(view(), "ready") == first | standby, 30, message=lambda: str(view()))
                assert {r["node"] for r in view()["replicas"]} == first | standby
                assert view()["autoscaling"]["prewarming"] is None
            finally:
                stop.set()
                for future in clients:
                    future.result(timeout=60)
        assert failures == []
    finally:
        httpx.delete(f"{entry.url}/v1/deployments/ramping", timeout=10)
