"""Placement benchmark: failover time, replicas moved per join and leave, autoscaler reaction time,
pre-warming.

Usage:  python bench/placement.py [--rounds 3] [--nodes 100] [--deployments 1000] [--skip-agents]
                                  [--parts ABCD]

Four parts, each measured against its own baseline in the same run (as docs/benchmarks.md describes):

A. Movement (pure, ``mesh/placement.py``): ``--deployments`` deployments of 2 replicas on ``--nodes``
   nodes, equal weights and mixed (CPU, MPS and CUDA nodes). A node joins, then a node leaves; the
   replicas that changed host are counted against the ideal: for a join, the newcomer's fair share
   (replicas x its weight / total weight); for a leave, exactly the replicas the leaver held.
   Target: at most 1.5x the ideal.
B. Failover (real agents, ``--profile local``): four agents, a deployment of two replicas of
   a model whose setup takes 3 s. One host is SIGKILLed; measured from the kill: when an observer sees it dead
   (detection), and when two replicas serve again (replacement). The baseline, load time, is how
   long a fresh replica of the same app takes from its declaration until it serves. Target:
   replacement <= detection + load + 1 s. With ``backups: 1`` the replacement is already warm.
C. Autoscaler (real agents): a deployment with target concurrency 1 (max 3) goes from 1 to 6
   clients at once; measured: the step until ``desired`` is 3, and until three replicas serve. The
   baseline is what the policy allows at most before it decides: the scale-up delay plus the
   metadata gossip interval (demand is that stale at worst). Then the clients
   stop while a trickle of requests goes on: every request of the scale-down must succeed (drain).
D. Pre-warm (real agents, ``bench/prewarm.py``): a step and a ramp of load on a model that takes 5 s
   to load; time until the deployment serves at its target latency, with ``autoscaling.prewarm`` and
   with the autoscaler alone, side by side, and their ratio.

It measures and prints; it never asserts.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the integration tests' agent harness is reused here

from meshnode.mesh.config import MembershipConfig  # noqa: E402
from meshnode.mesh.placement import HostNode, Requirements, place  # noqa: E402
from meshnode.mesh.types import NodeId  # noqa: E402
from tests.integration.agents import AgentProcess, Mesh, wait_for  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from prewarm import part_d  # noqa: E402  (bench/ is a folder of scripts, not a package)

APPS = ROOT / "tests" / "integration" / "serving_apps.py"
# A model that takes a while to load (setup() sleeps SETUP_S), so load time is visible next to
# detection time, and a warm backup's worth with it.
LOADING = f"{APPS}:SlowSetup"
SETUP_S = 3.0
SLOW = f"{APPS}:Probe"
REPLICAS = 2
ANY = Requirements()
# The agents may run the file apps above only from their folder (docs/apps.md).
APP_DIRS = {index: ["--app-dir", str(APPS.parent)] for index in range(4)}


# -- A. movement ---------------------------------------------------------------------------


def movement(nodes: int, deployments: int, mixed: bool, rng: random.Random) -> dict[str, float]:
    """Replicas moved by one join and one leave, and the ideal for each."""
    weights = [rng.choice((0.25, 1.0, 4.0, 16.0)) if mixed else 1.0 for _ in range(nodes)]
    pool = [HostNode(NodeId(f"n{i:04d}"), weight=w) for i, w in enumerate(weights)]
    names = [f"deployment-{i}" for i in range(deployments)]

    def hosts(candidates: list[HostNode]) -> dict[str, set[NodeId]]:
        return {name: set(place(name, REPLICAS, candidates, ANY).hosts) for name in names}

    before = hosts(pool)
    newcomer = HostNode(NodeId("newcomer"), weight=rng.choice(weights))
    joined = hosts([*pool, newcomer])
    moved_join = sum(len(joined[n] - before[n]) for n in names)
    ideal_join = REPLICAS * deployments * newcomer.weight / (sum(weights) + newcomer.weight)
    leaver = pool[rng.randrange(nodes)]
    left = hosts([c for c in pool if c != leaver])
    moved_leave = sum(len(left[n] - before[n]) for n in names)
    ideal_leave = sum(1 for n in names if leaver.node in before[n])
    return {"join": moved_join, "join_ideal": ideal_join, "leave": moved_leave, "leave_ideal": ideal_leave}


def part_a(args: argparse.Namespace) -> None:
    print(f"\nA. replicas moved ({args.deployments} deployments x {REPLICAS} replicas on {args.nodes} nodes)")
    # One event moves few replicas, so the ratio is taken over the totals of many events.
    events = max(args.rounds, 10)
    print(f"{'weights':8} {'event':6} {'moved':>7} {'ideal':>7} {'ratio':>6}   (totals over {events} events)")
    for mixed in (False, True):
        runs = [movement(args.nodes, args.deployments, mixed, random.Random(r)) for r in range(events)]
        for event in ("join", "leave"):
            moved = sum(run[event] for run in runs)
            ideal = sum(run[f"{event}_ideal"] for run in runs)
            label = "mixed" if mixed else "equal"
            print(f"{label:8} {event:6} {moved:7.0f} {ideal:7.1f} {moved / ideal:6.2f}x")


# -- B. failover ---------------------------------------------------------------------------


def put(agent: AgentProcess, name: str, spec: dict[str, Any]) -> None:
    response = httpx.put(f"{agent.url}/v1/deployments/{name}", json=spec, timeout=10)
    response.raise_for_status()


def serving(agent: AgentProcess, name: str) -> set[str]:
    return {
        m["name"]
        for m in agent.view()["members"]
        if m["status"] == "alive" and m["replicas"].get(name, {}).get("state") == "ready"
    }


def timed(predicate: Callable[[], bool], timeout: float = 120.0) -> float:
    return wait_for(predicate, timeout, interval=0.02)


def failover_round(workdir: Path, backups: int) -> dict[str, float]:
    with Mesh(workdir, 4, extra_args=APP_DIRS) as mesh:
        mesh.wait_formed(timeout=60)
        entry = mesh.agents[0]
        started = time.monotonic()
        put(entry, "probe-load", {"app": LOADING, "min_replicas": 1})
        timed(lambda: len(serving(entry, "probe-load")) == 1)
        load_s = time.monotonic() - started
        put(entry, "sturdy", {"app": LOADING, "min_replicas": REPLICAS, "backups": backups})
        timed(lambda: len(serving(entry, "sturdy")) == REPLICAS)
        if backups:
            timed(
                lambda: any(
                    m["replicas"].get("sturdy", {}).get("state") == "standby" for m in entry.view()["members"]
                )
            )
        hosts = serving(entry, "sturdy")
        victim = next(a for a in mesh.agents if a.name in hosts and a is not entry)
        observer = (
            next(a for a in mesh.agents if a is not victim and a is not entry)
            if entry.name in hosts
            else entry
        )
        killed = time.monotonic()
        victim.kill()
        timed(lambda: observer.statuses().get(victim.node_id) == "dead")
        detection_s = time.monotonic() - killed
        timed(lambda: len(serving(observer, "sturdy") - {victim.name}) == REPLICAS)
        replacement_s = time.monotonic() - killed
        return {"load": load_s, "detection": detection_s, "replacement": replacement_s}


def part_b(args: argparse.Namespace, workdir: Path) -> None:
    print(f"\nB. failover: SIGKILL of a host until {REPLICAS} replicas serve again (median of {args.rounds})")
    print(f"{'backups':8} {'detect s':>9} {'load s':>7} {'replace s':>10} {'target s':>9} {'margin s':>9}")
    for backups in (0, 1):
        runs = [failover_round(workdir / f"b{backups}r{r}", backups) for r in range(args.rounds)]
        detection = statistics.median(run["detection"] for run in runs)
        load = statistics.median(run["load"] for run in runs)
        replacement = statistics.median(run["replacement"] for run in runs)
        margins = [run["detection"] + run["load"] + 1 - run["replacement"] for run in runs]
        target = detection + load + 1
        print(
            f"{backups:<8} {detection:9.2f} {load:7.2f} {replacement:10.2f} {target:9.2f} {statistics.median(margins):9.2f}"
        )


# -- C. autoscaler -------------------------------------------------------------------------


def part_c(args: argparse.Namespace, workdir: Path) -> None:
    knobs = {"window_s": 1.0, "scale_up_delay_s": 1.0, "scale_down_delay_s": 3.0, "target_concurrency": 1}
    gossip_s = MembershipConfig.local().meta_min_interval_s
    print(f"\nC. autoscaler: 1 -> 6 clients, target concurrency 1, max 3 (median of {args.rounds})")
    print(
        f"{'to desired s':>13} {'to serving s':>13} {'bound s':>8} {'scale-down requests':>20} {'failed':>7}"
    )
    results = [step_round(workdir / f"c{r}", knobs) for r in range(args.rounds)]
    desired = statistics.median(run["desired"] for run in results)
    ready = statistics.median(run["ready"] for run in results)
    sent = sum(run["sent"] for run in results)
    failed = sum(run["failed"] for run in results)
    bound = gossip_s + knobs["scale_up_delay_s"]
    print(f"{desired:13.2f} {ready:13.2f} {bound:8.2f} {sent:20.0f} {failed:7.0f}")


def step_round(workdir: Path, knobs: dict[str, float]) -> dict[str, float]:
    with Mesh(workdir, 4, extra_args=APP_DIRS) as mesh:
        mesh.wait_formed(timeout=60)
        entry = mesh.agents[0]
        put(entry, "elastic", {"app": SLOW, "min_replicas": 1, "max_replicas": 3, "autoscaling": knobs})
        timed(lambda: len(serving(entry, "elastic")) == 1)
        return step(mesh, entry)


def step(mesh: Mesh, entry: AgentProcess) -> dict[str, float]:
    counts = {"sent": 0.0, "failed": 0.0}
    lock = threading.Lock()

    def client(stop: threading.Event, body: dict[str, Any], offset: int, count: bool) -> None:
        for i in range(5000):
            if stop.is_set():
                return
            agent = mesh.agents[(i + offset) % len(mesh.agents)]
            response = httpx.post(f"{agent.url}/v1/predict/elastic", json=body, timeout=60)
            if count:
                with lock:
                    counts["sent"] += 1
                    counts["failed"] += response.status_code != 200

    def desired() -> int:
        return int(entry.get("/v1/deployments/elastic").json()["desired"])

    heavy, light = threading.Event(), threading.Event()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        stepped = time.monotonic()
        loads = [pool.submit(client, heavy, {"do": "sleep", "s": 0.5}, i, False) for i in range(6)]
        timed(lambda: desired() == 3)
        to_desired = time.monotonic() - stepped
        timed(lambda: len(serving(entry, "elastic")) == 3)
        to_ready = time.monotonic() - stepped
        heavy.set()
        for future in loads:
            future.result(timeout=120)
        trickle = pool.submit(client, light, {"x": 1}, 0, True)
        timed(lambda: len(serving(entry, "elastic")) == 1 and desired() == 1)
        light.set()
        trickle.result(timeout=120)
    return {"desired": to_desired, "ready": to_ready, **counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--skip-agents", action="store_true", help="only part A (no agents)")
    parser.add_argument("--parts", default="ABCD", help="which parts to run, e.g. D")
    args = parser.parse_args()
    if "A" in args.parts:
        part_a(args)
    if args.skip_agents:
        return
    os.environ["MESHNODE_TEST_SETUP_S"] = str(SETUP_S)  # read by the workers the agents start
    with tempfile.TemporaryDirectory(prefix="meshnode-bench-") as tmp:
        if "B" in args.parts:
            part_b(args, Path(tmp))
        if "C" in args.parts:
            part_c(args, Path(tmp))
        if "D" in args.parts:
            part_d(args.rounds, Path(tmp))


if __name__ == "__main__":
    main()
