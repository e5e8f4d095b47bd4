"""Pre-warm benchmark (part D of ``bench/placement.py``): how soon a deployment serves at its target
latency after a step and after a ramp of load, with pre-warming and with the autoscaler alone.

Usage:  python bench/prewarm.py [--rounds 3]     (``python bench/placement.py`` runs it as part D)

Four agents (``--profile local``) and one deployment per round of ``bench/prewarm_app.py``: a model
that takes ``SETUP_S`` to load and serves two requests of ``SERVICE_S`` at a time, so one replica
serves two clients at ``SERVICE_S`` and more only by queueing them. The knobs (``KNOBS``): target
concurrency 2, window 6 s, scale-up delay 3 s, and for the pre-warm side ``prewarm: true`` with a
5 s horizon floor. Clients each keep one request in flight, through the four agents in turn; the
load holds at its start for ``SETTLE_S`` (so the windows are full), then changes:

- step: 2 clients, then 4 at once;
- ramp: 1 client, then one more at the change and every ``RAMP_STEP_S`` after it, up to 4.

Four clients need two replicas. The change comes once the starting load has held ``SETTLE_S``
and no backup is warm (the starting load's own rise may pre-warm one, which must be released
first). Measured from the change: when a second replica was first seen (starting,
``standby`` or ready: the pre-warm's start, or the autoscaler's), when ``desired`` reached 2, when a second replica served, and the time to target latency: the first moment, once
the load is at its top, from which the median latency of the requests started in the next
``HOLD_S`` is within ``TARGET_S`` (1.4 x the service time; one replica serves 3 clients at 1.5 x and
4 at 2 x). Medians over the rounds, the two sides alternating, and the ratio of the autoscaler
alone over pre-warm.

It measures and prints; it never asserts.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the integration tests' agent harness is reused here

from tests.integration.agents import AgentProcess, Mesh, wait_for  # noqa: E402

APP = f"{Path(__file__).resolve().parent / 'prewarm_app.py'}:SlowModel"
SETUP_S = 5.0
SERVICE_S = 0.5
TARGET_S = 0.7
SETTLE_S = 14.0
AFTER_S = 30.0
RAMP_STEP_S = 4.0
CLIENTS = 4
BIN_S = 0.5
HOLD_S = 2.0
VERBOSE = False
KNOBS = {
    "target_concurrency": 2,
    "window_s": 6.0,
    "scale_up_delay_s": 3.0,
    "scale_down_delay_s": 120.0,
    "prewarm_horizon_s": 5.0,
}


def clients_at(scenario: str, t: float) -> int:
    """How many clients run `t` seconds after the change (negative: before it)."""
    if scenario == "step":
        return 2 if t < 0 else CLIENTS
    return 1 if t < 0 else min(CLIENTS, 2 + int(t // RAMP_STEP_S))


def deployment(agent: AgentProcess, name: str) -> dict[str, Any]:
    body: dict[str, Any] = agent.get(f"/v1/deployments/{name}").json()
    return body


def one_round(mesh: Mesh, name: str, scenario: str, prewarm: bool) -> dict[str, float]:
    """One deployment under one load shape: the times of its events, from the change."""
    entry = mesh.agents[0]
    spec = {"app": APP, "min_replicas": 1, "max_replicas": 2, "autoscaling": {**KNOBS, "prewarm": prewarm}}
    httpx.put(f"{entry.url}/v1/deployments/{name}", json=spec, timeout=10).raise_for_status()
    wait_for(lambda: deployment(entry, name)["ready"] == 1, 120, interval=0.2)
    # The change comes once the starting load has settled: its own rise from nothing may have
    # pre-warmed a backup, which must be released first, or the round would start warm.
    change, end = [math.inf], [math.inf]
    lock = threading.Lock()
    latencies: list[tuple[float, float]] = []
    failed = [0]

    def client(index: int) -> None:
        for sent in range(10_000):  # bounded, and by the clock
            now = time.monotonic()
            if now >= end[0]:
                return
            if clients_at(scenario, now - change[0]) <= index:
                time.sleep(0.05)
                continue
            agent = mesh.agents[(index + sent) % len(mesh.agents)]
            answer = httpx.post(f"{agent.url}/v1/predict/{name}", json={"s": SERVICE_S}, timeout=60)
            with lock:
                latencies.append((now - change[0], time.monotonic() - now))
                failed[0] += answer.status_code != 200

    def warm(body: dict[str, Any]) -> bool:
        return any(replica["status"] == "standby" for replica in body["replicas"])

    events: dict[str, float] = {}
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(client, index) for index in range(CLIENTS)]
        started = time.monotonic()
        wait_for(
            lambda: time.monotonic() - started >= SETTLE_S and not warm(deployment(entry, name)), 120, 0.2
        )
        change[0] = time.monotonic()
        end[0] = change[0] + AFTER_S
        while time.monotonic() < end[0]:
            body, at = deployment(entry, name), time.monotonic() - change[0]
            if len(body["replicas"]) >= 2:  # starting, standby or ready: a second replica under way
                events.setdefault("second", at)
            if body["desired"] >= 2:
                events.setdefault("desired", at)
            if body["ready"] >= 2:
                events.setdefault("serving", at)
            time.sleep(0.2)
        for future in futures:
            future.result(timeout=120)
    httpx.delete(f"{entry.url}/v1/deployments/{name}", timeout=10)
    wait_for(lambda: not any(name in m["replicas"] for m in entry.view()["members"]), 120, interval=0.5)
    result = {**events, "target": to_target(latencies, full_at(scenario)), "failed": failed[0]}
    if VERBOSE:
        print(f"  {name}: {result}; medians per second: {per_second(latencies)}")
    return result


def full_at(scenario: str) -> float:
    """Seconds from the change until the load is at its top."""
    return 0.0 if scenario == "step" else (CLIENTS - 2) * RAMP_STEP_S


def per_second(latencies: list[tuple[float, float]]) -> list[float]:
    """The median latency of the requests started in each second after the change (for --verbose)."""
    bins: dict[int, list[float]] = {}
    for started, took in latencies:
        if started >= 0:
            bins.setdefault(int(started), []).append(took)
    return [round(statistics.median(bins[second]), 2) for second in sorted(bins)]


def to_target(latencies: list[tuple[float, float]], full_s: float) -> float:
    """Seconds from the change until the deployment serves at target latency under the full load.

    The first time, from `full_s` on and on a half-second grid, from which the median latency of
    the requests started in the next ``HOLD_S`` is within ``TARGET_S``; the end of the run if never.
    """
    last = max((started for started, _ in latencies), default=0.0)
    at = full_s
    while at + HOLD_S <= last:
        took = [took for started, took in latencies if at <= started < at + HOLD_S]
        if took and statistics.median(took) <= TARGET_S:
            return at
        at += BIN_S
    return math.inf


def part_d(rounds: int, workdir: Path) -> None:
    """Run the step and the ramp with and without pre-warm; print the table."""
    print(
        f"\nD. pre-warm: {SETUP_S:g} s model load, {SERVICE_S:g} s requests, two at a time per replica;"
        f" target latency {TARGET_S:g} s (median of {rounds})"
    )
    os.environ["MESHNODE_BENCH_SETUP_S"] = str(SETUP_S)  # read by the workers the agents start
    app_dir = ["--app-dir", str(Path(APP.rsplit(":", 1)[0]).parent)]
    results: dict[tuple[str, bool], list[dict[str, float]]] = {}
    with Mesh(workdir / "d", 4, extra_args={i: app_dir for i in range(4)}) as mesh:
        mesh.wait_formed(timeout=60)
        for r in range(rounds):
            for scenario in ("step", "ramp"):
                for prewarm in (r % 2 == 0, r % 2 == 1):  # alternate which side goes first
                    name = f"{scenario}-{'pre' if prewarm else 'auto'}-{r}"
                    results.setdefault((scenario, prewarm), []).append(
                        one_round(mesh, name, scenario, prewarm)
                    )
    header = f"{'load':5} {'side':10} {'2nd start s':>11} {'desired=2 s':>11} {'2 serving s':>11}"
    print(f"{header} {'to target s':>11} {'failed':>6}")
    for scenario in ("step", "ramp"):
        medians = {}
        for prewarm in (False, True):
            runs = results[(scenario, prewarm)]
            row = {key: median(runs, key) for key in ("second", "desired", "serving", "target")}
            medians[prewarm] = row
            side = "pre-warm" if prewarm else "autoscaler"
            failed = sum(run["failed"] for run in runs)
            cells = " ".join(f"{row[key]:>11.2f}" for key in row)
            print(f"{scenario:5} {side:10} {cells} {failed:6.0f}")
        ratio = (
            medians[False]["target"] / medians[True]["target"] if medians[True]["target"] else float("inf")
        )
        print(f"{scenario:5} {'ratio':10} to target latency, autoscaler alone / pre-warm: {ratio:.2f}x")


def median(runs: list[dict[str, float]], key: str) -> float:
    """The median of `key` over the rounds that saw it (nan when none did)."""
    seen = [run[key] for run in runs if key in run]
    return statistics.median(seen) if seen else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--verbose", action="store_true", help="each round's events and latencies")
    args = parser.parse_args()
    global VERBOSE
    VERBOSE = args.verbose
    with tempfile.TemporaryDirectory(prefix="meshnode-bench-") as tmp:
        part_d(args.rounds, Path(tmp))


if __name__ == "__main__":
    main()
