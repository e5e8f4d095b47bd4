"""Request rates, errors and latencies for ``meshnode top``, from two scrapes of each node's ``/metrics``.

Every node counts the requests clients sent to it, per deployment: ``meshnode_requests_total``
by status code and the ``meshnode_request_duration_seconds`` histogram (``node/http/request_metrics.py``).
A request is counted once, at the node it entered, so the sum over nodes is the mesh's traffic
(docs/observability.md). ``parse`` reads one scrape into ``Counters``; ``traffic`` turns two
scrapes of every node into ``Traffic`` per deployment over the time between them: requests and
errors (status 500 and up) per second, the mean duration, and the median and 99th percentile
interpolated inside the summed buckets as Prometheus' ``histogram_quantile`` does. Pure: the scrape
times come in with the text.

A counter that went down belongs to a node that restarted: its new value is the whole delta.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["Counters", "Measured", "Traffic", "measure", "node_rps", "parse", "quantile", "traffic"]

REQUESTS = "meshnode_requests"
DURATION = "meshnode_request_duration_seconds"
# Answers at or above this status are the mesh's failures (4xx are the client's own).
ERROR_CODE_MIN = 500
# Label values the node uses for names no deployment has (``request_metrics.UNKNOWN``, ``OTHER``).
_NOT_DEPLOYMENTS = ("_unknown", "_other")


@dataclass(frozen=True)
class Counters:
    """One node's cumulative request numbers at one scrape (``at``: a monotonic time, seconds)."""

    at: float
    # Deployment -> status code -> requests answered.
    requests: dict[str, dict[str, float]] = field(default_factory=dict)
    # Deployment -> (upper bound, cumulative count) per bucket, +Inf last.
    buckets: dict[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    # Deployment -> total seconds of the requests counted in its histogram.
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Traffic:
    """A deployment's requests over an interval, summed over the nodes they entered."""

    rps: float
    errors_per_s: float
    mean_ms: float | None
    p50_ms: float | None
    p99_ms: float | None


def parse(text: str, at: float) -> Counters:
    """The request counters of one ``/metrics`` scrape taken at `at`; other families are skipped.

    Raises ``ValueError`` for text that is not Prometheus' exposition format.
    """
    from prometheus_client.parser import text_string_to_metric_families

    requests: dict[str, dict[str, float]] = {}
    buckets: dict[str, list[tuple[float, float]]] = {}
    seconds: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in (REQUESTS, DURATION):
            continue
        for sample in family.samples:
            deployment = sample.labels.get("deployment")
            if deployment is None or deployment in _NOT_DEPLOYMENTS:
                continue
            if sample.name == f"{REQUESTS}_total":
                code = sample.labels.get("code", "?")
                requests.setdefault(deployment, {})[code] = float(sample.value)
            elif sample.name == f"{DURATION}_bucket":
                bound = float(sample.labels.get("le", "+Inf"))
                buckets.setdefault(deployment, []).append((bound, float(sample.value)))
            elif sample.name == f"{DURATION}_sum":
                seconds[deployment] = float(sample.value)
    ordered = {name: tuple(sorted(pairs)) for name, pairs in buckets.items()}
    return Counters(at, requests, ordered, seconds)


def traffic(before: Mapping[str, Counters], after: Mapping[str, Counters]) -> dict[str, Traffic]:
    """Per deployment, the traffic between two scrapes of each node (by node id) found in both."""
    rps: dict[str, float] = {}
    errors: dict[str, float] = {}
    counted: dict[str, float] = {}
    seconds: dict[str, float] = {}
    summed: dict[str, dict[float, float]] = {}
    for node, new in after.items():
        old = before.get(node)
        if old is None or new.at <= old.at:
            continue
        elapsed = new.at - old.at
        for name, codes in new.requests.items():
            was = old.requests.get(name, {})
            for code, count in codes.items():
                delta = _delta(was.get(code, 0.0), count)
                rps[name] = rps.get(name, 0.0) + delta / elapsed
                if code.isdigit() and int(code) >= ERROR_CODE_MIN:
                    errors[name] = errors.get(name, 0.0) + delta / elapsed
        for name, pairs in new.buckets.items():
            was_buckets = dict(old.buckets.get(name, ()))
            restarted = any(count < was_buckets.get(bound, 0.0) for bound, count in pairs)
            into = summed.setdefault(name, {})
            for bound, count in pairs:
                into[bound] = into.get(bound, 0.0) + (
                    count if restarted else count - was_buckets.get(bound, 0.0)
                )
            total = pairs[-1][1] if pairs else 0.0
            counted[name] = counted.get(name, 0.0) + (
                total if restarted else total - was_buckets.get(math.inf, 0.0)
            )
            was_seconds = 0.0 if restarted else old.seconds.get(name, 0.0)
            seconds[name] = seconds.get(name, 0.0) + new.seconds.get(name, 0.0) - was_seconds
    result = {}
    for name in rps.keys() | summed.keys():
        pairs = tuple(sorted(summed.get(name, {}).items()))
        count = counted.get(name, 0.0)
        result[name] = Traffic(
            rps=rps.get(name, 0.0),
            errors_per_s=errors.get(name, 0.0),
            mean_ms=1000 * seconds.get(name, 0.0) / count if count > 0 else None,
            p50_ms=_ms(quantile(0.5, pairs)),
            p99_ms=_ms(quantile(0.99, pairs)),
        )
    return result


def node_rps(before: Counters | None, after: Counters) -> float | None:
    """Requests per second that entered one node between two scrapes (None without two)."""
    if before is None or after.at <= before.at:
        return None
    total = 0.0
    for name, codes in after.requests.items():
        was = before.requests.get(name, {})
        total += sum(_delta(was.get(code, 0.0), count) for code, count in codes.items())
    return total / (after.at - before.at)


def quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The `q` quantile of cumulative (upper bound, count) buckets, +Inf last; None when empty.

    Linear inside the bucket that holds it, from the bound below (0 for the first); a quantile in
    the +Inf bucket is the highest finite bound, as ``histogram_quantile`` answers.
    """
    pairs = list(buckets)
    if not pairs or pairs[-1][1] <= 0:
        return None
    rank = q * pairs[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in pairs:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def _delta(before: float, after: float) -> float:
    return after if after < before else after - before


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000 * seconds


@dataclass(frozen=True)
class Measured:
    """What two rounds of scrapes measured: per deployment, per node (requests entering it), the span."""

    seconds: float
    deployments: dict[str, Traffic]
    nodes: dict[str, float]


def measure(before: Mapping[str, Counters], after: Mapping[str, Counters]) -> Measured | None:
    """The traffic between two rounds of scrapes (by node id), or None when no node is in both."""
    spans = [after[node].at - before[node].at for node in after.keys() & before.keys()]
    if not spans or max(spans) <= 0:
        return None
    nodes = {}
    for node, counters in after.items():
        rate = node_rps(before.get(node), counters)
        if rate is not None:
            nodes[node] = rate
    return Measured(max(spans), traffic(before, after), nodes)
