"""Model pull metrics on ``GET /metrics``, read from the counters of this node's pulls at scrape time.

docs/observability.md lists them. Counters are this node's own: a sum() over nodes is the mesh's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["ModelPullCollector", "PullCounters", "ServedCounters"]


class PullCounters(Protocol):
    """``models/pulls.ModelPulls``: its counters, and the pulls running."""

    @property
    def counts(self) -> dict[str, int]:
        """bytes, chunks_fetched, chunks_refused, chunks_resumed, completed, failed, joined."""
        ...

    def running(self) -> int:
        """Pulls running now."""
        ...


class ServedCounters(Protocol):
    """``models/chunk_server.ChunkServer``: what this node served to pullers."""

    served_chunks: int
    served_bytes: int


class ModelPullCollector(Collector):
    """The ``meshnode_model_*`` families."""

    def __init__(self, pulls: PullCounters, served: ServedCounters) -> None:
        self._pulls = pulls
        self._served = served

    def collect(self) -> Iterator[Metric]:
        counts = self._pulls.counts
        yield CounterMetricFamily(
            "meshnode_model_pull_bytes",
            "Model bytes this node pulled from peers, each chunk checked against its sha256 and written.",
            value=counts.get("bytes", 0),
        )
        chunks = CounterMetricFamily(
            "meshnode_model_pull_chunks",
            "Chunks of pulls by outcome: fetched (checked and written), refused (bytes that did not match "
            "their sha256: asked again), resumed (found in a partial folder left by an earlier try).",
            labels=["outcome"],
        )
        for outcome in ("fetched", "refused", "resumed"):
            chunks.add_metric([outcome], counts.get(f"chunks_{outcome}", 0))
        yield chunks
        pulls = CounterMetricFamily(
            "meshnode_model_pulls",
            "Pulls of models onto this node by outcome: completed, failed; joined counts the callers that "
            "found a pull of the same model running and waited for it instead of starting another.",
            labels=["outcome"],
        )
        for outcome in ("completed", "failed", "joined"):
            pulls.add_metric([outcome], counts.get(outcome, 0))
        yield pulls
        yield GaugeMetricFamily(
            "meshnode_model_pulls_running",
            "Pulls of models onto this node running now.",
            value=self._pulls.running(),
        )
        served = CounterMetricFamily(
            "meshnode_model_served",
            "Model chunks and bytes this node served to peers pulling.",
            labels=["unit"],
        )
        served.add_metric(["chunks"], self._served.served_chunks)
        served.add_metric(["bytes"], self._served.served_bytes)
        yield served
