"""The traffic window a node gossips, and the mesh's totals the dashboard draws from it."""

from __future__ import annotations

import math

import pytest

from meshnode.mesh.metadata import NodeMeta
from meshnode.mesh.traffic import BUCKETS_S, MAX_ENTRIES, Totals, Window, mesh_traffic, moved, quantile

EMPTY = (0,) * (len(BUCKETS_S) + 1)


def buckets(**at_bound: int) -> tuple[int, ...]:
    """Per-bucket counts with `n` requests in the bucket whose upper bound is given (ms)."""
    counts = list(EMPTY)
    for bound, count in at_bound.items():
        counts[BUCKETS_S.index(int(bound.removeprefix("ms")) / 1000)] += count
    return tuple(counts)


def test_window_reports_the_counts_since_the_window_began() -> None:
    window = Window(10.0, start=-5.0)
    window.observe(0.0, Totals({"echo": (100, 1, buckets(ms5=100))}, {"peer": 40}))
    report = window.observe(10.0, Totals({"echo": (150, 3, buckets(ms5=140, ms10=10))}, {"peer": 60}))
    assert report["window_s"] == 10.0
    assert report["requests"] == {"echo": [50, 2, 40, 10]}  # trailing empty buckets left off
    assert report["links"] == {"peer": 20}


def test_window_slides_and_never_gets_shorter_than_asked() -> None:
    window = Window(10.0, start=0.0)
    for second in range(1, 30):
        report = window.observe(float(second), Totals({"echo": (second * 5, 0, buckets(ms5=second * 5))}))
    assert 10.0 <= report["window_s"] <= 11.0
    rate = report["requests"]["echo"][0] / report["window_s"]
    assert rate == pytest.approx(5.0)


def test_window_leaves_out_idle_deployments_and_keeps_only_the_busiest() -> None:
    window = Window(1.0, start=0.0)
    names = {f"d{i:02}": (i, 0, buckets(ms5=i)) for i in range(MAX_ENTRIES + 5)}
    report = window.observe(1.0, Totals(names))
    assert len(report["requests"]) == MAX_ENTRIES
    assert "d00" not in report["requests"]  # no request: not reported at all
    assert f"d{MAX_ENTRIES + 4:02}" in report["requests"]


def test_requests_counted_before_the_first_sample_are_in_the_first_window() -> None:
    report = Window(10.0, start=0.0).observe(1.0, Totals({"echo": (60, 0, buckets(ms5=60))}, {"b": 60}))
    assert report["requests"]["echo"][0] == 60 and report["links"] == {"b": 60}


def test_quantile_interpolates_inside_the_bucket_like_prometheus() -> None:
    counts = list(buckets(ms5=50, ms10=50))
    assert quantile(counts, 0.5) == pytest.approx(0.005)
    assert quantile(counts, 0.75) == pytest.approx(0.0075)
    assert quantile(list(EMPTY), 0.5) is None
    only_inf = [0] * len(BUCKETS_S) + [3]
    assert quantile(only_inf, 0.99) == BUCKETS_S[-1]  # past the last bound, the most that can be said


def test_mesh_totals_add_rates_and_read_percentiles_from_the_summed_histograms() -> None:
    fast = {"window_s": 10.0, "requests": {"echo": [100, 0, *buckets(ms5=100)]}, "links": {"b": 50}}
    slow = {"window_s": 5.0, "requests": {"echo": [50, 5, *buckets(ms100=50)]}, "links": {}}
    totals = mesh_traffic([("a", fast), ("b", slow)])
    echo = totals["deployments"]["echo"]
    assert echo["rps"] == pytest.approx(20.0)  # 10/s + 10/s
    assert echo["errors_ps"] == pytest.approx(1.0)
    assert echo["p50_ms"] == pytest.approx(5.0)  # half the mesh's requests are the fast node's
    assert 50 < echo["p95_ms"] <= 100
    assert totals["links"] == [{"from": "a", "to": "b", "rps": 5.0}]


@pytest.mark.parametrize(
    "bad",
    [
        None,
        "x",
        {"window_s": 0, "requests": {"echo": [1, 0]}},
        {"window_s": math.inf, "requests": {"echo": [1, 0]}},
        {"window_s": 1.0, "requests": {"echo": "many"}},
        {"window_s": 1.0, "requests": {"echo": [1.5, 0]}},
        {"window_s": 1.0, "requests": {"echo": [True, 0]}},
        {"window_s": 1.0, "requests": {"echo": [1]}},
        {"window_s": 1.0, "requests": [], "links": {"b": "x"}},
    ],
)
def test_a_peers_malformed_traffic_is_skipped_never_raises(bad: object) -> None:
    assert mesh_traffic([("a", bad)]) == {"deployments": {}, "links": []}


def test_a_peers_huge_counts_are_clamped() -> None:
    totals = mesh_traffic([("a", {"window_s": 1.0, "requests": {"echo": [10**30, -5]}})])
    assert totals["deployments"]["echo"]["rps"] == 10**12
    assert totals["deployments"]["echo"]["errors_ps"] == 0


def test_moved_ignores_a_steady_rate_and_noise_but_not_a_start_stop_or_step() -> None:
    def at(rate: float, errors: float = 0.0) -> dict[str, object]:
        return {"window_s": 10.0, "requests": {"echo": [round(rate * 10), round(errors * 10)]}}

    assert not moved(at(10), at(11))
    assert not moved({}, at(0.1))  # below the noise floor
    assert moved({}, at(5))
    assert moved(at(5), {})
    assert moved(at(10), at(20))
    assert moved(at(10), at(10, errors=2))


def test_traffic_rides_in_node_metadata_and_is_dropped_first_when_too_big() -> None:
    traffic = {"window_s": 10.0, "requests": {"echo": [5, 0, 5]}, "links": {"b": 5}}
    meta = NodeMeta(name="a", traffic=traffic)
    assert NodeMeta.from_wire(meta.to_wire()).traffic == traffic
    assert NodeMeta.from_wire({"name": "old"}).traffic == {}  # from a node of an older version
    tight = meta.encoded_size() - 1
    assert meta.fit(tight).traffic == {}
