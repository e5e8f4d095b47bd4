"""Every HTTP request other than predict, by route: counts by method and status code, durations.

``RouteMeter`` wraps the FastAPI app (inside the predict lane, which has its own per deployment
numbers in ``request_metrics.py``), so the OpenAI routes, jobs, deployments, the mesh view and the
rest each get ``meshnode_http_requests_total{method,route,code}`` and a duration histogram.

The ``route`` label is the route's template (``/v1/jobs/{job_id}``), read from the scope Starlette's
router fills in, never the raw path: a client's made-up paths all count as ``UNMATCHED``, and
methods outside the standard ones as ``OTHER_METHOD``, so the label sets stay bounded by the routes
the node has. O(1) per request: a status read from the response's start, two dict updates and a
bisect. Requests the gate refuses (401, 403) never get here; ``meshnode_http_refused_total`` counts
them. WebSockets are not counted here.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .request_metrics import BUCKETS_S, CLIENT_CLOSED, RequestMeter, cumulative

__all__ = ["OTHER_METHOD", "UNMATCHED", "RouteMeter"]

UNMATCHED = "_unmatched"  # a path no route serves (its answer is a 404)
OTHER_METHOD = "_other"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RouteMeter:
    """ASGI wrapper counting each HTTP request by route template, method and status code."""

    def __init__(
        self,
        app: ASGIApp,
        clock: Callable[[], float] = time.perf_counter,
        deployments: RequestMeter | None = None,
    ) -> None:
        self._app = app
        self._clock = clock
        # Requests a route served for a deployment (the OpenAI routes name it in the scope's state)
        # also count with predict's, per deployment.
        self._deployments = deployments
        self._counts: dict[tuple[str, str, int], int] = {}
        # Per route: per-bucket counts (cumulated at scrape) and the sum of seconds.
        self._durations: dict[str, tuple[list[int], list[float]]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = self._clock()
        code = CLIENT_CLOSED

        async def noting_status(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, noting_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            method = scope.get("method", "")
            seconds = self._clock() - started
            self._count(method if method in _METHODS else OTHER_METHOD, route, code, seconds)
            deployment = scope.get("state", {}).get("deployment")
            if self._deployments is not None and isinstance(deployment, str):
                self._deployments.record(deployment, code, seconds)

    def _count(self, method: str, route: str, code: int, seconds: float) -> None:
        key = (method, route, code)
        self._counts[key] = self._counts.get(key, 0) + 1
        durations = self._durations.get(route)
        if durations is None:
            durations = self._durations[route] = ([0] * (len(BUCKETS_S) + 1), [0.0])
        durations[0][bisect.bisect_left(BUCKETS_S, seconds)] += 1
        durations[1][0] += seconds

    def families(self) -> Iterator[Metric]:
        """The Prometheus families, built now."""
        requests = CounterMetricFamily(
            "meshnode_http_requests",
            "HTTP requests other than predict this node answered, by method, route template and status "
            f"code (route {UNMATCHED}: no route; code {CLIENT_CLOSED}: the client left first).",
            labels=["method", "route", "code"],
        )
        for (method, route, code), count in sorted(self._counts.items()):
            requests.add_metric([method, route, str(code)], count)
        duration = HistogramMetricFamily(
            "meshnode_http_request_duration_seconds",
            "Time to answer HTTP requests other than predict, by route template (a stream: until it ends).",
            labels=["route"],
        )
        for route, (buckets, total) in sorted(self._durations.items()):
            duration.add_metric([route], cumulative(buckets), total[0])
        yield from (requests, duration)
