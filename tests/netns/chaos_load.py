"""The chaos suite's load and results: a ``loadgen.py`` run, the ``Plan`` of durations, an ``Outcome``."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.agents import wait_for
from tests.netns.chaos_client import log_tail

__all__ = ["Load", "LoadStats", "Outcome", "Plan", "Transition"]

# Python starting in a namespace on 2 busy cores, and a first request waiting for a route.
FLOWING_TIMEOUT_S = 60.0
# A run ends by its own bounds; this only catches a hung load generator.
FINISH_TIMEOUT_S = 270.0


@dataclass(frozen=True)
class LoadStats:
    """One load generator's summary (``loadgen.py`` prints it)."""

    summary: dict[str, Any]

    @property
    def requests(self) -> int:
        """Requests finished, whatever their outcome."""
        return int(self.summary["requests"])

    @property
    def by_status(self) -> dict[str, int]:
        """Final outcome -> count: an HTTP status, ``timeout``, ``error`` or ``wrong-body``."""
        return dict(self.summary["by_status"])

    @property
    def failed(self) -> dict[str, int]:
        """The outcomes other than 200, by outcome."""
        return {status: count for status, count in self.by_status.items() if status != "200"}

    @property
    def served_by(self) -> Counter[str]:
        """Node name -> requests it ran (the last hop of ``X-Mesh-Route``)."""
        served: Counter[str] = Counter()
        for route, count in self.summary["routes"].items():
            served[route.split(",")[-1]] += count
        return served

    def __str__(self) -> str:
        keys = ("requests", "by_status", "retried", "p50_ms", "p99_ms", "max_ms", "refused_max_ms")
        brief = {key: self.summary.get(key) for key in keys}
        return f"{brief} first failures: {self.summary['failures'][:5]}"


class Load:
    """One ``loadgen.py`` process in a namespace; its summary is read when it ends."""

    def __init__(self, process: subprocess.Popen[bytes], output: Path, ready: Path) -> None:
        self.process = process
        self.output = output
        self.ready = ready
        self.started = time.monotonic()

    def wait_flowing(self, timeout: float = FLOWING_TIMEOUT_S) -> float:
        """Wait until the first request answered; return the seconds since the load started."""
        wait_for(
            lambda: self.ready.exists() or self.process.poll() is not None,
            timeout,
            interval=0.1,
            message=lambda: f"no answer to the load yet: {log_tail(self.output)}",
        )
        assert self.ready.exists(), f"the load ended before any answer: {log_tail(self.output)}"
        return time.monotonic() - self.started

    def at(self, seconds: float) -> None:
        """Return once the load has run ``seconds`` (the moment a scenario injects its fault)."""
        # A fixed point on the load's timeline, not a condition: the load before it is the baseline.
        time.sleep(max(0.0, self.started + seconds - time.monotonic()))

    def stop(self) -> LoadStats:
        """Stop sending (requests in flight finish), then return the summary."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.finish()

    def finish(self, timeout: float = FINISH_TIMEOUT_S) -> LoadStats:
        """Wait for the load to end by its own bounds; return its summary."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"the load did not end within {timeout:g} s") from None
        lines = self.output.read_text(errors="replace").strip().splitlines()
        assert self.process.returncode == 0 and lines, f"the load failed: {log_tail(self.output)}"
        return LoadStats(json.loads(lines[-1]))


@dataclass(frozen=True)
class Plan:
    """How long each scenario runs: ``Plan()`` is CI's short plan; ``bench/chaos.py`` stretches it."""

    # Load around one fault (kill, stop, clock step), and when the fault hits, into the load.
    load_s: float = 12.0
    fault_at_s: float = 3.0
    # A SIGSTOPped node stays frozen this long: several suspicion timeouts of the local profile.
    pause_s: float = 8.0
    # The halves stay apart this long: by then TCP retransmits what the cut swallowed only every
    # 10-20 s, which once delayed a heal by as much.
    partition_s: float = 30.0
    # Random loss on every node, and how much. The issue asked for 2 minutes at 10 %: that run is
    # `bench/chaos.py --only loss` (its default --loss-s 120); CI's 30 s still spans about 30 probe
    # rounds of the LAN profile on each of 3 nodes, several suspicion timeouts, and over a thousand
    # requests, so a false death or a failed request would show.
    loss_s: float = 30.0
    loss_percent: int = 10
    # The loss run's requests each take this long in the replica (about 40 requests/s with 4
    # clients, the run had 15): its subject is membership under loss. A saturating load on
    # two shared cores adds event-loop starvation on top, which the overload scenario covers.
    loss_service_s: float = 0.1
    # Loss is a real network's fault, so that run uses the default LAN timings. The local profile
    # (one machine, no loss expected) declares a node dead 0.8 s after two peers suspect it; under
    # 10 % loss, a stall of that length on two shared, busy cores made false deaths.
    loss_profile: str = "lan"
    # How long three times the capacity is offered.
    overload_s: float = 12.0
    # Closed-loop clients of the fault scenarios: both replicas busy, little enough for 2 cores.
    concurrency: int = 4


@dataclass(frozen=True)
class Transition:
    """One member state change an agent logged: ``observer`` saw ``subject`` go ``previous -> current``."""

    observer: str
    subject: str
    previous: str
    current: str


@dataclass
class Outcome:
    """What one scenario measured: its loads by phase, time to recover, suspicions, other counts."""

    scenario: str
    loads: dict[str, LoadStats]
    # Seconds from the fault's end (or its start, for a crash) until the mesh was whole again.
    recover_s: float | None = None
    # Suspicions and deaths logged about nodes that were never faulty.
    suspected: list[Transition] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    # The agents' log tails at the end, for assertion messages.
    logs: str = ""

    def __str__(self) -> str:
        loads = "\n".join(f"  load {phase or 'all'}: {stats}" for phase, stats in self.loads.items())
        return (
            f"{self.scenario}: recovered in {self.recover_s} s, suspected {self.suspected}, "
            f"facts {self.facts}\n{loads}\n{self.logs}"
        )
