"""A mesh whose every node is busy, simulated: what load gossip costs failure detection and other news.

Usage:  python bench/busy_gossip.py [--nodes 200 1000] [--profile lan] [--hints 30] [--seconds 30]
                                    [--baseline-commit COMMIT] [--seed 7]

Every busy node republishes its load once per ``meta_min_interval_s`` (5 s on ``lan``), and each
update costs about ``N * retransmit_limit(N)`` sends mesh-wide: past a hundred or so busy nodes that
is more than gossip carries. For each N, two meshes of the production membership core run in the
seeded simulator (``mesh/simulation.py``, packets encoded as on the wire), every node with ~1.2 KB
of metadata (``--hints`` hints of 32 characters: a few deployments' replicas, hints and speeds):

- quiet: nobody's metadata changes;
- busy: every node's load changes every ``meta_min_interval_s``, each at its own phase.

Both settle first (the wave of every node's first metadata is sent its full count), then, busy or
not for ``--seconds`` before each: a crash (time until every live node holds it dead), and a change
beyond load on one node (a new hint, as a replica becoming ready: time until every node holds it).
Printed per mesh: packets and KiB each node sends per second, the share of load views two or more
updates behind (busy), both times, and busy / quiet for each. ``--baseline-commit`` runs the same
scenarios on the membership core of that commit (bench/baseline.py installs it apart), in the same
run, for a before and after. It measures and prints; it never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

LIMIT_S = 120.0  # a crash or a change not known everywhere by then is reported as "> 120"
STEP_S = 0.1


def scenario(n: int, profile: str, hints: int, seconds: float, busy: bool, seed: int) -> dict[str, Any]:
    """One mesh: the figures of the module's docstring, as a dict."""
    from meshnode.mesh import simulation, wire
    from meshnode.mesh.config import MembershipConfig

    config = MembershipConfig.local() if profile == "local" else MembershipConfig()
    sent = {"bytes": 0, "packets": 0}
    encode = wire.encode

    def counted(packet: Any, mesh_id: str) -> bytes:
        data = encode(packet, mesh_id)
        sent["bytes"] += len(data)
        sent["packets"] += 1
        return data

    simulation.wire.encode = counted  # type: ignore[attr-defined]  # the simulator's own encoder
    try:
        return _measured(
            simulation.Simulation(config, seed=seed, encode=True), config, n, hints, seconds, busy, seed, sent
        )
    finally:
        simulation.wire.encode = encode  # type: ignore[attr-defined]


def _measured(
    sim: Any, config: Any, n: int, hints: int, seconds: float, busy: bool, seed: int, sent: dict[str, int]
) -> dict[str, Any]:
    from meshnode.mesh.metadata import NodeMeta
    from meshnode.mesh.types import Status

    nodes = sim.bootstrap(n)
    rng = random.Random(seed)

    def described(node: str, load: int, extra: tuple[str, ...] = ()) -> Any:
        labels = tuple(f"p-{node[:8]}-{i:04d}".ljust(32, "x") for i in range(hints)) + extra
        return NodeMeta(name=node[:8], hints=labels, load={"cpu": load, "in_flight": load % 7})

    for node in nodes:
        sim.update_meta(node, described(node, 0))
    sim.run_for(config.retransmit_limit(n) * n / (config.gossip_nodes / config.gossip_interval_s) + 30)
    interval = config.meta_min_interval_s
    phase = {node: rng.random() * interval for node in nodes}
    quiet: set[str] = set()
    clock = {"t": 0.0}

    def step() -> None:
        before, clock["t"] = clock["t"], clock["t"] + STEP_S
        for node in nodes:
            due = int((clock["t"] - phase[node]) // interval) > int((before - phase[node]) // interval)
            if busy and node not in quiet and due:
                sim.update_meta(node, described(node, rng.randrange(100)))
        sim.run_for(STEP_S)

    sent["bytes"] = sent["packets"] = 0
    behind: list[float] = []
    observers, observed = nodes[:50], nodes[:: max(1, n // 50)]
    steps = round(seconds / STEP_S)
    for index in range(steps):
        step()
        if busy and index % 20 == 19:
            pairs = [(o, x) for o in observers for x in observed if o != x]
            late = sum(
                sim.nodes[x].core.me.meta_version - sim.nodes[o].core.members[x].meta_version >= 2
                for o, x in pairs
            )
            behind.append(late / len(pairs))
    figures: dict[str, Any] = {
        "packets": sent["packets"] / n / seconds,
        "kib": sent["bytes"] / n / seconds / 1024,
        "behind": sum(behind) / len(behind) if behind else 0.0,
    }

    def timed(done: Any) -> float | None:
        start = clock["t"]
        while clock["t"] - start < LIMIT_S:
            if done():
                return clock["t"] - start
            step()
        return None

    victim = nodes[9]
    quiet.add(victim)
    sim.crash(victim)
    live = [node for node in nodes if node != victim]
    figures["crash"] = timed(
        lambda: all(sim.nodes[o].core.members[victim].status == Status.DEAD for o in live)
    )
    figures["expected_crash"] = config.expected_detection_s(n)
    changed = nodes[5]
    quiet.add(changed)
    sim.update_meta(changed, replace(described(changed, 1), hints=described(changed, 1, ("new",)).hints))
    version = sim.nodes[changed].core.me.meta_version
    others = [node for node in live if node != changed]
    figures["change"] = timed(
        lambda: all(sim.nodes[o].core.members[changed].meta_version >= version for o in others)
    )
    figures["expected_change"] = config.dissemination_s(n)
    return figures


def run_elsewhere(pythonpath: str, args: list[str]) -> dict[str, Any]:
    """`scenario` in a fresh interpreter importing meshnode from `pythonpath` (another commit's)."""
    done = subprocess.run(
        [sys.executable, __file__, "--one", *args],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": pythonpath},
    )  # fmt: skip
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def seconds_of(value: float | None) -> str:
    return f"> {LIMIT_S:.0f}" if value is None else f"{value:.1f}"


def ratio(busy: float | None, quiet: float | None) -> str:
    if quiet is None or quiet == 0:
        return "-"
    return f"> {LIMIT_S / quiet:.0f}" if busy is None else f"{busy / quiet:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[200])
    parser.add_argument("--profile", choices=["lan", "local"], default="lan")
    parser.add_argument("--hints", type=int, default=30, help="hints of 32 characters per node (30: ~1.2 KB)")
    parser.add_argument("--seconds", type=float, default=30.0, help="busy (or quiet) time before measuring")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--baseline-commit", help="run the same on this commit's membership core too")
    parser.add_argument(
        "--one", nargs=5, metavar=("N", "PROFILE", "HINTS", "SECONDS", "BUSY"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.one:
        n, profile, hints, seconds, busy = args.one
        figures = scenario(int(n), profile, int(hints), float(seconds), busy == "busy", args.seed)
        print(json.dumps(figures))
        return

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from baseline import at_commit, commit_of
    from procs import commit

    codes: dict[str, str | None] = {f"this checkout ({commit()})": None}
    workdir = tempfile.TemporaryDirectory(prefix="busy-gossip-")
    if args.baseline_commit:
        variant = at_commit(Path(workdir.name), args.baseline_commit, "base")
        codes[f"commit {commit_of(args.baseline_commit)}"] = variant.env["PYTHONPATH"]
    print(
        f"# Busy gossip, simulated: {args.profile} profile, {args.hints} hints per node, seed {args.seed}\n"
    )
    print(
        "| code | N | mesh | packets / node / s | KiB / node / s | load views >= 2 updates behind "
        "| crash known everywhere, s (expected) | change known everywhere, s (expected) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, pythonpath in codes.items():
        for n in args.nodes:
            rows = {}
            for mode in ("quiet", "busy"):
                argv = [
                    str(n),
                    args.profile,
                    str(args.hints),
                    str(args.seconds),
                    mode,
                    "--seed",
                    str(args.seed),
                ]
                figures = (
                    run_elsewhere(pythonpath or "", argv)
                    if pythonpath
                    else scenario(n, args.profile, args.hints, args.seconds, mode == "busy", args.seed)
                )
                rows[mode] = figures
                print(
                    f"| {name} | {n} | {mode} | {figures['packets']:.1f} | {figures['kib']:.1f} "
                    f"| {figures['behind'] * 100:.0f} % | {seconds_of(figures['crash'])} "
                    f"({figures['expected_crash']:.1f}) | {seconds_of(figures['change'])} "
                    f"({figures['expected_change']:.2f}) |",
                    flush=True,
                )
            quiet, busy = rows["quiet"], rows["busy"]
            print(
                f"| {name} | {n} | **busy / quiet** | | | | {ratio(busy['crash'], quiet['crash'])} "
                f"| {ratio(busy['change'], quiet['change'])} |",
                flush=True,
            )
    workdir.cleanup()


if __name__ == "__main__":
    main()
