"""A member that lies about counters, in a whole mesh on the simulator (``mesh/bounds.py``).

One member, the liar, sends what a buggy or compromised member could: ``dead`` and ``suspect`` at
the highest incarnations the wire accepts about a live node, under its own name and forged under
the victim's, push-pull rows declaring the victim dead, and deployment records stamped far in the
future. The victim must stay alive in every view (each accusation refuted within a probe round or
so), the future records must be refused everywhere, declarations made afterwards must still win
everywhere, and a real crash of the victim must still be detected. Packets go through the real
wire (``encode=True``); the seed is in every assertion message.
"""

from __future__ import annotations

import os

from meshnode.mesh.bounds import MAX_INCARNATION, MAX_META_VERSION, MAX_STAMP
from meshnode.mesh.config import MembershipConfig
from meshnode.mesh.deployment import DeploymentSpec
from meshnode.mesh.metadata import NodeMeta
from meshnode.mesh.records import COUNTER_BITS, Record
from meshnode.mesh.simulation import Change, Simulation
from meshnode.mesh.types import Address, NodeId, Status
from meshnode.mesh.wire import Dead, MemberState, Message, Packet, PushPull, Suspect

# Enough nodes that gossip takes several hops; the wire encoding makes larger meshes slow to run.
N = 40
SEED = int(os.environ.get("MESHNODE_SIM_SEED", "20261121"))
LOCAL = MembershipConfig.local()
SPEC = DeploymentSpec("apps/echo.py:Echo", min_replicas=1, max_replicas=1)
# The longest any view may hold the live victim suspect, dead or left after a wave of lies: gossip
# brings each accusation to the victim within a few gossip intervals, and its refutation back
# (measured: under 0.1 s for seeds 0-9).
REFUTED_WITHIN_S = 1.0


class Downtime:
    """How long each observer held the victim as anything but alive."""

    def __init__(self, victim: NodeId) -> None:
        self.victim = victim
        self.since: dict[NodeId, float] = {}
        self.longest = 0.0

    def __call__(self, change: Change) -> None:
        if change.node != self.victim:
            return
        if change.status == Status.ALIVE:
            started = self.since.pop(change.observer, None)
            if started is not None:
                self.longest = max(self.longest, change.time - started)
        else:
            self.since.setdefault(change.observer, change.time)


def lies(victim: NodeId, victim_addr: Address, liar: NodeId) -> list[Message]:
    """Every accusation a member can make about `victim` at the top of the wire's range."""
    row = MemberState(victim, victim_addr, MAX_INCARNATION, Status.DEAD, MAX_META_VERSION, NodeMeta(name="x"))
    return [
        Dead(victim, MAX_INCARNATION, liar),
        Suspect(victim, MAX_INCARNATION - 1, liar),
        Dead(victim, MAX_INCARNATION, victim),  # a leave, forged
        PushPull(False, False, (row,)),
    ]


def alive_everywhere(sim: Simulation, victim: NodeId) -> bool:
    return all(
        sim.status_in_view(observer, victim) == Status.ALIVE for observer in sim.live() if observer != victim
    )


def test_a_liar_can_neither_evict_a_live_member_nor_freeze_the_deployment_table() -> None:
    sim = Simulation(LOCAL, seed=SEED, encode=True)
    ids = sim.bootstrap(N)
    sim.run_for(2.0)
    liar, victim = ids[0], ids[1]
    liar_addr, victim_addr = sim.nodes[liar].core.me.addr, sim.nodes[victim].core.me.addr
    downtime = Downtime(victim)
    sim.on_change = downtime

    # Two waves: the second finds the victim at the top of the range, where it has no room left.
    for wave in (1, 2):
        for target in ids[1:]:
            for sender in (liar, victim):  # under its own name, and forged under the victim's
                for lie in lies(victim, victim_addr, liar):
                    sim.inject(target, Packet(sender, liar_addr if sender == liar else victim_addr, (lie,)))
            # Past the wire's range: dropped whole before any core sees it.
            sim.inject(target, Packet(liar, liar_addr, (Dead(victim, 2**64 - 1, liar),)))
        settled = sim.run_until(lambda: alive_everywhere(sim, victim), sim.now + 10.0)
        assert settled, f"seed={SEED}: wave {wave} left the victim dead in some view"
        sim.run_for(10.0)  # no suspicion left behind to kill it later
        assert alive_everywhere(sim, victim), f"seed={SEED}: the victim died after wave {wave}"
        assert not downtime.since
        assert downtime.longest < REFUTED_WITHIN_S, f"seed={SEED}: held not alive {downtime.longest:.2f} s"
        assert sim.malformed == wave * (N - 1), f"seed={SEED}: {sim.malformed} packets failed to decode"
        assert sim.nodes[victim].core.incarnation == MAX_INCARNATION  # lifted, yet refuting
        assert all(
            in_view.incarnation <= MAX_INCARNATION
            for s in sim.nodes.values()
            for in_view in s.core.members.values()
        )
    cut = sum(s.core.refused["incarnation"] for s in sim.nodes.values())
    assert cut >= 2 * (N - 2), f"seed={SEED}: the claims past the step were not counted ({cut})"

    # Records stamped an hour ahead, and at the maximum, to every node: refused everywhere.
    hour_ahead = (sim.wall_ms() + 3_600_000) << COUNTER_BITS
    for target in ids[1:]:
        future = (Record("echo", hour_ahead, liar, None), Record("pinned", MAX_STAMP, liar, SPEC))
        sim.inject(target, Packet(liar, liar_addr, future))
    sim.run_for(5.0)
    for node in ids[1:]:
        core = sim.nodes[node].core
        assert core.deployments.get("echo") is None and core.deployments.get("pinned") is None, f"seed={SEED}"
        assert core.refused["stamp_ahead"] == 2, f"seed={SEED}: {node} counted {core.refused}"

    # Declarations made afterwards, on the victim too, still win everywhere.
    sim.declare(victim, "echo", SPEC, sim.wall_ms())
    sim.run_for(0.5)
    sim.declare(ids[7], "echo", None, sim.wall_ms())

    def removal_everywhere() -> bool:
        records = [sim.nodes[node].core.deployments.get("echo") for node in ids]
        return all(record is not None and record.removed and record.origin == ids[7] for record in records)

    assert sim.run_until(removal_everywhere, sim.now + 10.0), f"seed={SEED}: a later declaration lost"

    # And a real crash of the victim, at the top of the range, is still seen everywhere.
    sim.crash(victim)
    crashed = sim.run_until(
        lambda: all(sim.status_in_view(o, victim) == Status.DEAD for o in sim.live()),
        sim.now + 1.5 * LOCAL.expected_detection_s(N),
    )
    assert crashed, f"seed={SEED}: the victim's crash was not detected everywhere"
