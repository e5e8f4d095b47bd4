"""Chaos scenarios on processes: a replica node killed, frozen, every node restarted, the mesh overloaded.

Each runs three agents (and a client machine) in namespaces under a closed-loop load and returns an
``Outcome``; the tests assert on it, ``bench/chaos.py`` prints it. The load enters a node without a
replica, as an operator's client would enter any node.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.netns.chaos import DEPLOYMENT, LOAD_OPTIONS, NARROW_APP, replicated
from tests.netns.chaos_load import Outcome, Plan

__all__ = [
    "NARROW_DELAY_S",
    "OVERLOAD_FACTOR",
    "overload",
    "pause_replica",
    "rolling_restart",
    "sigkill_replica",
]

AGENTS = 3
REPLICAS = 2
# The overload: requests in flight per unit of capacity (running plus queued, over every replica).
OVERLOAD_FACTOR = 3
# Narrow's service time: 2 slots per replica at this rate is ~10 requests/s per replica.
NARROW_DELAY_S = 0.2
NARROW_CAPACITY = 2 + 2  # chaos_apps.Narrow: two running, two waiting


def sigkill_replica(workdir: Path, plan: Plan) -> Outcome:
    """SIGKILL a replica node under load; recovered once every survivor agrees on two ready replicas."""
    with replicated("mnck", workdir, AGENTS) as (mesh, hosts, entry):
        victim = mesh.names.index(sorted(hosts)[0])
        load = mesh.load([entry], concurrency=plan.concurrency, **LOAD_OPTIONS)
        load.wait_flowing()
        load.at(plan.fault_at_s)
        mark = mesh.mark()
        mesh.kill(victim)
        killed_at = time.monotonic()
        survivors = [index for index in range(AGENTS) if index != victim]
        expected = {mesh.names[i]: "alive" for i in survivors} | {mesh.names[victim]: "dead"}
        mesh.wait_members(expected, survivors)
        after = mesh.wait_replicas(DEPLOYMENT, REPLICAS, survivors)
        recover_s = time.monotonic() - killed_at
        load.at(plan.fault_at_s + plan.load_s)
        stats = load.stop()
        victim_name = mesh.names[victim]
        return Outcome(
            "SIGKILL a replica node",
            {"": stats},
            recover_s,
            mesh.suspected(mark, spared=lambda name: name == victim_name),
            {"victim": victim_name, "replicas_before": sorted(hosts), "replicas_after": sorted(after)},
            mesh.logs(),
        )


def pause_replica(workdir: Path, plan: Plan) -> Outcome:
    """SIGSTOP a replica node for ``plan.pause_s``, then SIGCONT; recovered once all see it alive."""
    with replicated("mncs", workdir, AGENTS) as (mesh, hosts, entry):
        victim = mesh.names.index(sorted(hosts)[0])
        load = mesh.load([entry], concurrency=plan.concurrency, **LOAD_OPTIONS)
        load.wait_flowing()
        load.at(plan.fault_at_s)
        mark = mesh.mark()
        mesh.signal(victim, signal.SIGSTOP)
        # The freeze itself is the fault: its length is the scenario's, not a wait for a condition.
        time.sleep(plan.pause_s)
        mesh.signal(victim, signal.SIGCONT)
        resumed_at = time.monotonic()
        mesh.wait_members(dict.fromkeys(mesh.names, "alive"))
        after = mesh.wait_replicas(DEPLOYMENT, REPLICAS)
        recover_s = time.monotonic() - resumed_at
        load.at(plan.fault_at_s + plan.pause_s + plan.load_s)
        stats = load.stop()
        victim_name = mesh.names[victim]
        return Outcome(
            f"SIGSTOP a replica node {plan.pause_s:g} s",
            {"": stats},
            recover_s,
            mesh.suspected(mark, spared=lambda name: name == victim_name),
            {"victim": victim_name, "replicas_before": sorted(hosts), "replicas_after": sorted(after)},
            mesh.logs(),
        )


def rolling_restart(workdir: Path, plan: Plan) -> Outcome:
    """SIGTERM and restart every node in turn (same data dir) under a load that enters every node.

    The next node goes only once the mesh is whole again: every node sees every node alive and
    agrees on two ready replicas. ``recover_s`` is the longest such wait.
    """
    with replicated("mncr", workdir, AGENTS) as (mesh, hosts, _entry):
        # A client that knows every node, as MeshClient does: a node refusing connections is skipped.
        load = mesh.load(range(AGENTS), concurrency=plan.concurrency, **LOAD_OPTIONS)
        load.wait_flowing()
        load.at(plan.fault_at_s)
        mark = mesh.mark()
        took: dict[str, float] = {}
        codes: dict[str, int] = {}
        for index, name in enumerate(mesh.names):
            began = time.monotonic()
            codes[name] = mesh.terminate(index)
            mesh.start(index)
            mesh.wait_members(dict.fromkeys(mesh.names, "alive"))
            mesh.wait_replicas(DEPLOYMENT, REPLICAS)
            took[name] = round(time.monotonic() - began, 1)
        stats = load.stop()
        return Outcome(
            "rolling restart of every node",
            {"": stats},
            max(took.values()),
            mesh.suspected(mark),
            {"restart_s": took, "exit_codes": codes, "replicas_before": sorted(hosts)},
            mesh.logs(),
        )


def overload(workdir: Path, plan: Plan) -> Outcome:
    """Offer three times the capacity of two narrow replicas; no retries, so every refusal counts."""
    with replicated("mnco", workdir, AGENTS, app=NARROW_APP) as (mesh, _hosts, entry):
        clients = OVERLOAD_FACTOR * NARROW_CAPACITY * REPLICAS
        options = {**LOAD_OPTIONS, "retries": 0, "body": {"delay_s": NARROW_DELAY_S}}
        mark = mesh.mark()
        load = mesh.load([entry], concurrency=clients, **options)
        load.wait_flowing()
        load.at(plan.overload_s)
        stats = load.stop()
        served = stats.by_status.get("200", 0)
        return Outcome(
            f"{OVERLOAD_FACTOR}x overload (queue 2)",
            {"": stats},
            None,
            mesh.suspected(mark),
            {
                "clients": clients,
                "served_per_s": round(served / stats.summary["seconds"], 1),
                "slowest_refusal_ms": stats.summary["refused_max_ms"],
                "refusals_without_retry_after": stats.summary["refused_without_retry_after"],
            },
            mesh.logs(),
        )
