"""A partition repaired while its verdicts are still spreading must accuse nobody on either side.

Found by the chaos soak (``bench/chaos.py --soak-minutes``, 10 s partitions on the LAN profile):
when the repair comes about one suspicion timeout after the cut, each side is just declaring the
other dead, and those fresh ``suspect``/``dead`` rumours cross the healed link and reach the
accused's own side, which takes them and marks its partner dead for a few milliseconds until it
refutes. ``test_membership_sim.py`` covers the long partition (15 s), where the rumours are spent
and only push-pull rows cross, which go to the accused alone.
"""

from __future__ import annotations

import pytest

from meshnode.mesh.config import MembershipConfig
from meshnode.mesh.simulation import Change, Simulation
from meshnode.mesh.types import Status

LOCAL = MembershipConfig.local()
# Around the local profile's suspicion timeout at N = 4: the repair lands while verdicts spread.
HOLDS_S = (2.5, 3.0)
SEEDS = range(5)


@pytest.mark.skip(
    reason="known bug (mesh/membership.py): a gossiped Suspect or Dead from the far side of a "
    "partition repaired within about one suspicion timeout is taken by the accused's own side, "
    "which briefly declares a node dead that it never lost contact with (seeds 2-4 here; LAN "
    "profile the same at 10-12 s). Converting such a Dead into a suspicion sent to the accused "
    "(as _merge does for push-pull rows) halves it but leaves the Suspect path; a node with direct "
    "recent contact with the accused must not take the accusation"
)
def test_a_partition_repaired_within_a_suspicion_timeout_accuses_no_node_on_its_own_side() -> None:
    accused: list[tuple[int, float, Change]] = []
    for seed in SEEDS:
        for hold_s in HOLDS_S:
            changes: list[Change] = []
            sim = Simulation(LOCAL, seed=seed, on_change=changes.append)
            ids = sim.bootstrap(4)
            sim.run_for(5.0)
            halves = [ids[:2], ids[2:]]
            sim.partition(halves)
            sim.run_for(hold_s)
            sim.repair()
            sim.run_for(20.0)
            side = {node: index for index, half in enumerate(halves) for node in half}
            accused += [
                (seed, hold_s, c)
                for c in changes
                if c.observer != c.node and side[c.observer] == side[c.node] and c.status == Status.DEAD
            ]
    assert not accused, accused
