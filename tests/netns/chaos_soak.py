"""The chaos soak: one mesh under one load for minutes, with random faults from the suite, one at a time.

Four agents (LAN timings, since loss is among the faults; the last one on libfaketime when it is
installed) serve two replicas of the echo app under a load that knows every node and retries what
never ran. A seeded random sequence of faults hits it: a node killed and restarted, frozen for
``plan.pause_s``, restarted gracefully, the mesh cut into random halves for ``plan.partition_s``,
``plan.loss_percent`` % loss for half of ``plan.loss_s``, the last node's clock stepped two minutes
either way. After each, the soak waits until the mesh is whole again (every node alive everywhere,
two ready replicas) and records how long that took and what the logs say about healthy nodes.
``bench/chaos.py --soak-minutes 30`` runs it and prints the counts, which should all stay zero.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.netns.chaos import DEPLOYMENT, LOAD_OPTIONS, ChaosMesh, replicated
from tests.netns.chaos_clock import faketime_env, faketime_library, step_clock
from tests.netns.chaos_load import LoadStats, Plan, Transition
from tests.netns.chaos_network import add_loss, remove_loss

__all__ = ["FAULTS", "FaultRecord", "soak"]

FAULTS = ("kill", "pause", "restart", "partition", "loss", "clock")
AGENTS = 4
CLOCKED = AGENTS - 1
CLOCK_STEP_S = 120


@dataclass(frozen=True)
class FaultRecord:
    """One fault of the soak: what, on whom, how long until the mesh was whole, what was wrongly said."""

    fault: str
    victim: str
    recover_s: float
    # Healthy nodes suspected (cleared later) and declared dead, in any agent's log.
    suspicions: int
    false_deaths: list[Transition]


def soak(
    workdir: Path, minutes: float, rng: random.Random, plan: Plan, report: Callable[[str], None]
) -> tuple[LoadStats, list[FaultRecord]]:
    """Faults for ``minutes``, drawn from ``rng``; the load's summary and a record per fault."""
    clocked = faketime_library() is not None
    offset = workdir / "clocked.faketime"
    env = {CLOCKED: faketime_env(offset)} if clocked else {}
    faults = FAULTS if clocked else tuple(fault for fault in FAULTS if fault != "clock")
    with replicated("mncz", workdir, AGENTS, profile=plan.loss_profile, env=env) as (mesh, _hosts, _entry):
        # Paced by the clients, not by the app: under libfaketime with the monotonic clock left
        # alone, Python's time.sleep fails (EINVAL), so the clocked node's replica must not sleep.
        # A patient client: 20 retries at most 0.5 s apart outlast the LAN profile's detection of
        # a partition (5-10 s), until which a side with no replica of its own answers 503 at once.
        options = {
            **LOAD_OPTIONS,
            "seconds": minutes * 60 + 600,
            "think_s": plan.loss_service_s,
            "retries": 20,
        }
        load = mesh.load(range(AGENTS), concurrency=plan.concurrency, **options)
        load.wait_flowing()
        records: list[FaultRecord] = []
        ends = time.monotonic() + minutes * 60
        while time.monotonic() < ends:
            fault, victim = rng.choice(faults), rng.randrange(AGENTS)
            if fault == "clock":
                victim = CLOCKED
            mark = mesh.mark()
            began = time.monotonic()
            halves = _inject(mesh, fault, victim, plan, rng, offset)
            mesh.wait_members(dict.fromkeys(mesh.names, "alive"))
            mesh.wait_replicas(DEPLOYMENT, 2)
            record = _record(mesh, fault, victim, mark, time.monotonic() - began, halves)
            records.append(record)
            report(
                f"{fault} on {record.victim}: whole again after {record.recover_s:.1f} s, "
                f"{record.suspicions} suspicions, {len(record.false_deaths)} false deaths"
            )
        return load.stop(), records


def _inject(
    mesh: ChaosMesh, fault: str, victim: int, plan: Plan, rng: random.Random, offset: Path
) -> list[set[str]]:
    """Carry out one fault and end it; the halves when it was a partition."""
    names = mesh.names
    # Each fault's length is the fault itself: the sleeps below hold it, they wait for nothing.
    match fault:
        case "kill":
            mesh.kill(victim)
            survivors = [i for i in range(AGENTS) if i != victim]
            mesh.wait_members({names[i]: "alive" for i in survivors} | {names[victim]: "dead"}, survivors)
            mesh.start(victim)
        case "pause":
            mesh.signal(victim, signal.SIGSTOP)
            time.sleep(plan.pause_s)
            mesh.signal(victim, signal.SIGCONT)
        case "restart":
            mesh.terminate(victim)
            mesh.start(victim)
        case "partition":
            order = rng.sample(range(AGENTS), AGENTS)
            groups = [order[: AGENTS // 2], order[AGENTS // 2 :]]
            mesh.net.partition([[mesh.hosts[i] for i in group] for group in groups])
            try:
                time.sleep(plan.partition_s)
            finally:
                mesh.net.repair()
            return [{names[i] for i in group} for group in groups]
        case "loss":
            add_loss(mesh, plan.loss_percent)
            try:
                time.sleep(plan.loss_s / 2)
            finally:
                remove_loss(mesh)
        case "clock":
            step_clock(mesh, victim, offset, rng.choice((-CLOCK_STEP_S, CLOCK_STEP_S)))
            time.sleep(plan.fault_at_s)
            step_clock(mesh, victim, offset, 0)
    return []


def _record(
    mesh: ChaosMesh, fault: str, victim: int, mark: list[int], took: float, halves: list[set[str]]
) -> FaultRecord:
    """What the logs say about healthy nodes since ``mark``."""
    faulty = {mesh.names[victim]} if fault in ("kill", "pause", "restart") else set()
    changes = mesh.transitions(mark)
    if halves:
        # Across a cut, every node is rightly suspected and declared dead; within a half, none.
        wrong = [t for t in changes if any({t.observer, t.subject} <= half for half in halves)]
    else:
        wrong = [t for t in changes if t.subject not in faulty]
    return FaultRecord(
        fault,
        mesh.names[victim] if faulty or fault == "clock" else "all",
        round(took, 1),
        sum(t.current == "suspect" for t in wrong),
        [t for t in wrong if t.current == "dead"],
    )
