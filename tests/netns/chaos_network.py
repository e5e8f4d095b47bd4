"""Chaos scenarios on the network: a partition into halves, and random loss on every node, under load.

The partition is ``Bridge.partition`` (an nftables table in the bridge namespace); the loss is a
table of the same family whose forward hook drops a random share of the frames between agents
(``numgen random mod 100 < P``). The client machine is in neither: it reaches every node, so what
is measured is the mesh's own traffic (gossip, the data plane) under the fault.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from meshnode.mesh.config import MembershipConfig
from tests.netns.chaos import DEPLOYMENT, LOAD_OPTIONS, ChaosMesh, replicated
from tests.netns.chaos_client import nft
from tests.netns.chaos_load import Load, LoadStats, Outcome, Plan

__all__ = ["HALVES", "LOSS_TABLE", "add_loss", "loss", "partition", "remove_loss"]

LOSS_TABLE = "meshnode_loss"
# Loads enter one node of each half: h0 in {h0, h1}, h2 in {h2, h3}.
HALVES = ([0, 1], [2, 3])
ENTRIES = (0, 2)


def _handover(
    mesh: ChaosMesh, loads: list[Load], phase: str, stats: dict[str, LoadStats], plan: Plan
) -> list[Load]:
    """Start the next phase's loads (one per half's entry), then stop the previous ones: no gap."""
    fresh = [mesh.load([entry], concurrency=plan.concurrency, **LOAD_OPTIONS) for entry in ENTRIES]
    for load in fresh:
        load.wait_flowing()
    for half, load in zip(("A", "B"), loads, strict=True):
        stats[f"{phase} {half}"] = load.stop()
    return fresh


def partition(workdir: Path, plan: Plan) -> Outcome:
    """Halves apart for ``plan.partition_s`` under a load entering each half; heal and converge.

    The loads run in three phases, each overlapping the next: ``cut`` (from before the cut until
    each half serves alone), ``apart`` (the settled partition: each half must serve from its own
    nodes) and ``heal`` (from the repair until one membership and two replicas again).
    """
    with replicated("mncp", workdir, 4) as (mesh, hosts, _entry):
        stats: dict[str, LoadStats] = {}
        loads = [mesh.load([entry], concurrency=plan.concurrency, **LOAD_OPTIONS) for entry in ENTRIES]
        for load in loads:
            load.wait_flowing()
        loads[0].at(plan.fault_at_s)
        mark = mesh.mark()
        mesh.net.partition([[mesh.hosts[i] for i in half] for half in HALVES])
        cut_at = time.monotonic()
        try:
            for half, other in (HALVES, HALVES[::-1]):
                seen = {mesh.names[i]: "alive" for i in half} | {mesh.names[i]: "dead" for i in other}
                mesh.wait_members(seen, half)
                mesh.wait_replicas(DEPLOYMENT, 2, half)
            apart_s = time.monotonic() - cut_at
            loads = _handover(mesh, loads, "cut", stats, plan)
            # The cut itself is the condition under test; nothing to wait for until it ends.
            time.sleep(max(0.0, cut_at + plan.partition_s - time.monotonic()))
            loads = _handover(mesh, loads, "apart", stats, plan)
        finally:
            mesh.net.repair()
        repaired_at = time.monotonic()
        heal_s = mesh.wait_members(dict.fromkeys(mesh.names, "alive"))
        after = mesh.wait_replicas(DEPLOYMENT, 2)
        converged_s = time.monotonic() - repaired_at
        for half, load in zip(("A", "B"), loads, strict=True):
            stats[f"heal {half}"] = load.stop()
        # Who served each half's requests while apart (the last hop of X-Mesh-Route).
        served_apart = {half: dict(stats[f"apart {half}"].served_by) for half in ("A", "B")}
        return Outcome(
            f"partition 2+2 for {plan.partition_s:g} s",
            stats,
            round(converged_s, 1),
            mesh.suspected(mark, spared=_any_node),
            {
                "halves_serving_alone_s": round(apart_s, 1),
                "heal_s": round(heal_s, 1),
                "heal_bound_s": round(MembershipConfig.local().heal_bound_s(4), 1),
                "served_apart": served_apart,
                "replicas_before": sorted(hosts),
                "replicas_after": sorted(after),
                # A node declared dead by its own side at the merge (it never lost contact with it).
                "own_side_deaths": [
                    t
                    for t in mesh.transitions(mark)
                    if t.current == "dead" and _same_half(mesh, t.observer, t.subject)
                ],
            },
            mesh.logs(),
        )


def _any_node(name: str) -> bool:
    """Every node is suspected across a partition: there, only deaths within a half count (facts)."""
    return True


def _same_half(mesh: ChaosMesh, first: str, second: str) -> bool:
    return any({first, second} <= {mesh.names[i] for i in half} for half in HALVES)


def loss(workdir: Path, plan: Plan) -> Outcome:
    """``plan.loss_percent`` % of the frames between agents dropped for ``plan.loss_s``, under load."""
    with replicated("mncl", workdir, 3, profile=plan.loss_profile) as (mesh, hosts, entry):
        options = {**LOAD_OPTIONS, "body": {"delay_s": plan.loss_service_s}}
        load = mesh.load([entry], concurrency=plan.concurrency, **options)
        load.wait_flowing()
        load.at(plan.fault_at_s)
        mark = mesh.mark()
        add_loss(mesh, plan.loss_percent)
        try:
            # The loss itself is the fault: its length is the scenario's, not a wait for a condition.
            time.sleep(plan.loss_s)
        finally:
            dropped = remove_loss(mesh)
        ended_at = time.monotonic()
        mesh.wait_members(dict.fromkeys(mesh.names, "alive"))
        after = mesh.wait_replicas(DEPLOYMENT, 2)
        recover_s = time.monotonic() - ended_at
        stats = load.stop()
        changes = mesh.transitions(mark)
        return Outcome(
            f"{plan.loss_percent} % loss on every node for {plan.loss_s:g} s ({plan.loss_profile} profile)",
            {"": stats},
            round(recover_s, 1),
            [t for t in changes if t.current == "dead"],
            {
                "frames_dropped": dropped,
                "false_suspicions": sum(t.current == "suspect" for t in changes),
                "replicas_before": sorted(hosts),
                "replicas_after": sorted(after),
            },
            mesh.logs(),
        )


def add_loss(mesh: ChaosMesh, percent: int) -> None:
    """Drop ``percent`` % of the frames between agents, at random, until ``remove_loss``."""
    agents = ", ".join(mesh.net.addresses[: mesh.agents])
    nft(
        mesh.net.bridge_namespace,
        f"""table bridge {LOSS_TABLE} {{
  set agents {{ type ipv4_addr; elements = {{ {agents} }}; }}
  chain forward {{
    type filter hook forward priority 0; policy accept;
    ip saddr @agents ip daddr @agents numgen random mod 100 < {percent} counter drop
  }}
}}
""",
    )


def remove_loss(mesh: ChaosMesh) -> int:
    """End the loss; the frames it dropped (0 when there was none)."""
    namespace = mesh.net.bridge_namespace
    listed = subprocess.run(
        ["ip", "netns", "exec", namespace, "nft", "list", "table", "bridge", LOSS_TABLE],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout
    nft(namespace, f"table bridge {LOSS_TABLE}\ndelete table bridge {LOSS_TABLE}\n")
    return sum(int(packets) for packets in re.findall(r"counter packets (\d+)", listed))
