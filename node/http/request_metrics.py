"""Requests this node took over HTTP, per deployment: counts by status code, durations, in flight.

Predict (``predict.py``), the WebSocket predict route (``ws.py``) and the OpenAI routes (through
``route_metrics.py``, once the route named its deployment) all count here. ``RequestMeter`` is
updated on the predict lane's hot path, so each request costs
a dict lookup, a few integer additions and one bisect over a fixed list of bucket bounds: O(1) per
request whatever the traffic. The Prometheus families are built only at scrape time
(``families``), from plain numbers, as the rest of ``/metrics`` is (``metrics.py``).

Label sets are bounded: a ``deployment`` label is only ever a name the mesh declared (``known``);
any other name a client makes up (its answer is a 404, or a 400 before it is even looked up) is
counted under ``UNKNOWN``, and past ``MAX_DEPLOYMENTS`` names the rest share ``OTHER``. Codes are
HTTP status codes, plus ``499`` (nginx's "client closed request") for a client that went away
before its answer started.

These are the entry node's numbers: a request forwarded to a peer's replica counts once, here,
where the client sent it; a ``sum()`` over nodes counts every request once.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

# The duration buckets are the ones gossiped traffic uses (``mesh/traffic.py``), so the dashboard's
# percentiles and Prometheus' agree.
from ..mesh.traffic import BUCKETS_S, ERROR_CODE_MIN

__all__ = [
    "BUCKETS_S",
    "CLIENT_CLOSED",
    "MAX_DEPLOYMENTS",
    "OTHER",
    "UNKNOWN",
    "RequestMeter",
    "Series",
    "cumulative",
]

UNKNOWN = "_unknown"  # names no deployment of the mesh has: one series for all of them
OTHER = "_other"  # names past MAX_DEPLOYMENTS
# A mesh with more deployments than this is not what meshnode is for; the bound keeps a scrape small.
MAX_DEPLOYMENTS = 1000
CLIENT_CLOSED = 499


def _empty_buckets() -> list[int]:
    return [0] * (len(BUCKETS_S) + 1)  # the last one is +Inf


@dataclass
class Series:
    """One deployment's numbers; buckets hold per-bucket counts, made cumulative at scrape."""

    codes: dict[int, int] = field(default_factory=dict)
    in_flight: int = 0
    duration_buckets: list[int] = field(default_factory=_empty_buckets)
    duration_sum_s: float = 0.0
    first_chunk_buckets: list[int] = field(default_factory=_empty_buckets)
    first_chunk_sum_s: float = 0.0

    def first_chunk(self, seconds: float) -> None:
        """A stream's first chunk left `seconds` after its request arrived."""
        self.first_chunk_buckets[bisect.bisect_left(BUCKETS_S, seconds)] += 1
        self.first_chunk_sum_s += seconds


class RequestMeter:
    """Per deployment counters of the requests this node answered (see the module docstring)."""

    def __init__(self, known: Callable[[str], bool], clock: Callable[[], float] = time.perf_counter) -> None:
        self._known = known
        self.clock = clock
        self._series: dict[str, Series] = {}

    def begin(self, deployment: str) -> Series:
        """A request for `deployment` arrived: its series, with one more in flight."""
        series = self._series.get(deployment)
        if series is None:
            series = self._series_for(deployment)
        series.in_flight += 1
        return series

    def end(self, series: Series, code: int, seconds: float) -> None:
        """The request of `series` ended with status `code` after `seconds`."""
        series.in_flight -= 1
        series.codes[code] = series.codes.get(code, 0) + 1
        series.duration_buckets[bisect.bisect_left(BUCKETS_S, seconds)] += 1
        series.duration_sum_s += seconds

    def record(self, deployment: str, code: int, seconds: float) -> None:
        """A request for `deployment` counted once it ended (one not seen in flight)."""
        self.end(self.begin(deployment), code, seconds)

    def totals(self) -> dict[str, tuple[int, int, tuple[int, ...]]]:
        """Per deployment the mesh declared: (answered, errors, per-bucket counts) since the start."""
        totals = {}
        for name, series in self._series.items():
            if name in (UNKNOWN, OTHER):
                continue
            answered = sum(series.codes.values())
            errors = sum(count for code, count in series.codes.items() if code >= ERROR_CODE_MIN)
            totals[name] = (answered, errors, tuple(series.duration_buckets))
        return totals

    def _series_for(self, deployment: str) -> Series:
        if not self._known(deployment):
            label = UNKNOWN
        elif len(self._series) >= MAX_DEPLOYMENTS:
            label = OTHER
        else:
            label = deployment
        series = self._series.get(label)
        if series is None:
            series = self._series[label] = Series()
        return series

    def families(self) -> Iterator[Metric]:
        """The Prometheus families of every series, built now."""
        requests = CounterMetricFamily(
            "meshnode_requests",
            "Predict requests this node answered, by deployment and HTTP status code "
            f"({CLIENT_CLOSED}: the client left first; deployment {UNKNOWN}: no such deployment).",
            labels=["deployment", "code"],
        )
        in_flight = GaugeMetricFamily(
            "meshnode_requests_in_flight",
            "Predict requests this node is answering now, by deployment.",
            labels=["deployment"],
        )
        duration = HistogramMetricFamily(
            "meshnode_request_duration_seconds",
            "Time from a predict request's arrival to the end of its answer (a stream's last chunk).",
            labels=["deployment"],
        )
        first_chunk = HistogramMetricFamily(
            "meshnode_time_to_first_chunk_seconds",
            "Time from a streamed predict request's arrival to its first chunk.",
            labels=["deployment"],
        )
        for name, series in sorted(self._series.items()):
            for code, count in sorted(series.codes.items()):
                requests.add_metric([name, str(code)], count)
            in_flight.add_metric([name], series.in_flight)
            duration.add_metric([name], cumulative(series.duration_buckets), series.duration_sum_s)
            if any(series.first_chunk_buckets):
                first_chunk.add_metric(
                    [name], cumulative(series.first_chunk_buckets), series.first_chunk_sum_s
                )
        yield from (requests, in_flight, duration, first_chunk)


def cumulative(counts: list[int]) -> list[tuple[str, float]]:
    """Per-bucket counts as Prometheus' cumulative ``le`` buckets, +Inf last."""
    out, total = [], 0
    for bound, count in zip((*(repr(b) for b in BUCKETS_S), "+Inf"), counts, strict=True):
        total += count
        out.append((bound, float(total)))
    return out
