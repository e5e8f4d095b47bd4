"""Membership benchmark: failure detection, join spread and idle cost of real agents, plus the simulator.

Usage:  python bench/membership.py [--sizes 5 10 20] [--kills 10] [--idle-s 30] [--sim-n 1000]

For each N, starts N real agents on 127.0.0.1 (local profile, joined by a seed) and repeats: SIGKILL
one, measure the time until every survivor logs it dead, restart it on its data dir, and measure the
time until every other agent logs it alive (a join). Times come from the agents' own log lines
(millisecond timestamps), so measuring adds no load. Each figure is printed beside the formula's
prediction for the same settings (MembershipConfig.expected_detection_s / dissemination_s). Then the
idle cost per agent at N = 10 and 20: CPU (% of one core, from each process's CPU time) and gossip
bytes per second (from /metrics). Last, the simulator's figures at N = 1000.

It measures and prints; it never asserts. The machine is shared and noisy: read the ratios.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import psutil

from meshnode.mesh.config import MembershipConfig
from meshnode.mesh.simulation import Simulation
from meshnode.mesh.types import Status

LOCAL = MembershipConfig.local()
LINE = re.compile(r"^(\S+ \S+) INFO meshnode\.agent: member \S+ \((\w{8})\): (\S+) -> (\w+)")
UP = re.compile(r"^(\S+ \S+) INFO meshnode\.agent: node \S+ \((\w{8})\) up")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


@dataclass
class Agent:
    name: str
    http: int
    mesh: int
    data_dir: Path
    log_path: Path
    seed: str | None
    process: subprocess.Popen[bytes] | None = None
    node_id: str = ""

    def start(self) -> None:
        args = [
            sys.executable, "-m", "meshnode", "join", "--name", self.name, "--profile", "local", "--no-mdns",
            "--http", f"127.0.0.1:{self.http}", "--mesh", f"127.0.0.1:{self.mesh}",
            "--data-dir", str(self.data_dir),
        ]  # fmt: skip
        if self.seed:
            args += ["--seed", self.seed]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http}{path}"

    def log_events(self) -> list[tuple[float, str, str]]:
        """(time, node id prefix, new status) for every membership change this agent logged."""
        events = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            match = LINE.match(line)
            if match:
                events.append((stamp(match.group(1)), match.group(2), match.group(4)))
        return events

    def up_times(self) -> list[float]:
        return [stamp(m.group(1)) for line in self.log_path.read_text().splitlines() if (m := UP.match(line))]


def wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def view(agent: Agent) -> dict[str, str]:
    try:
        body = httpx.get(agent.url("/v1/mesh"), timeout=2.0).json()
    except (httpx.HTTPError, ValueError):
        return {}
    return {m["id"][:8]: m["status"] for m in body["members"]}


def start_mesh(n: int, root: Path) -> list[Agent]:
    root.mkdir(parents=True, exist_ok=True)
    agents: list[Agent] = []
    seed = None
    try:
        for i in range(n):
            agent = Agent(f"b{i}", free_port(), free_port(), root / f"b{i}", root / f"b{i}.log", seed)
            agents.append(agent)
            agent.start()
            if seed is None:
                wait(lambda a=agent: view(a) != {}, 30, "the seed agent")
                seed = f"127.0.0.1:{agent.mesh}"
        wait(
            lambda: all(list(view(a).values()).count("alive") == n for a in agents),
            180,
            f"{n} agents to join",
        )
    except BaseException:
        stop_mesh(agents)  # never leave agents behind when the mesh fails to form
        raise
    for agent in agents:
        agent.node_id = httpx.get(agent.url("/v1/mesh"), timeout=2.0).json()["self"][:8]
    return agents


def stop_mesh(agents: list[Agent]) -> None:
    for agent in agents:
        if agent.process and agent.process.poll() is None:
            agent.process.send_signal(signal.SIGTERM)
    for agent in agents:
        if agent.process:
            try:
                agent.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                agent.process.kill()
                agent.process.wait()


def first_event_after(agent: Agent, node: str, status: str, since: float) -> float | None:
    times = [t for t, who, new in agent.log_events() if who == node and new == status and t >= since]
    return min(times) if times else None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def kills_and_joins(n: int, kills: int, root: Path) -> tuple[list[float], list[float]]:
    agents = start_mesh(n, root)
    detections: list[float] = []
    joins: list[float] = []
    try:
        for k in range(kills):
            victim = agents[1 + k % (n - 1)]  # never the seed, so restarts can rejoin through it
            survivors = [a for a in agents if a is not victim]
            assert victim.process is not None
            killed_at = time.time()
            victim.process.send_signal(signal.SIGKILL)
            victim.process.wait()

            def all_dead(v: Agent = victim, s: list[Agent] = survivors, t: float = killed_at) -> bool:
                return all(first_event_after(a, v.node_id, "dead", t) is not None for a in s)

            wait(all_dead, 60, "every survivor to see the kill")
            detections.append(
                max(first_event_after(a, victim.node_id, "dead", killed_at) or 0 for a in survivors)
                - killed_at
            )

            victim.start()
            wait(lambda v=victim, t=killed_at: any(u > t for u in v.up_times()), 60, "the restart")
            up_at = max(victim.up_times())

            def all_alive(v: Agent = victim, s: list[Agent] = survivors, t: float = up_at) -> bool:
                return all(first_event_after(a, v.node_id, "alive", t - 0.001) is not None for a in s)

            wait(all_alive, 60, "the rejoin to reach everyone")
            joins.append(
                max(first_event_after(a, victim.node_id, "alive", up_at - 0.001) or 0 for a in survivors)
                - up_at
            )
    finally:
        stop_mesh(agents)
    return detections, joins


def idle_cost(n: int, seconds: float, root: Path) -> tuple[float, float, float]:
    """Mean CPU (% of one core), bytes out/s and bytes in/s per agent over an idle window."""
    agents = start_mesh(n, root)
    try:
        time.sleep(3.0)  # let the join's gossip settle before measuring idle
        procs = [psutil.Process(a.process.pid) for a in agents if a.process]
        cpu_before = [p.cpu_times() for p in procs]
        bytes_before = [gossip_bytes(a) for a in agents]
        started = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - started
        cpu_after = [p.cpu_times() for p in procs]
        bytes_after = [gossip_bytes(a) for a in agents]
    finally:
        stop_mesh(agents)
    cpu = [
        (a.user + a.system - b.user - b.system) / elapsed * 100
        for a, b in zip(cpu_after, cpu_before, strict=True)
    ]
    out = [(a[0] - b[0]) / elapsed for a, b in zip(bytes_after, bytes_before, strict=True)]
    inn = [(a[1] - b[1]) / elapsed for a, b in zip(bytes_after, bytes_before, strict=True)]
    return statistics.mean(cpu), statistics.mean(out), statistics.mean(inn)


def soak(n: int, seconds: float, root: Path) -> tuple[int, int]:
    """(suspicions, deaths) of live agents logged over an idle window: both should be 0."""
    agents = start_mesh(n, root)
    try:
        started = time.time()
        time.sleep(seconds)
        events = [e for a in agents for e in a.log_events() if e[0] >= started]
    finally:
        stop_mesh(agents)
    return sum(1 for e in events if e[2] == "suspect"), sum(1 for e in events if e[2] == "dead")


def gossip_bytes(agent: Agent) -> tuple[float, float]:
    text = httpx.get(agent.url("/metrics"), timeout=2.0).text
    values = dict(re.findall(r'meshnode_gossip_bytes_total\{direction="(\w+)"\} (\S+)', text))
    return float(values.get("out", 0)), float(values.get("in", 0))


def simulate(n: int, crashes: int, seed: int = 1) -> tuple[list[float], float]:
    sim = Simulation(LOCAL, seed=seed)
    ids = sim.bootstrap(n)
    sim.run_for(2.0)
    joiner = sim.add_node(seeds=[ids[0]])
    start = sim.now
    sim.run_until(lambda: all(sim.status_in_view(o, joiner) == Status.ALIVE for o in ids), start + 30)
    join_s = sim.now - start
    detections = []
    for k in range(crashes):
        victim = ids[10 + k]
        sim.crash(victim)
        survivors = [x for x in sim.live() if x != victim]
        start = sim.now
        sim.run_until(
            lambda v=victim, s=survivors: all(sim.status_in_view(o, v) == Status.DEAD for o in s), start + 60
        )
        detections.append(sim.now - start)
        sim.run_for(1.0)
    return detections, join_s


def simulate_partition(n: int, seed: int = 7) -> tuple[float, float]:
    """Simulated seconds until two halves see each other dead, then until one membership after repair."""
    sim = Simulation(LOCAL, seed=seed)
    ids = sim.bootstrap(n)
    left, right = ids[: n // 2], ids[n // 2 :]
    sim.partition([left, right])

    def split() -> bool:
        return all(sim.status_in_view(o, right[0]) == Status.DEAD for o in left) and all(
            sim.status_in_view(o, left[0]) == Status.DEAD for o in right
        )

    sim.run_until(split, sim.now + 300, check_every_s=0.5)
    split_s = sim.now
    sim.repair()

    def healed() -> bool:
        return all(
            len(sim.nodes[o].core.members) == n
            and all(m.status == Status.ALIVE for m in sim.nodes[o].core.members.values())
            for o in ids
        )

    sim.run_until(healed, sim.now + 600, check_every_s=0.5)
    return split_s, sim.now - split_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--idle-sizes", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--idle-s", type=float, default=30.0)
    parser.add_argument("--soak-n", type=int, default=10)
    parser.add_argument(
        "--soak-s", type=float, default=0.0, help="idle soak length; 600 for the 10-minute target"
    )
    parser.add_argument("--sim-n", type=int, default=1000)
    parser.add_argument("--sim-crashes", type=int, default=5)
    parser.add_argument(
        "--partition-n", type=int, default=0, help="also split N simulated nodes in halves and heal"
    )
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="meshnode-bench-"))
    try:
        print(f"# meshnode membership benchmark, local profile, {os.cpu_count()} cores\n")
        print(
            "## Real agents on 127.0.0.1: SIGKILL until every survivor sees dead; rejoin until everyone sees alive\n"
        )
        print(
            "| N | kills | dead p50 s | dead p99 s | formula s | p50/formula | join p50 s | join p99 s | join formula s |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for n in args.sizes:
            detections, joins = kills_and_joins(n, args.kills, root / f"kills-{n}")
            formula = LOCAL.expected_detection_s(n)
            join_formula = LOCAL.dissemination_s(n)
            p50 = statistics.median(detections)
            print(
                f"| {n} | {len(detections)} | {p50:.2f} | {percentile(detections, 0.99):.2f} | {formula:.2f} | "
                f"{p50 / formula:.2f} | {statistics.median(joins):.3f} | {percentile(joins, 0.99):.3f} | "
                f"{join_formula:.3f} |",
                flush=True,
            )
        print("\n## Idle cost per agent\n")
        print("| N | CPU % of one core | gossip bytes out/s | gossip bytes in/s |")
        print("|---|---|---|---|")
        for n in args.idle_sizes:
            cpu, out, inn = idle_cost(n, args.idle_s, root / f"idle-{n}")
            print(f"| {n} | {cpu:.2f} | {out:.0f} | {inn:.0f} |", flush=True)
        if args.soak_s > 0:
            suspicions, deaths = soak(args.soak_n, args.soak_s, root / "soak")
            print(f"\n## Idle soak: N = {args.soak_n} for {args.soak_s:.0f} s\n")
            print("| suspicions of live agents | live agents declared dead |")
            print("|---|---|")
            print(f"| {suspicions} | {deaths} |", flush=True)
        print(f"\n## Simulator, N = {args.sim_n} (same core, seeded discrete-event loop)\n")
        started = time.monotonic()
        detections, join_s = simulate(args.sim_n, args.sim_crashes)
        formula = LOCAL.expected_detection_s(args.sim_n)
        print("| crashes | dead p50 s | dead max s | formula s | max/formula | join reaches all s | wall s |")
        print("|---|---|---|---|---|---|---|")
        print(
            f"| {len(detections)} | {statistics.median(detections):.2f} | {max(detections):.2f} | {formula:.2f} | "
            f"{max(detections) / formula:.2f} | {join_s:.3f} | {time.monotonic() - started:.0f} |"
        )
        if args.partition_n:
            started = time.monotonic()
            split_s, heal_s = simulate_partition(args.partition_n)
            print(f"\n## Simulator, partition into halves at N = {args.partition_n}\n")
            print("| halves see each other dead after s | one membership again after repair s | wall s |")
            print("|---|---|---|")
            print(f"| {split_s:.1f} | {heal_s:.1f} | {time.monotonic() - started:.0f} |")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
