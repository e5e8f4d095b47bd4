"""The WebSocket predict route on real agents, through a hop, with the tiny diffusion pipeline.

``host`` runs ``meshnode.apps.text_to_image:TextToImage`` (the tiny random-weight pipeline it builds
in its data dir) and ``meshnode.apps.stream:Stream``; every socket enters at ``entry``, which hosts
nothing, so each progress report, chunk and answer crosses the data plane. The client is the
``websockets`` package's own. Skipped where the torch extra is absent.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.integration.agents import AgentProcess, Mesh, wait_for

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
from PIL import Image  # after the skip: Pillow comes with the torch extra

T2I = "t2i"
DEPLOY = [
    *("--deploy", f"{T2I}=meshnode.apps.text_to_image:TextToImage"),
    *("--deploy", "stream=meshnode.apps.stream:Stream"),
]
# Two agents and two workers (one importing torch and diffusers) start together on two busy cores.
READY_TIMEOUT_S = 180.0
# A whole diffusion at 128x128: 12 steps take about 3 s here, and up to ten times that under CI.
ANSWER_TIMEOUT_S = 300.0
EVENT = dict[str, Any]
# A change of a replica's queue reaches another node's view within this (local profile).
GOSSIP_S = 5.0


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with Mesh(tmp_path_factory.mktemp("ws"), 2, extra_args={0: DEPLOY}) as mesh:
        host, entry = mesh.agents
        for name in (T2I, "stream"):
            wait_for(functools.partial(ready, entry, name), READY_TIMEOUT_S, 0.2, host.describe)
        yield mesh


def ready(agent: AgentProcess, name: str) -> bool:
    response = agent.get(f"/v1/deployments/{name}")
    return response.status_code == 200 and response.json().get("ready") == 1


def open_socket(agent: AgentProcess, deployment: str, query: str = "") -> ClientConnection:
    # max_size=None: this client takes any answer; the server's own limits are what is tested.
    return connect(f"ws://{agent.http}/v1/ws/predict/{deployment}{query}", max_size=None, open_timeout=30)


def session(
    agent: AgentProcess, deployment: str, body: object, query: str = ""
) -> tuple[list[tuple[float, EVENT]], int | None]:
    """Send `body`; every event with the time it arrived, until the server closes, and its code."""
    events: list[tuple[float, EVENT]] = []
    with open_socket(agent, deployment, query) as socket:
        socket.send(body if isinstance(body, str | bytes) else json.dumps(body))
        try:
            while True:
                raw = socket.recv(timeout=ANSWER_TIMEOUT_S)
                events.append((time.monotonic(), json.loads(raw)))
        except ConnectionClosed as closed:
            return events, closed.rcvd.code if closed.rcvd is not None else None


def answered(agent: AgentProcess, deployment: str, code: str) -> float:
    """meshnode_requests_total of `deployment` with status `code` on `agent`."""
    for family in text_string_to_metric_families(agent.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "meshnode_requests_total" and sample.labels == {
                "deployment": deployment,
                "code": code,
            }:
                return sample.value
    return 0.0


def picture(seed: int, side: int, steps: int) -> dict[str, Any]:
    return {"prompt": "a red fox in the snow", "seed": seed, "steps": steps, "height": side, "width": side}


def replica_queue(agent: AgentProcess, host: AgentProcess) -> int:
    members = {m["name"]: m for m in agent.view()["members"]}
    return int(members[host.name]["replicas"][T2I]["queue"])


def test_progress_events_arrive_spread_in_time_through_a_hop(mesh: Mesh) -> None:
    host, entry = mesh.agents
    sent = time.monotonic()
    events, code = session(entry, T2I, picture(seed=3, side=128, steps=12))
    *progress, (answered, result) = events
    assert code == 1000 and result["type"] == "result", events[-1]
    assert result["route"] == [entry.name, host.name]
    steps = [event["step"] for _, event in progress]
    assert all(event["type"] == "progress" and event["total"] == 12 for _, event in progress)
    # Each step reported, throttled to 20 a second: a 128x128 step takes far longer than 50 ms here.
    assert steps == sorted(set(steps)) and steps[-1] == 12 and len(steps) >= 6, steps
    # Spread over the run, not all at once: every third of the time between the first report and
    # the last holds a report, and the reports span most of the run.
    times = [at for at, _ in progress]
    first, last = times[0], times[-1]
    thirds = {min(2, int(3 * (at - first) / (last - first))) for at in times}
    assert thirds == {0, 1, 2}, [round(at - sent, 3) for at in times]
    assert last - first > 0.5 * (answered - sent), (last - first, answered - sent)
    for _, event in progress:
        preview = Image.open(io.BytesIO(base64.b64decode(event["preview"])))
        assert preview.format == "JPEG" and max(preview.size) <= 64


def test_the_result_is_what_predict_answers_for_the_same_seed(mesh: Mesh) -> None:
    _, entry = mesh.agents
    body = picture(seed=7, side=64, steps=8)
    events, code = session(entry, T2I, body)
    assert code == 1000
    result = events[-1][1]
    answer = httpx.post(f"{entry.url}/v1/predict/{T2I}", json=body, timeout=ANSWER_TIMEOUT_S)
    assert answer.status_code == 200, answer.text
    assert result["data"] == answer.json()
    assert set(answer.json()) == {"content_type", "base64"}  # predict's own JSON: no progress in it


def test_a_predictor_that_reports_progress_answers_plain_predict_as_before(mesh: Mesh) -> None:
    _, entry = mesh.agents
    body = picture(seed=11, side=64, steps=4)
    png = httpx.post(
        f"{entry.url}/v1/predict/{T2I}", json=body, headers={"Accept": "image/png"}, timeout=ANSWER_TIMEOUT_S
    )
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (64, 64)
    as_json = httpx.post(f"{entry.url}/v1/predict/{T2I}", json=body, timeout=ANSWER_TIMEOUT_S).json()
    assert base64.b64decode(as_json["base64"]) == png.content


def test_a_stream_comes_as_chunk_events_then_a_null_result(mesh: Mesh) -> None:
    host, entry = mesh.agents
    body = {"text": "life", "interval_s": 0.05, "stream": True}
    before = answered(entry, "stream", "200")
    events, code = session(entry, "stream", body)
    kinds = [event["type"] for _, event in events]
    assert kinds == ["chunk"] * 5 + ["result"] and code == 1000
    # Counted on /metrics with predict's requests, as the entry node answered it.
    wait_for(
        lambda: answered(entry, "stream", "200") == before + 1, 10, message="the socket's request counted"
    )
    whole = httpx.post(f"{entry.url}/v1/predict/stream", json={**body, "stream": False}, timeout=60).json()
    assert [event["data"] for _, event in events[:-1]] == whole.split("\n")
    assert events[-1][1]["data"] is None and events[-1][1]["route"] == [entry.name, host.name]


@pytest.mark.parametrize(
    ("deployment", "body", "kind", "code"),
    [
        pytest.param(T2I, "{not json", "bad_request", 4400, id="bad-json"),
        pytest.param(T2I, "[1]", "unprocessable", 4422, id="not-an-object"),
        pytest.param("nowhere", picture(1, 64, 1), "not_found", 4404, id="unknown-deployment"),
        # The predictor's own refusal, from across the hop.
        pytest.param(T2I, {"prompt": "a fox", "steps": 0}, "unprocessable", 4422, id="bad-field"),
        # Over the 16 MiB request limit, under the protocol's 32 MiB: read, and refused clearly.
        pytest.param(T2I, json.dumps({"prompt": "x" * (17 << 20)}), "too_large", 4413, id="oversized"),
    ],
)
def test_bad_input_gets_an_error_event_and_a_close_code(
    mesh: Mesh, deployment: str, body: object, kind: str, code: int
) -> None:
    _, entry = mesh.agents
    events, closed_with = session(entry, deployment, body)
    assert [event["type"] for _, event in events] == ["error"], events
    error = events[0][1]["error"]
    assert error["type"] == kind and error["message"] and error["request_id"]
    assert closed_with == code
    assert entry.get("/health").status_code == 200  # and the node is none the worse
    status = str(code - 4000)
    assert answered(entry, deployment if status != "404" else "_unknown", status) >= 1


def test_a_message_past_the_protocol_limit_is_refused_unread(mesh: Mesh) -> None:
    _, entry = mesh.agents
    events, code = session(entry, T2I, b"x" * (33 << 20))
    assert events == [] and code == 1009  # message too big
    assert entry.get("/health").status_code == 200


def test_closing_the_socket_mid_run_stops_the_work(mesh: Mesh) -> None:
    host, entry = mesh.agents
    steps = 50
    with open_socket(entry, T2I, "?timeout=900") as socket:
        socket.send(json.dumps(picture(seed=5, side=128, steps=steps)))
        reports = []
        for _ in range(3):
            event = json.loads(socket.recv(timeout=ANSWER_TIMEOUT_S))
            assert event["type"] == "progress", event
            reports.append((time.monotonic(), event["step"]))
    # The socket is closed. What the rest of the run would have held the model for: the time a
    # step took between the reports, times the steps left.
    (first_at, first_step), (last_at, last_step) = reports[0], reports[-1]
    left_s = (steps - last_step) * (last_at - first_at) / (last_step - first_step)
    # The entry learns the replica's queue by gossip (at most a second apart on the local profile):
    # on a machine fast enough to leave less than that, the short request below is the evidence.
    seen_within_s = max(left_s / 2, GOSSIP_S)
    wait_for(lambda: replica_queue(entry, host) == 0, seen_within_s, 0.05, lambda: str(entry.view()))
    # The replica runs one request at a time: a short one answers soon only if the cancelled
    # diffusion stopped at its next step instead of running on to its 50th.
    started = time.monotonic()
    short = httpx.post(f"{entry.url}/v1/predict/{T2I}", json=picture(1, 64, 1), timeout=ANSWER_TIMEOUT_S)
    short_s = time.monotonic() - started
    assert short.status_code == 200, short.text
    assert short_s < left_s / 2, (short_s, left_s)


def test_the_client_in_the_docs_works_as_printed(
    mesh: Mesh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, entry = mesh.agents
    doc = (Path(__file__).parents[3] / "docs" / "apps.md").read_text()
    (code,) = [block for block in re.findall(r"```python\n(.*?)```", doc, re.DOTALL) if "/v1/ws/" in block]
    monkeypatch.chdir(tmp_path)  # it writes fox.png where it runs
    exec(compile(code.replace("127.0.0.1:8470", entry.http), "docs/apps.md", "exec"), {})
    assert "step 20/20" in capsys.readouterr().out
    with Image.open(tmp_path / "fox.png") as picture_file:
        assert (picture_file.format, picture_file.size) == ("PNG", (64, 64))
