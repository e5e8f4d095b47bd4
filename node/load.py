"""How busy this node is, sampled with psutil for gossip.

A sample is cheap and never blocks: CPU percent is measured since the previous sample (psutil's
``interval=None``), so the sampler primes the counter once at construction. ``differs_from`` decides
when a change is worth gossiping, so small jitter does not churn the membership metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psutil

__all__ = ["LoadSample", "LoadSampler"]


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
