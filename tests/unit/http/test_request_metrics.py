"""Per deployment request metrics: codes, bounded labels, histograms, in flight; the predict lane counts."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from meshnode.dataplane.forward import Served
from meshnode.errors import NotFound
from meshnode.http.predict import PredictLane, PredictLimits
from meshnode.http.request_metrics import BUCKETS_S, MAX_DEPLOYMENTS, OTHER, UNKNOWN, RequestMeter
from meshnode.mesh.envelope import Call, Chunk, Envelope, Reply

DEPLOYMENTS = {"echo", "sd"}


class _Families(Collector):
    def __init__(self, meter: RequestMeter) -> None:
        self._meter = meter

    def collect(self) -> Iterator[object]:  # type: ignore[override]
        return self._meter.families()


def samples(meter: RequestMeter) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the meter's families, as the text format says it, by name and labels."""
    registry = CollectorRegistry()
    registry.register(_Families(meter))
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_requests_count_by_deployment_and_code_with_a_cumulative_histogram() -> None:
    now = [0.0]
    meter = RequestMeter(DEPLOYMENTS.__contains__, clock=lambda: now[0])
    for code, seconds in ((200, 0.003), (200, 0.2), (503, 7.0), (200, 1000.0)):
        series = meter.begin("echo")
        meter.end(series, code, seconds)
    held = meter.begin("sd")
    got = samples(meter)
    assert got[("meshnode_requests_total", (("code", "200"), ("deployment", "echo")))] == 3
    assert got[("meshnode_requests_total", (("code", "503"), ("deployment", "echo")))] == 1
    assert got[("meshnode_requests_in_flight", (("deployment", "sd"),))] == 1
    assert got[("meshnode_requests_in_flight", (("deployment", "echo"),))] == 0
    bucket = "meshnode_request_duration_seconds_bucket"
    assert got[(bucket, (("deployment", "echo"), ("le", "0.005")))] == 1
    assert got[(bucket, (("deployment", "echo"), ("le", "0.25")))] == 2
    assert got[(bucket, (("deployment", "echo"), ("le", "10.0")))] == 3
    assert got[(bucket, (("deployment", "echo"), ("le", "+Inf")))] == 4
    assert got[("meshnode_request_duration_seconds_count", (("deployment", "echo"),))] == 4
    assert abs(got[("meshnode_request_duration_seconds_sum", (("deployment", "echo"),))] - 1007.203) < 1e-9
    assert (
        len([key for key in got if key[0] == bucket and ("deployment", "echo") in key[1]])
        == len(BUCKETS_S) + 1
    )
    meter.end(held, 200, 0.1)
    assert samples(meter)[("meshnode_requests_in_flight", (("deployment", "sd"),))] == 0


def test_names_no_deployment_has_share_one_series_and_the_number_of_series_is_bounded() -> None:
    meter = RequestMeter(lambda name: not name.startswith("made-up"))
    for i in range(50):
        meter.end(meter.begin(f"made-up-{i}"), 404, 0.001)
    for i in range(MAX_DEPLOYMENTS + 10):
        meter.end(meter.begin(f"d{i}"), 200, 0.001)
    got = samples(meter)
    assert got[("meshnode_requests_total", (("code", "404"), ("deployment", UNKNOWN)))] == 50
    deployments = {dict(labels)["deployment"] for name, labels in got if name == "meshnode_requests_total"}
    assert len(deployments) == MAX_DEPLOYMENTS + 1  # the cap counts the unknown series too, plus OTHER
    assert OTHER in deployments
    assert got[("meshnode_requests_total", (("code", "200"), ("deployment", OTHER)))] == 11


class _FakeServe:
    """A forwarder that knows `DEPLOYMENTS`: echoes the body, or streams it in two chunks."""

    async def __call__(self, call: Call, hint: str | None = None, *, affinity: str | None = None) -> Served:
        if call.deployment not in DEPLOYMENTS:
            raise NotFound(f"no deployment named {call.deployment!r} in the mesh")

        async def rest() -> AsyncGenerator[Envelope, None]:
            if call.stream:
                yield Chunk(call.request_id, 1, "two")
            yield Reply(call.request_id, call.body, "application/json")

        first: Envelope = (
            Chunk(call.request_id, 0, "one")
            if call.stream
            else Reply(call.request_id, call.body, "application/json")
        )
        return Served(first, rest(), ("n0",), 1)


async def test_the_predict_lane_counts_each_answer_under_its_deployment_and_code() -> None:
    meter = RequestMeter(DEPLOYMENTS.__contains__)
    lane = PredictLane(FastAPI(), _FakeServe(), PredictLimits(5.0, 1000), meter)
    transport = httpx.ASGITransport(app=lane)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.post("/v1/predict/echo", json={"x": 1})).status_code == 200
        assert (await client.post("/v1/predict/echo", content=b"not json")).status_code == 400
        assert (await client.post("/v1/predict/nope", json={})).status_code == 404
        assert (await client.post("/v1/predict/nope-2", content=b"{")).status_code == 400
        assert (await client.get("/v1/predict/echo")).status_code == 405
        streamed = await client.post("/v1/predict/sd", json={"stream": True})
        assert streamed.status_code == 200, streamed.text
        assert streamed.text.splitlines() == ["one", "two"]
    got = samples(meter)
    total = "meshnode_requests_total"
    assert got[(total, (("code", "200"), ("deployment", "echo")))] == 1
    assert got[(total, (("code", "400"), ("deployment", "echo")))] == 1
    assert got[(total, (("code", "405"), ("deployment", "echo")))] == 1
    assert got[(total, (("code", "404"), ("deployment", UNKNOWN)))] == 1
    assert got[(total, (("code", "400"), ("deployment", UNKNOWN)))] == 1
    assert got[(total, (("code", "200"), ("deployment", "sd")))] == 1
    assert got[("meshnode_time_to_first_chunk_seconds_count", (("deployment", "sd"),))] == 1
    assert ("meshnode_time_to_first_chunk_seconds_count", (("deployment", "echo"),)) not in got
    assert all(value == 0 for (name, _), value in got.items() if name == "meshnode_requests_in_flight")
