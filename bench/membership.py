"""Membership benchmark: failure detection, join spread and idle cost of real agents, plus the simulator.

Usage:  python bench/membership.py [--sizes 5 10 20] [--kills 10] [--idle-s 30] [--sim-n 1000]
                                   [--security on off] [--baseline-commit 9588113]
                                   [--parts kills idle soak edge sim] [--edge-kills 10] [--edge-code C]

Each real-agent figure is measured with security on (this checkout, one mesh token: sealed gossip)
and off (the code just before security existed; bench/baseline.py says how), one after the other at
each size, and printed side by side with the ratio on / off. For each N, starts N real agents on 127.0.0.1 (local profile, joined by a seed) and repeats: SIGKILL
one, measure the time until every survivor logs it dead, restart it on its data dir, and measure the
time until every other agent logs it alive (a join). Times come from the agents' own log lines
(millisecond timestamps), so measuring adds no load. Each figure is printed beside the formula's
prediction for the same settings (MembershipConfig.expected_detection_s / dissemination_s). Then the
idle cost per agent at N = 10 and 20: CPU (% of one core, from each process's CPU time) and gossip
bytes per second (from /metrics). Then one node behind NAT (issue 15; security on only, the old code
has no relays): N agents, the last advertising addresses nobody listens on (docs/edge.md), SIGKILLed
in turn with a direct non-seed agent, each restarted and seen alive (the edge relayed) before the next
kill; the edge's detection against the direct agents'. Last, the simulator's figures at N = 1000.
`--parts` runs some of these only (`--parts edge`: the edge part alone; `--edge-n` agents, 5).

It measures and prints; it never asserts. The machine is shared and noisy: read the ratios.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
from baseline import BEFORE_SECURITY, Variant, at_commit, commit_of, security_off, security_on
from mesh_agents import Agent, first_event_after, member, start_mesh, stop_mesh, wait
from procs import free_port

from meshnode.mesh.config import MembershipConfig
from meshnode.mesh.simulation import Simulation
from meshnode.mesh.types import Status

LOCAL = MembershipConfig.local()
PARTS = ("kills", "idle", "soak", "edge", "sim")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def kills_and_joins(n: int, kills: int, root: Path, variant: Variant) -> tuple[list[float], list[float], int]:
    """Detection and rejoin times of `kills` SIGKILLs and restarts, and the false suspicions of the
    restarted agents (a survivor marking one suspect or dead again after it came back)."""
    agents = start_mesh(n, root, variant)
    detections: list[float] = []
    joins: list[float] = []
    false_suspicions = 0
    try:
        for k in range(kills):
            victim = agents[1 + k % (n - 1)]  # never the seed, so restarts can rejoin through it
            detection, join, suspicions = kill_and_restart(victim, agents)
            detections.append(detection)
            joins.append(join)
            false_suspicions += suspicions
    finally:
        stop_mesh(agents)
    return detections, joins, false_suspicions


def kill_and_restart(
    victim: Agent, agents: list[Agent], settled: Callable[[], bool] = lambda: True
) -> tuple[float, float, int]:
    """SIGKILL `victim`: seconds until every survivor logs it dead; restart it on its data dir: seconds
    from its first log line until every survivor logs it alive; then, once `settled` holds, the
    survivors' suspect and dead lines for it over twice the detection time (false suspicions)."""
    survivors = [a for a in agents if a is not victim]
    assert victim.process is not None
    killed_at = time.time()
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait()

    def all_dead(v: Agent = victim, s: list[Agent] = survivors, t: float = killed_at) -> bool:
        return all(first_event_after(a, v.node_id, "dead", t) is not None for a in s)

    wait(all_dead, 60, "every survivor to see the kill")
    dead_at = max(first_event_after(a, victim.node_id, "dead", killed_at) or 0 for a in survivors)

    victim.start()
    wait(lambda: any(u > killed_at for u in victim.up_times()), 60, "the restart")
    # Its gossip starts a moment before it logs "up": its first view change may come first.
    own = [t for t, _, _ in victim.log_events() if t > killed_at]
    up_at = min([max(victim.up_times()), *own])

    def all_alive(v: Agent = victim, s: list[Agent] = survivors, t: float = dead_at) -> bool:
        return all(first_event_after(a, v.node_id, "alive", t + 0.001) is not None for a in s)

    wait(all_alive, 60, "the rejoin to reach everyone")
    back_at = max(first_event_after(a, victim.node_id, "alive", dead_at + 0.001) or 0 for a in survivors)
    wait(settled, 60, "the mesh to settle after the rejoin")
    # A restarted agent must stay alive: watch for as long as a false death would take.
    time.sleep(2 * LOCAL.expected_detection_s(len(agents)))
    false_suspicions = sum(
        1
        for a in survivors
        for t, who, new in a.log_events()
        if who == victim.node_id and new in ("suspect", "dead") and t > back_at
    )
    return dead_at - killed_at, max(0.0, back_at - up_at), false_suspicions


def edge_kills(n: int, kills: int, root: Path, variant: Variant) -> list[tuple[Agent, float, float, int]]:
    """(victim, detection s, rejoin s, false suspicions) of `kills` SIGKILLs of each kind, alternating a
    direct non-seed agent and the edge: the last agent, advertising addresses nobody listens on."""
    dead = [f"127.0.0.1:{free_port()}" for _ in range(2)]  # addresses where nothing listens
    agents = start_mesh(n, root, variant, {n - 1: ("--advertise-mesh", dead[0], "--advertise-data", dead[1])})
    edge = agents[-1]

    def relayed() -> bool:
        """Every agent sees the edge alive, reached through two relays."""
        entries = [member(a, edge.node_id) for a in agents]
        return all(
            e is not None and e["status"] == "alive" and e["reach"] == "relayed" and len(e["relays"]) == 2
            for e in entries
        )

    rows = []
    try:
        wait(relayed, 60, "every agent to see the edge relayed")
        for k in range(2 * kills):
            victim = edge if k % 2 else agents[1 + (k // 2) % (n - 2)]  # never the seed
            rows.append((victim, *kill_and_restart(victim, agents, relayed)))
            print(f"edge part: kill {k + 1} of {2 * kills} done", file=sys.stderr, flush=True)
    finally:
        stop_mesh(agents)
    return rows


def report_edge(n: int, rows: list[tuple[Agent, float, float, int]]) -> None:
    edge_name = f"b{n - 1}"
    print(f"\n## One node behind NAT, N = {n}: SIGKILL a direct agent and the edge ({edge_name}) in turn\n")
    print("| kill | victim | kind | dead everywhere s | rejoin s | false suspicions after rejoin |")
    print("|---|---|---|---|---|---|")
    for k, (victim, dead, join, false) in enumerate(rows, 1):
        kind = "edge" if victim.name == edge_name else "direct"
        print(f"| {k} | {victim.name} | {kind} | {dead:.2f} | {join:.3f} | {false} |")
    formula = LOCAL.expected_detection_s(n)
    print(
        "\n| kind | kills | dead p50 s | dead max s | formula s | p50 / formula | false suspicions after rejoin |"
    )
    print("|---|---|---|---|---|---|---|")
    p50, worst = {}, {}
    for kind in ("direct", "edge"):
        mine = [r for r in rows if (r[0].name == edge_name) == (kind == "edge")]
        detections = [r[1] for r in mine]
        p50[kind], worst[kind] = statistics.median(detections), max(detections)
        print(
            f"| {kind} | {len(mine)} | {p50[kind]:.2f} | {worst[kind]:.2f} | {formula:.2f} | "
            f"{p50[kind] / formula:.2f} | {sum(r[3] for r in mine)} |"
        )
    print(
        f"| edge / direct | | {ratio(p50['edge'], p50['direct'])} | {ratio(worst['edge'], worst['direct'])} "
        "| | | |"
    )
    print(
        f"\nTarget: edge / direct dead p50 <= 1.3. Formula: MembershipConfig.local().expected_detection_s({n})."
    )


def idle_cost(n: int, seconds: float, root: Path, variant: Variant) -> tuple[float, float, float]:
    """Mean CPU (% of one core), bytes out/s and bytes in/s per agent over an idle window."""
    agents = start_mesh(n, root, variant)
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


def soak(n: int, seconds: float, root: Path, variant: Variant) -> tuple[int, int]:
    """(suspicions, deaths) of live agents logged over an idle window: both should be 0."""
    agents = start_mesh(n, root, variant)
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


def ratio(on: float, off: float) -> str:
    return f"{on / off:.2f}" if off else "n/a"


def simulator(args: argparse.Namespace) -> None:
    """The simulator's detection and join at --sim-n, and the partition at --partition-n."""
    print(
        f"\n## Simulator, N = {args.sim_n} (same core, seeded discrete-event loop; no sockets, so no security)\n"
    )
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
    parser.add_argument("--security", nargs="+", choices=("on", "off"), default=["on", "off"])
    parser.add_argument(
        "--baseline-commit", default=BEFORE_SECURITY, help="the code whose agents run with security off"
    )
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to run")
    parser.add_argument("--edge-n", type=int, default=5, help="agents of the edge part, the edge last")
    parser.add_argument("--edge-kills", type=int, default=10, help="SIGKILLs of each kind in the edge part")
    parser.add_argument(
        "--edge-code", help="a commit whose code the edge part's agents run (default: this tree)"
    )
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="meshnode-bench-"))
    try:
        made = {
            "on": lambda: security_on(secrets.token_urlsafe(32)),
            "off": lambda: security_off(root, args.baseline_commit),
        }
        real = {"kills", "idle", "soak"} & set(args.parts)
        variants = [made[name]() for name in args.security] if real else []
        both = len(variants) == 2
        print(f"# meshnode membership benchmark, local profile, {os.cpu_count()} cores\n")
        print(f"Command: python {' '.join(sys.argv)}\n")
        print(
            f"Code under test: HEAD {commit_of('HEAD')} (working tree as checked out)"
            + (f", against {commit_of(args.baseline_commit)}." if variants else ".")
        )
        for variant in variants:
            print(f"- {variant.describe()}")
        print(f"\nLoad average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}.")
        if "kills" in args.parts:
            print(
                "\n## Real agents on 127.0.0.1: SIGKILL until every survivor sees dead; rejoin until everyone sees alive\n"
            )
            print(
                "| N | security | kills | dead p50 s | dead p99 s | formula s | p50/formula | join p50 s | join p99 s | join formula s | false suspicions after rejoin |"
            )
            print("|---|---|---|---|---|---|---|---|---|---|---|")
        for n in args.sizes if "kills" in args.parts else ():
            p50s = {}
            for variant in variants:
                detections, joins, false_suspicions = kills_and_joins(
                    n, args.kills, root / f"kills-{n}-{variant.name}", variant
                )
                formula = LOCAL.expected_detection_s(n)
                p50s[variant.name] = p50 = statistics.median(detections)
                print(
                    f"| {n} | {variant.name} | {len(detections)} | {p50:.2f} | {percentile(detections, 0.99):.2f} | "
                    f"{formula:.2f} | {p50 / formula:.2f} | {statistics.median(joins):.3f} | "
                    f"{percentile(joins, 0.99):.3f} | {LOCAL.dissemination_s(n):.3f} | {false_suspicions} |",
                    flush=True,
                )
            if both:
                print(f"| {n} | on / off | | {ratio(p50s['on'], p50s['off'])} | | | | | | | |", flush=True)
        if "idle" in args.parts:
            print("\n## Idle cost per agent\n")
            print("| N | security | CPU % of one core | gossip bytes out/s | gossip bytes in/s |")
            print("|---|---|---|---|---|")
        for n in args.idle_sizes if "idle" in args.parts else ():
            costs = {}
            for variant in variants:
                costs[variant.name] = cpu, out, inn = idle_cost(
                    n, args.idle_s, root / f"idle-{n}-{variant.name}", variant
                )
                print(f"| {n} | {variant.name} | {cpu:.2f} | {out:.0f} | {inn:.0f} |", flush=True)
            if both:
                cells = " | ".join(ratio(on, off) for on, off in zip(costs["on"], costs["off"], strict=True))
                print(f"| {n} | on / off | {cells} |", flush=True)
        if args.soak_s > 0 and "soak" in args.parts:
            print(f"\n## Idle soak: N = {args.soak_n} for {args.soak_s:.0f} s\n")
            print("| security | suspicions of live agents | live agents declared dead |")
            print("|---|---|---|")
            for variant in variants:
                suspicions, deaths = soak(args.soak_n, args.soak_s, root / f"soak-{variant.name}", variant)
                print(f"| {variant.name} | {suspicions} | {deaths} |", flush=True)
        if "edge" in args.parts:
            token = ("--token", secrets.token_urlsafe(32))
            edge = at_commit(root, args.edge_code, "on", token) if args.edge_code else made["on"]()
            code = commit_of(args.edge_code) if args.edge_code else "the working tree"
            print(f"\nEdge part: {edge.describe()}, code of {code}.")
            rows = edge_kills(args.edge_n, args.edge_kills, root / "edge", edge)
            report_edge(args.edge_n, rows)
        if "sim" in args.parts:
            simulator(args)
        print(f"\nLoad average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}.")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
