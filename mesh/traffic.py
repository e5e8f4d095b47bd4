"""Traffic over a sliding window: what each node gossips, and the mesh's totals summed from it.

A node counts the requests it took from clients (as the entry node), per deployment: answered,
failed, and how long each took in fixed duration buckets; and how many it sent to each peer. Every
sample it hands the cumulative counts to a ``Window``, which answers the counts of the last
``window_s`` seconds in their wire form, gossiped as ``NodeMeta.traffic``:

    {"window_s": 10.0,
     "requests": {deployment: [answered, errors, bucket0, bucket1, ...]},   # buckets: BUCKETS_S
     "links": {peer node id: requests sent}}

Histograms, not percentiles, travel, because percentiles do not add up: the mesh's p99 of a
deployment is read from the sum of every node's buckets (``mesh_traffic``), as Prometheus'
``histogram_quantile(sum(...))`` does, with the same linear interpolation inside a bucket. Trailing
empty buckets are left off, so an idle or fast deployment costs a few bytes.

Bounds: at most ``MAX_ENTRIES`` deployments and links per node (the busiest); readers take traffic
from the wire leniently (a malformed entry is skipped, counts are clamped to ``MAX_COUNT``), so a
peer's bad numbers can skew a dashboard but never raise. ``moved`` says when a new window is worth
gossiping: each update costs bytes on every node, so a steady rate stays quiet.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BUCKETS_S",
    "ERROR_CODE_MIN",
    "MAX_COUNT",
    "MAX_ENTRIES",
    "Totals",
    "Window",
    "mesh_traffic",
    "moved",
    "quantile",
]

# Upper bounds of the duration buckets, in seconds: a cached embedding (ms) to a diffusion image
# (minutes). Fixed, so every node's histograms add up (here and in Prometheus' sum()).
BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# An answer with this status or higher counts as an error: the mesh failed it (5xx), as opposed to
# a request the client got wrong (4xx) or one refused for load (429, counted by its code on /metrics).
ERROR_CODE_MIN = 500
MAX_ENTRIES = 16
MAX_COUNT = 10**12
# A rate must move by this factor either way (or start, or stop) for a new window to be gossiped.
MOVE_FACTOR = 1.25
# Below this many requests per second, changes are noise not worth a gossip update.
MIN_RATE = 0.2


@dataclass(frozen=True)
class Totals:
    """Cumulative counts at one instant: per deployment (answered, errors, per-bucket counts)."""

    requests: Mapping[str, tuple[int, int, tuple[int, ...]]] = field(default_factory=dict)
    links: Mapping[str, int] = field(default_factory=dict)


class Window:
    """The last `window_s` seconds of a node's counts, from the cumulative totals sampled."""

    def __init__(self, window_s: float, start: float) -> None:
        self.window_s = window_s
        # Counts start at zero with the node, so nothing counted before the first sample is lost.
        self._samples: collections.deque[tuple[float, Totals]] = collections.deque([(start, Totals())])

    def observe(self, now: float, totals: Totals) -> dict[str, Any]:
        """Record `totals` taken at `now`; the wire form of the counts since about `window_s` ago."""
        samples = self._samples
        samples.append((now, totals))
        # Keep the newest sample at least window_s old as the base, so the window is never shorter.
        while len(samples) > 2 and now - samples[1][0] >= self.window_s:
            samples.popleft()
        base_at, base = samples[0]
        requests: dict[str, list[int]] = {}
        for name, (answered, errors, buckets) in totals.requests.items():
            old = base.requests.get(name, (0, 0, ()))
            delta = [max(0, b - (old[2][i] if i < len(old[2]) else 0)) for i, b in enumerate(buckets)]
            count = max(0, answered - old[0])
            if count:
                while delta and not delta[-1]:
                    delta.pop()
                requests[name] = [count, max(0, errors - old[1]), *delta]
        links = {
            node: sent - base.links.get(node, 0)
            for node, sent in totals.links.items()
            if sent > base.links.get(node, 0)
        }
        return {
            "window_s": round(max(now - base_at, 0.0), 3),
            "requests": dict(_busiest(requests, key=lambda row: row[0])),
            "links": dict(_busiest(links, key=lambda sent: sent)),
        }


def moved(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    """Whether window `after` differs enough from the gossiped `before` to be gossiped in turn."""
    old, new = _rates(before), _rates(after)
    for key in old.keys() | new.keys():
        a, b = old.get(key, 0.0), new.get(key, 0.0)
        if max(a, b) < MIN_RATE:
            continue
        if min(a, b) == 0 or max(a, b) / min(a, b) > MOVE_FACTOR:
            return True
    return False


def mesh_traffic(traffic_by_node: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """The mesh's totals from every node's gossiped traffic: rates, errors, percentiles, links.

    ``{"deployments": {name: {"rps", "errors_ps", "p50_ms", "p95_ms", "p99_ms"}},
    "links": [{"from", "to", "rps"}]}``, each rate over the window its node reported.
    """
    summed: dict[str, list[float]] = {}
    links = []
    for node, raw in traffic_by_node:
        window_s, requests, sent = _read(raw)
        if window_s <= 0:
            continue
        for name, (answered, errors, buckets) in requests.items():
            row = summed.setdefault(name, [0.0, 0.0] + [0.0] * (len(BUCKETS_S) + 1))
            row[0] += answered / window_s
            row[1] += errors / window_s
            for index, count in enumerate(buckets):
                row[2 + index] += count / window_s  # weighted by rate, as nodes' windows differ
        for peer, count in sorted(sent.items()):
            links.append({"from": node, "to": peer, "rps": round(count / window_s, 3)})
    deployments = {}
    for name, row in sorted(summed.items()):
        deployments[name] = {
            "rps": round(row[0], 3),
            "errors_ps": round(row[1], 3),
            **{f"p{q}_ms": _ms(quantile(row[2:], q / 100)) for q in (50, 95, 99)},
        }
    return {"deployments": deployments, "links": links}


def quantile(buckets: Sequence[float], q: float) -> float | None:
    """The `q` quantile in seconds of per-bucket counts over ``BUCKETS_S`` (+Inf last), or None.

    Linear inside the bucket that holds it, as Prometheus' histogram_quantile; in the +Inf bucket,
    the highest finite bound (the most that can be said).
    """
    total = sum(buckets)
    if total <= 0:
        return None
    rank, seen = q * total, 0.0
    for index, count in enumerate(buckets):
        if count > 0 and seen + count >= rank:
            if index >= len(BUCKETS_S):
                return BUCKETS_S[-1]
            lower = BUCKETS_S[index - 1] if index else 0.0
            return lower + (BUCKETS_S[index] - lower) * (rank - seen) / count
        seen += count
    return BUCKETS_S[-1]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _busiest(entries: Mapping[str, Any], key: Any) -> list[tuple[str, Any]]:
    return sorted(entries.items(), key=lambda item: (-key(item[1]), item[0]))[:MAX_ENTRIES]


def _rates(raw: Any) -> dict[str, float]:
    window_s, requests, sent = _read(raw)
    if window_s <= 0:
        return {}
    rates = {f"d:{name}": row[0] / window_s for name, row in requests.items()}
    rates.update({f"e:{name}": row[1] / window_s for name, row in requests.items()})
    rates.update({f"l:{peer}": count / window_s for peer, count in sent.items()})
    return rates


def _read(raw: Any) -> tuple[float, dict[str, tuple[int, int, list[int]]], dict[str, int]]:
    """A gossiped traffic map read leniently: (window, requests, links); bad entries left out."""
    if not isinstance(raw, Mapping):
        return 0.0, {}, {}
    window_s = raw.get("window_s")
    if not isinstance(window_s, int | float) or not math.isfinite(window_s) or window_s <= 0:
        return 0.0, {}, {}
    requests = {}
    rows = raw.get("requests")
    for name, row in rows.items() if isinstance(rows, Mapping) else ():
        numbers = [_count(value) for value in row] if isinstance(row, list | tuple) else []
        if len(numbers) >= 2 and None not in numbers:
            counts = [int(value or 0) for value in numbers]
            requests[str(name)] = (counts[0], counts[1], counts[2 : 2 + len(BUCKETS_S) + 1])
    links = {}
    sent = raw.get("links")
    for peer, count in sent.items() if isinstance(sent, Mapping) else ():
        value = _count(count)
        if value is not None:
            links[str(peer)] = value
    return float(window_s), requests, links


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return min(max(value, 0), MAX_COUNT)
