"""Load from wrk, pinned to a core, and the CPU each pinned process spent per request meanwhile."""

from __future__ import annotations

import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' helpers, also when loaded by path

from procs import Started

WRK_TIMEOUT = "10s"
# wrk prints this line from the script's done(): requests, duration µs, p50 µs, p99 µs, non-2xx, socket errors.
WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = [{level}[{body}]{level}]
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def wrk_script(body: str) -> str:
    """WRK_SCRIPT posting `body`, held in a Lua long string whose closing bracket `body` lacks
    (a JSON body of nested lists holds ``]]``)."""
    level = ""
    while f"]{level}]" in body:
        level += "="
    return WRK_SCRIPT.format(body=body, level=level)


@dataclass(frozen=True)
class Run:
    """Where and how long every wrk run goes: the agents' core, wrk's core, seconds per run."""

    agents_cpu: int
    load_cpu: int
    duration_s: int


@dataclass(frozen=True)
class Sample:
    """One wrk run on one path at one concurrency, and the CPU it cost."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: dict[str, float]  # CPU µs per request of each process on the agents' core
    others_agents_core: float  # share of the agents' core that processes outside this benchmark took
    others_load_core: float  # the same on the load generator's core (besides wrk)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_total_us(self) -> float:
        return sum(self.cpu_us.values())

    @property
    def rps_per_core(self) -> float:
        """Requests per second the agents' core would serve with nothing else on it."""
        return 1e6 / self.cpu_total_us if self.cpu_total_us > 0 else float("nan")


def cpu_seconds(started: list[Started]) -> dict[str, float]:
    """CPU seconds (user + system) so far of each started process by role (n0, n1, nginx), a worker its own."""
    out: dict[str, float] = {}
    for s in started:
        role = s.name.split()[0]
        for i, proc in enumerate(s.processes()):
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            name = role if i == 0 else f"{role} worker"
            out[name] = out.get(name, 0.0) + times.user + times.system
    return out


def core_busy_s(cpu: int) -> float:
    """CPU seconds processes have run on `cpu` so far (interrupts and steal left out, as in process times)."""
    times = psutil.cpu_times(percpu=True)[cpu]
    return times.user + times.nice + times.system


def wrk_seconds() -> float:
    """CPU seconds of every finished child of this script: the wrk runs (taskset execs wrk)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(
    url: str, concurrency: int, seconds: int, script: Path, load_cpu: int
) -> tuple[int, float, float, float, int]:
    command = [
        "taskset", "-c", str(load_cpu), "wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s",
        "--timeout", WRK_TIMEOUT, "-s", str(script), url,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    requests, duration_us, p50_us, p99_us, status_errors, socket_errors = map(int, line.split()[1:])
    return requests, duration_us / 1e6, p50_us / 1000, p99_us / 1000, status_errors + socket_errors


def measure(
    url: str, concurrency: int, script: Path, run: Run, own: list[Started], started: list[Started]
) -> Sample:
    """One wrk run against `url`: its figures, and the CPU that `own` (of all `started`) spent per request."""

    def snapshot() -> tuple[dict[str, float], float, float, float, float]:
        everything = sum(cpu_seconds(started).values())
        return (
            cpu_seconds(own),
            everything,
            core_busy_s(run.agents_cpu),
            core_busy_s(run.load_cpu),
            wrk_seconds(),
        )

    ours_before, all_before, agents_before, load_before, wrk_before = snapshot()
    requests, elapsed, p50, p99, errors = run_wrk(url, concurrency, run.duration_s, script, run.load_cpu)
    ours_after, all_after, agents_after, load_after, wrk_after = snapshot()
    ours = {name: ours_after[name] - ours_before.get(name, 0.0) for name in ours_after}
    # All this benchmark runs is pinned: `started` on the agents' core, wrk on the load core.
    others_agents = agents_after - agents_before - (all_after - all_before)
    others_load = load_after - load_before - (wrk_after - wrk_before)
    return Sample(
        requests,
        elapsed,
        p50,
        p99,
        errors,
        {name: value / max(requests, 1) * 1e6 for name, value in ours.items()},
        # Clamped: process and per-core counters tick separately, so a share can read a little outside 0..1.
        min(1.0, max(0.0, others_agents / elapsed)),
        min(1.0, max(0.0, others_load / elapsed)),
    )
