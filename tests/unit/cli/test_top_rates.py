"""``top_rates``: rates, errors and latencies from two scrapes of the nodes' request counters."""

from __future__ import annotations

import math

import pytest

from meshnode.cli.top_rates import Counters, Traffic, measure, node_rps, parse, quantile, traffic

SCRAPE = """\
# HELP meshnode_requests_total Requests this node answered.
# TYPE meshnode_requests_total counter
meshnode_requests_total{code="200",deployment="echo"} 90.0
meshnode_requests_total{code="503",deployment="echo"} 10.0
meshnode_requests_total{code="404",deployment="_unknown"} 7.0
# TYPE meshnode_request_duration_seconds histogram
meshnode_request_duration_seconds_bucket{deployment="echo",le="0.01"} 50.0
meshnode_request_duration_seconds_bucket{deployment="echo",le="0.1"} 100.0
meshnode_request_duration_seconds_bucket{deployment="echo",le="+Inf"} 100.0
meshnode_request_duration_seconds_count{deployment="echo"} 100.0
meshnode_request_duration_seconds_sum{deployment="echo"} 2.5
# TYPE meshnode_member_changes_total counter
meshnode_member_changes_total{status="dead"} 3.0
"""


def counters(at: float, ok: float, failed: float, fast: float, total: float, seconds: float) -> Counters:
    """Echo's numbers: answered by code, then the buckets at 10 ms, 100 ms and +Inf, then the sum."""
    return Counters(
        at,
        {"echo": {"200": ok, "500": failed}},
        {"echo": ((0.01, fast), (0.1, total), (math.inf, total))},
        {"echo": seconds},
    )


def test_parse_reads_the_request_families_and_leaves_the_rest() -> None:
    read = parse(SCRAPE, at=5.0)
    assert read.at == 5.0
    assert read.requests == {"echo": {"200": 90.0, "503": 10.0}}  # no series for made-up names
    assert read.buckets == {"echo": ((0.01, 50.0), (0.1, 100.0), (math.inf, 100.0))}
    assert read.seconds == {"echo": 2.5}


def test_parse_refuses_what_is_not_metrics() -> None:
    with pytest.raises(ValueError):
        parse("<html>a login page</html>\n", at=0.0)


def test_traffic_sums_the_nodes_deltas_each_over_its_own_interval() -> None:
    before = {"a": counters(0.0, 10, 0, 10, 10, 0.05), "b": counters(1.0, 0, 0, 0, 0, 0.0)}
    after = {
        "a": counters(2.0, 28, 2, 20, 30, 0.25),  # 20 requests in 2 s, 2 failed
        "b": counters(5.0, 40, 0, 40, 40, 0.2),  # 40 in 4 s
        "c": counters(5.0, 99, 0, 99, 99, 1.0),  # no earlier scrape: not counted
    }
    echo = traffic(before, after)["echo"]
    assert echo.rps == pytest.approx(20 / 2 + 40 / 4)
    assert echo.errors_per_s == pytest.approx(2 / 2)
    assert echo.mean_ms == pytest.approx(1000 * (0.2 + 0.2) / 60)
    # 50 of the 60 under 10 ms: the median is inside the first bucket, the 99th in the second.
    assert echo.p50_ms == pytest.approx(10 * 30 / 50)
    assert echo.p99_ms is not None and 10 < echo.p99_ms <= 100


def test_a_node_that_restarted_counts_from_zero() -> None:
    before = {"a": counters(0.0, 1000, 0, 1000, 1000, 10.0)}
    after = {"a": counters(2.0, 6, 0, 6, 6, 0.06)}
    assert traffic(before, after)["echo"] == Traffic(
        rps=3.0,
        errors_per_s=0.0,
        mean_ms=pytest.approx(10.0),
        p50_ms=pytest.approx(5.0),
        p99_ms=pytest.approx(9.9),
    )


def test_an_idle_deployment_has_a_zero_rate_and_no_latency() -> None:
    same = counters(0.0, 5, 0, 5, 5, 0.01)
    idle = traffic({"a": same}, {"a": counters(2.0, 5, 0, 5, 5, 0.01)})["echo"]
    assert (idle.rps, idle.errors_per_s, idle.mean_ms, idle.p50_ms, idle.p99_ms) == (
        0.0,
        0.0,
        None,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0.3, 0.06),  # rank 3 of the 5 in (0, 0.1]: linear inside it
        (0.5, 0.1),
        (0.7, 0.1 + (0.2 - 0.1) * 2 / 3),  # rank 7: the 2nd of the 3 in (0.1, 0.2]
        (0.99, 0.2),  # in the +Inf bucket: the highest finite bound
    ],
)
def test_quantile_interpolates_inside_the_bucket_as_prometheus(q: float, expected: float) -> None:
    buckets = [(0.1, 5.0), (0.2, 8.0), (math.inf, 10.0)]
    assert quantile(q, buckets) == pytest.approx(expected)


def test_quantile_of_nothing_is_none() -> None:
    assert quantile(0.5, []) is None
    assert quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]) is None


def test_node_rps_and_measure_need_two_scrapes() -> None:
    first = {"a": counters(0.0, 10, 0, 10, 10, 0.1)}
    second = {"a": counters(4.0, 30, 0, 30, 30, 0.3), "b": counters(4.0, 1, 0, 1, 1, 0.0)}
    assert node_rps(None, second["a"]) is None
    assert node_rps(first["a"], second["a"]) == 5.0
    assert measure({}, second) is None
    measured = measure(first, second)
    assert measured is not None
    assert (measured.seconds, measured.nodes) == (4.0, {"a": 5.0})
    assert measured.deployments["echo"].rps == 5.0
