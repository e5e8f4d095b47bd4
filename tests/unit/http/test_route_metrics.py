"""Every HTTP request other than predict, counted by route template, method and code: bounded labels."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from meshnode.http.route_metrics import OTHER_METHOD, UNMATCHED, RouteMeter


class _Families(Collector):
    def __init__(self, meter: RouteMeter) -> None:
        self._meter = meter

    def collect(self) -> Iterator[object]:  # type: ignore[override]
        return self._meter.families()


def samples(meter: RouteMeter) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    registry = CollectorRegistry()
    registry.register(_Families(meter))
    text = generate_latest(registry).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def app() -> FastAPI:
    built = FastAPI()

    @built.get("/v1/jobs/{job_id}")
    async def job(job_id: str) -> dict[str, str]:
        return {"id": job_id}

    return built


def key(method: str, route: str, code: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return ("meshnode_http_requests_total", frozenset({("method", method), ("route", route), ("code", code)}))


async def test_requests_count_under_their_route_template_and_made_up_paths_share_one_series() -> None:
    meter = RouteMeter(app())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=meter), base_url="http://test") as client:
        for i in range(3):
            assert (await client.get(f"/v1/jobs/j{i}")).status_code == 200
        for i in range(4):
            assert (await client.get(f"/made-up/{i}")).status_code == 404
        assert (await client.post("/v1/jobs/j0")).status_code == 405
        assert (await client.request("BREW", "/v1/jobs/j0")).status_code == 405
    got = samples(meter)
    assert got[key("GET", "/v1/jobs/{job_id}", "200")] == 3
    assert got[key("GET", UNMATCHED, "404")] == 4
    assert got[key("POST", "/v1/jobs/{job_id}", "405")] == 1
    assert got[key(OTHER_METHOD, "/v1/jobs/{job_id}", "405")] == 1
    routes = {dict(labels).get("route") for name, labels in got if name.startswith("meshnode_http")}
    assert routes == {"/v1/jobs/{job_id}", UNMATCHED}
    count = ("meshnode_http_request_duration_seconds_count", frozenset({("route", "/v1/jobs/{job_id}")}))
    assert got[count] == 5
