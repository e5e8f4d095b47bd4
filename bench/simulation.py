"""Simulator benchmark: the seeded simulator's speed, and the full-size runs that CI makes smaller.

Usage:  python bench/simulation.py              # everything at full size; about 10 minutes
        python bench/simulation.py --quick      # small sizes, short runs; about a minute
        python bench/simulation.py --digest     # only the packet digests

1. Speed. A settled mesh of N nodes (``Simulation.bootstrap``), then N nodes under 10 % packet loss:
   wall seconds per simulated second, and packets delivered per wall second. CPU seconds are printed
   beside the wall seconds because the machine is shared: when they differ, something else ran.
2. Loss. The property of tests/sim ``test_no_live_node_declared_dead_under_ten_percent_loss``
   (5 simulated minutes, every packet dropped with probability 0.1, no live node declared dead) at
   the size CI runs (200 nodes) and at full size (1000 nodes).
3. Placement. The fixture of tests/sim/test_placement_sim.py: 100 deployments declared on random
   nodes of a settled mesh, until every node holds the same table.
4. Packet digest. SHA-256 over every packet each core handles and every tick's effects, with their
   times, in fixed seeded scenarios. Run it before and after a change to the simulator or the
   membership core: the same digests mean the same packets were delivered in the same order. (To
   compare across processes the run must not depend on string hashing; it does not since the
   membership core keeps its dead members in a dict.)

It measures and prints; it never asserts.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from meshnode.mesh.config import MembershipConfig
from meshnode.mesh.deployment import DeploymentSpec
from meshnode.mesh.effects import Effect
from meshnode.mesh.membership import Membership
from meshnode.mesh.simulation import Change, Simulation
from meshnode.mesh.types import Status
from meshnode.mesh.wire import Packet

LOCAL = MembershipConfig.local()
SEED = 20261121  # tests/sim's seed; each scenario adds its own offset as the tests do
SPEC = DeploymentSpec("apps/echo.py:Echo", min_replicas=3, max_replicas=3)


class Clock:
    """Wall and CPU seconds since it was made."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def lap(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def speed(n: int, seconds: float, seed: int) -> None:
    clock = Clock()
    sim = Simulation(LOCAL, seed=seed, drop=0.10)
    sim.bootstrap(n)
    boot_wall, boot_cpu = clock.lap()
    clock = Clock()
    sim.run_for(seconds)
    wall, cpu = clock.lap()
    print(
        f"| {n} | {boot_wall:.1f} ({boot_cpu:.1f}) | {seconds:.0f} | {wall / seconds:.3f} ({cpu / seconds:.3f}) "
        f"| {sim.delivered / seconds:,.0f} | {sim.delivered / wall:,.0f} |",
        flush=True,
    )


def loss(n: int, minutes: float, seed: int) -> None:
    sim = Simulation(LOCAL, seed=seed, drop=0.10)
    clock = Clock()
    sim.bootstrap(n)
    deaths: list[Change] = []
    suspect_marks = 0

    def on_change(change: Change) -> None:
        nonlocal suspect_marks
        if change.status == Status.DEAD:
            deaths.append(change)
        elif change.status == Status.SUSPECT:
            suspect_marks += 1

    sim.on_change = on_change
    sim.run_for(60 * minutes)
    wall, cpu = clock.lap()
    seconds = 60 * minutes
    # Each false suspicion spreads to (nearly) every other node: marks / (n - 1) counts suspicions.
    print(
        f"| {n} | {minutes:.0f} | {len(deaths)} | {suspect_marks / (n - 1) / seconds:.2f} "
        f"| {suspect_marks / (n - 1):.0f} | {wall:.0f} ({cpu:.0f}) |",
        flush=True,
    )


def placement(n: int, deployments: int, seed: int) -> None:
    clock = Clock()
    sim = Simulation(LOCAL, seed=seed)
    ids = sim.bootstrap(n)
    sim.run_for(1.0)
    rng = random.Random(seed)
    for index in range(deployments):
        sim.declare(rng.choice(ids), f"model-{index:03d}", SPEC, wall_ms=1_700_000_000_000 + index)
    start = sim.now

    def agree() -> bool:
        first = sim.nodes[ids[0]].core.deployments.records
        return all(
            len(sim.nodes[node].core.deployments.records) == deployments
            and sim.nodes[node].core.deployments.records == first
            for node in ids
        )

    converged = sim.run_until(agree, start + 120, check_every_s=1.0)
    wall, cpu = clock.lap()
    took = f"{sim.now - start:.0f}" if converged else "no (120)"
    print(f"| {n} | {deployments} | {took} | {sim.delivered:,} | {wall:.1f} ({cpu:.1f}) |", flush=True)


# -- packet digest --------------------------------------------------------------------------


@contextmanager
def recording(update: Callable[[bytes], object]) -> Iterator[None]:
    """Feed every packet a core handles, and every tick's effects, to `update` (a digest's)."""
    handle, tick = Membership.handle, Membership.tick

    def recorded_handle(self: Membership, packet: Packet, now: float, wall_ms: int) -> list[Effect]:
        effects = handle(self, packet, now, wall_ms)
        update(repr((now, self.node_id, packet, effects)).encode())
        return effects

    def recorded_tick(self: Membership, now: float) -> list[Effect]:
        effects = tick(self, now)
        update(repr((now, self.node_id, effects)).encode())
        return effects

    # A benchmark may patch the class for its own run; the simulator itself stays untouched.
    Membership.handle, Membership.tick = recorded_handle, recorded_tick  # type: ignore[method-assign]
    try:
        yield
    finally:
        Membership.handle, Membership.tick = handle, tick  # type: ignore[method-assign]


def faults(n: int) -> Simulation:
    """Loss, a crash, a paused node, a leave and a join."""
    sim = Simulation(LOCAL, seed=11, drop=0.1)
    ids = sim.bootstrap(n)
    sim.run_for(3.0)
    sim.crash(ids[3])
    sim.hold(ids[5], 2.0)
    sim.run_for(5.0)
    sim.leave(ids[9])
    sim.add_node(seeds=[ids[0]])
    sim.run_for(8.0)
    return sim


def partition(n: int) -> Simulation:
    """Two halves that see each other dead, then merge back."""
    sim = Simulation(LOCAL, seed=12)
    ids = sim.bootstrap(n)
    sim.partition([ids[: n // 2], ids[n // 2 :]])
    sim.run_for(15.0)
    sim.repair()
    sim.run_for(25.0)
    return sim


def records(n: int, encode: bool) -> Simulation:
    """Deployment declarations, a removal, a join and a crash, under light loss."""
    sim = Simulation(LOCAL, seed=14, drop=0.02, encode=encode)
    ids = sim.bootstrap(n)
    sim.run_for(1.0)
    for index in range(20):
        sim.declare(ids[index * 7 % n], f"m{index}", SPEC, wall_ms=1000 + index)
    sim.add_node(seeds=[ids[0]])
    sim.run_for(12.0)
    sim.declare(ids[1], "m3", None, wall_ms=5000)
    sim.crash(ids[4])
    sim.run_for(12.0)
    return sim


def digests(n: int) -> None:
    scenarios: dict[str, Callable[[], Simulation]] = {
        f"faults, N = {n}": lambda: faults(n),
        f"partition, N = {n // 2}": lambda: partition(n // 2),
        f"records, N = {n // 2}": lambda: records(n // 2, encode=False),
        "records through the wire codec, N = 40": lambda: records(40, encode=True),
    }
    print("| scenario | packets delivered | SHA-256 (first 24 hex digits) | wall s |")
    print("|---|---|---|---|")
    for name, run in scenarios.items():
        digest = hashlib.sha256()
        clock = Clock()
        with recording(digest.update):
            sim = run()
        digest.update(repr((sim.delivered, sim.dropped, sim.now)).encode())
        print(
            f"| {name} | {sim.delivered:,} | {digest.hexdigest()[:24]} | {clock.lap()[0]:.1f} |", flush=True
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and short runs")
    parser.add_argument("--digest", action="store_true", help="only the packet digests")
    parser.add_argument("--digest-n", type=int, default=200, help="mesh size of the digest scenarios")
    args = parser.parse_args()

    print(f"# meshnode simulator benchmark, {os.cpu_count()} cores\n")
    if args.digest:
        digests(args.digest_n)
        return
    full = 200 if args.quick else 1000
    print("## Speed: settled mesh, then 10 % loss (CPU seconds in brackets)\n")
    print(
        "| N | bootstrap s | simulated s | wall s per simulated s | packets per simulated s | packets per wall s |"
    )
    print("|---|---|---|---|---|---|")
    for n in [200, full] if not args.quick else [200]:
        speed(n, 10.0 if args.quick else 20.0, SEED + 1)
    print("\n## Loss: 10 % of packets dropped, no live node may be declared dead\n")
    print(
        "| N | simulated min | false deaths | false suspicions per simulated s | false suspicions | wall s |"
    )
    print("|---|---|---|---|---|---|")
    for n in [200, full] if not args.quick else [200]:
        loss(n, 1.0 if args.quick else 5.0, SEED + 1)
    print("\n## Placement: deployments declared on random nodes, until every table is the same\n")
    print("| N | deployments | converged after simulated s | packets | wall s |")
    print("|---|---|---|---|---|")
    placement(full, 100, SEED)
    print("\n## Packet digests\n")
    digests(args.digest_n)


if __name__ == "__main__":
    main()
