"""Worker lanes with real agents and workers: a forwarded request answered by the serving worker itself.

Two agents on 127.0.0.1: ``n0`` hosts nothing and forwards every request, ``n1`` hosts ``probe``
(``serving_apps.py``). Once ``n1`` has handed ``n0`` a lane to probe's worker (docs/architecture.md,
"Worker lanes"), requests that want one answer reach the worker with no agent of ``n1`` in between;
deadlines, crashes and drains keep the guarantees they have through the agent.
"""

from __future__ import annotations

import concurrent.futures
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.agents import AgentProcess, Mesh, metric, wait_for

from .test_forwarding import deploy, post, wait_replicas_seen

SERVING = {1: deploy(probe="Probe")}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with Mesh(tmp_path_factory.mktemp("lanes"), 2, extra_args=SERVING) as started:
        started.wait_formed()
        wait_replicas_seen(started.agents[0], {"n1": {"probe"}})
        yield started


def lanes(agent: AgentProcess) -> float:
    return metric(agent, "meshnode_data_links_open", "lane").get("worker", 0.0)


def handed(agent: AgentProcess) -> float:
    for line in agent.get("/metrics").text.splitlines():
        if line.startswith("meshnode_data_links_handed_total "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no meshnode_data_links_handed_total on /metrics")


def frames_in(agent: AgentProcess) -> float:
    return metric(agent, "meshnode_data_frames_total", "direction")["in"]


def lane_open(entry: AgentProcess) -> None:
    """Forward until the entry holds a lane to the worker (its first request asks for one)."""
    wait_for(lambda: post(entry, "probe", {}).status_code == 200 and lanes(entry) == 1, 30, interval=0.1)


def test_forwarded_requests_reach_the_worker_without_its_agent_once_the_lane_is_open(mesh: Mesh) -> None:
    entry, serving = mesh.agents
    lane_open(entry)
    before = frames_in(serving)
    answers = [post(entry, "probe", {"n": n}) for n in range(20)]

    assert [response.status_code for response in answers] == [200] * 20
    assert [response.json()["echo"] for response in answers] == [{"n": n} for n in range(20)]
    assert {response.headers["X-Mesh-Route"] for response in answers} == {"n0,n1"}
    assert frames_in(serving) == before  # none of them crossed n1's agent
    assert handed(serving) >= 1


def test_a_serving_node_with_worker_lanes_off_serves_every_forwarded_request_itself(tmp_path: Path) -> None:
    serving_args = {1: [*SERVING[1], "--set", "serve_worker_lanes=false"]}
    with Mesh(tmp_path, 2, extra_args=serving_args) as started:
        started.wait_formed()
        entry, serving = started.agents
        wait_replicas_seen(entry, {"n1": {"probe"}})
        wait_for(lambda: post(entry, "probe", {}).status_code == 200, 30, interval=0.1)
        before = frames_in(serving)
        answers = [post(entry, "probe", {"n": n}) for n in range(10)]

        assert [response.status_code for response in answers] == [200] * 10
        assert frames_in(serving) >= before + 10  # each call crossed n1's agent
        assert handed(serving) == 0 and lanes(entry) == 0


def test_the_deadline_holds_over_a_lane_and_the_lane_serves_on(mesh: Mesh) -> None:
    entry, _ = mesh.agents
    lane_open(entry)
    late = post(entry, "probe", {"do": "sleep", "s": 3.0}, headers={"X-Request-Timeout": "0.5"})
    after = post(entry, "probe", {"x": 1})

    assert late.status_code == 504, late.text
    assert late.json()["error"]["type"] == "deadline_exceeded"
    assert after.status_code == 200 and lanes(entry) == 1


def test_a_worker_that_crashes_under_a_lane_fails_that_request_clearly_and_a_new_lane_serves_on(
    mesh: Mesh,
) -> None:
    entry, serving = mesh.agents
    lane_open(entry)
    lanes_handed = handed(serving)
    crashed = post(entry, "probe", {"do": "crash"})

    assert crashed.status_code == 503, crashed.text  # no other replica to run it again
    assert "dropped" in crashed.json()["error"]["message"]

    # The worker restarts; the entry asks its new worker for a lane (a peer that declined while the
    # worker was down is asked again DECLINED_HOLD_S later) and gets one.
    def served_on_a_new_lane() -> bool:
        return (
            post(entry, "probe", {}).status_code == 200
            and handed(serving) > lanes_handed
            and lanes(entry) == 1
        )

    wait_for(served_on_a_new_lane, 60, interval=0.2)


@pytest.mark.parametrize("lanes_on", [True, False], ids=["on a lane", "through its agent"])
def test_sigterm_of_the_serving_node_drains_a_request_running_there(tmp_path: Path, lanes_on: bool) -> None:
    extra = {1: SERVING[1] if lanes_on else [*SERVING[1], "--set", "serve_worker_lanes=false"]}
    with Mesh(tmp_path, 2, extra_args=extra) as started:
        started.wait_formed()
        entry, serving = started.agents
        wait_replicas_seen(entry, {"n1": {"probe"}})
        if lanes_on:
            lane_open(entry)
        marker = tmp_path / "reached"
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            body = {"do": "sleep", "s": 2, "marker": str(marker)}
            pending = pool.submit(post, entry, "probe", body)
            wait_for(marker.exists, 10, message="the request to reach the worker")
            serving.send_signal(signal.SIGTERM)
            response = pending.result(timeout=30)

        # n1 left first, then drained: the entry waited for its answer instead of giving up on it.
        assert response.status_code == 200, response.text
        assert response.json() == {"slept": 2}
        assert serving.wait_exit() == 0
