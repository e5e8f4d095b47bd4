"""How busy this node is, sampled with psutil for gossip.

A sample is cheap and never blocks: CPU percent is measured since the previous sample (psutil's
``interval=None``), so the sampler primes the counter once at construction. ``LoadGossip`` decides
when a sample is worth gossiping: a real move goes out as soon as ``meta_min_interval_s`` allows,
a small drift only once the gossiped value has aged, and jitter never, so an idle node costs
almost no gossip while the load every node shows (``meshnode peers``) stays within seconds of the
truth. Comparing only against a fixed threshold froze the shown load for as long as it moved less
than that threshold, for minutes.
"""

from __future__ import annotations

import collections
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from .config import AgentConfig

__all__ = ["LoadGossip", "LoadSample", "LoadSampler", "SpeedMeter"]


@dataclass(frozen=True)
class LoadSample:
    """One reading of CPU, memory and requests in flight on this node."""

    cpu_percent: float
    memory_used_bytes: int
    memory_total_bytes: int
    in_flight: int

    def to_wire(self) -> dict[str, Any]:
        """Return a plain msgpack-able dict for gossip."""
        return {
            "cpu": round(self.cpu_percent, 1),
            "mem_used": self.memory_used_bytes,
            "mem_total": self.memory_total_bytes,
            "in_flight": self.in_flight,
        }

    def differs_from(
        self, other: LoadSample, *, cpu_points: float = 10.0, memory_fraction: float = 0.05
    ) -> bool:
        """Whether the change from ``other`` is big enough to gossip."""
        if self.in_flight != other.in_flight:
            return True
        if abs(self.cpu_percent - other.cpu_percent) >= cpu_points:
            return True
        total = max(self.memory_total_bytes, other.memory_total_bytes)
        return total > 0 and abs(self.memory_used_bytes - other.memory_used_bytes) >= memory_fraction * total


@dataclass(frozen=True)
class LoadGossip:
    """When this node gossips a new load sample; pure (the age of the gossiped one comes in).

    The knobs come from ``AgentConfig`` and ``MembershipConfig``, which say what each costs.
    """

    min_gap_s: float  # never more often (meta_min_interval_s: every update costs gossip everywhere)
    cpu_points: float  # a CPU move at least this big goes out as soon as min_gap_s allows
    max_age_s: float  # past this age, a drift of drift_cpu_points or more goes out too
    drift_cpu_points: float  # below this, a move is sampling jitter and never goes out
    # Memory moves by these fractions of the total count as a move and a drift (as the CPU points).
    memory_fraction: float = 0.05
    drift_memory_fraction: float = 0.01

    def __post_init__(self) -> None:
        if not 0 < self.drift_cpu_points <= self.cpu_points:
            raise ValueError("drift_cpu_points must be positive and at most cpu_points")
        if not 0 < self.min_gap_s <= self.max_age_s:
            raise ValueError("max_age_s must be at least min_gap_s, and both positive")

    @classmethod
    def of(cls, config: AgentConfig) -> LoadGossip:
        """The rule an agent started with `config` follows."""
        return cls(
            min_gap_s=config.membership().meta_min_interval_s,
            cpu_points=config.load_cpu_change_points,
            max_age_s=config.load_max_age_s,
            drift_cpu_points=config.load_cpu_drift_points,
        )

    def due(self, published: LoadSample, sample: LoadSample, age_s: float) -> bool:
        """Whether to gossip `sample`, `age_s` seconds after `published` went out."""
        if age_s < self.min_gap_s:
            return False
        if sample.differs_from(published, cpu_points=self.cpu_points, memory_fraction=self.memory_fraction):
            return True
        return age_s >= self.max_age_s and sample.differs_from(
            published, cpu_points=self.drift_cpu_points, memory_fraction=self.drift_memory_fraction
        )


class LoadSampler:
    """Takes non-blocking load samples of this machine."""

    def __init__(self) -> None:
        """Prime psutil's CPU counter so the first sample measures from now."""
        psutil.cpu_percent(interval=None)

    def sample(self, in_flight: int = 0) -> LoadSample:
        """Return the load since the previous sample; never blocks."""
        memory = psutil.virtual_memory()
        return LoadSample(
            cpu_percent=float(psutil.cpu_percent(interval=None)),
            # total - available counts what programs hold, page cache excluded, on every platform.
            memory_used_bytes=int(memory.total - memory.available),
            memory_total_bytes=int(memory.total),
            in_flight=in_flight,
        )


class SpeedMeter:
    """A replica's measured speed: mean service time (smoothed) and completions per second.

    Routing weighs replicas by it, so a GPU twice as fast as a laptop gets about twice the traffic.
    Time comes in as an argument (the caller's loop clock). O(1) per request, amortised: routing
    reads it for every request, so it must not scan its window.
    """

    # Weight of the newest sample in the smoothed service time: about the last ten requests count.
    SMOOTHING = 0.2
    # Throughput is completions over this sliding window.
    WINDOW_S = 10.0
    # A sample counts as at most this many times the current mean: one request held seconds by a
    # busy machine's scheduler must not make a 1 ms replica look like a 400 ms one for routing,
    # while a replica that truly got slower gets there within a few requests (x1.6 each).
    OUTLIER_FACTOR = 4.0

    def __init__(self) -> None:
        self.service_s: float | None = None
        self._completions: collections.deque[float] = collections.deque()

    def record(self, started: float, finished: float, *, service: bool = True) -> None:
        """One request finished; with `service`, ``finished - started`` was all service (no queue)."""
        if service:
            self._smooth(max(finished - started, 0.0))
        self._completions.append(finished)
        self._expire(finished)

    def record_many(self, finished: float, count: int, service_s: float | None) -> None:
        """`count` requests measured elsewhere (a worker's lanes) finished by `finished`, with a
        smoothed service time of `service_s` (one sample, weighed as one request's)."""
        if service_s is not None and count:
            self._smooth(service_s)
        self._completions.extend(itertools.repeat(finished, count))
        self._expire(finished)

    def throughput(self, now: float) -> float:
        """Completions per second over the last window."""
        self._expire(now)
        return len(self._completions) / self.WINDOW_S

    @property
    def throughput_rps(self) -> float | None:
        """Completions per second as of the last completion; None before the first."""
        return self.throughput(self._completions[-1]) if self._completions else None

    def to_wire(self, now: float) -> dict[str, float]:
        """Gossip form: {"service_ms", "rps"}; empty until something was measured."""
        if self.service_s is None:
            return {}
        return {"service_ms": round(self.service_s * 1000, 3), "rps": round(self.throughput(now), 3)}

    def _smooth(self, sample: float) -> None:
        previous = self.service_s
        if previous is None:
            self.service_s = sample
        else:
            sample = min(sample, previous * self.OUTLIER_FACTOR) if previous > 0 else sample
            self.service_s = previous + self.SMOOTHING * (sample - previous)

    def _expire(self, now: float) -> None:
        horizon = now - self.WINDOW_S
        completions = self._completions
        while completions and completions[0] < horizon:
            completions.popleft()
