"""A partition repaired while its verdicts are still spreading must accuse nobody on either side.

Found by the chaos soak (``bench/chaos.py --soak-minutes``, 10 s partitions on the LAN profile):
when the repair comes about one suspicion timeout after the cut, each side is just declaring the
other dead, and those fresh ``dead`` rumours cross the healed link and reach the accused's own side.
Before the fix that side took them and marked its partner dead for a few milliseconds until it
refuted. Now a node that heard from the accused more recently than any verdict could be (the
shortest suspicion) sends the rumour to the accused to refute instead. ``test_membership_sim.py``
covers the long partition (15 s), where the rumours are spent and only push-pull rows cross.
"""

from __future__ import annotations

import pytest

from meshnode.mesh.config import MembershipConfig
from meshnode.mesh.simulation import Change, Simulation
from meshnode.mesh.types import NodeId, Status

SEEDS = range(12)


def same_side_deaths(config: MembershipConfig, seed: int, size: int, hold_s: float) -> list[Change]:
    """Deaths a node declared of a node on its own side of a partition repaired after `hold_s`."""
    changes: list[Change] = []
    sim = Simulation(config, seed=seed, on_change=changes.append)
    ids = sim.bootstrap(size)
    sim.run_for(10 * config.probe_interval_s)
    halves = [ids[: size // 2], ids[size // 2 :]]
    sim.partition(halves)
    sim.run_for(hold_s)
    sim.repair()
    sim.run_for(40 * config.probe_interval_s)
    side: dict[NodeId, int] = {node: index for index, half in enumerate(halves) for node in half}
    return [c for c in changes if side[c.observer] == side[c.node] and c.status == Status.DEAD]


@pytest.mark.parametrize(
    ("config", "size", "holds_s"),
    [
        # Around the suspicion timeout at N = 4: the repair lands while verdicts spread.
        (MembershipConfig.local(), 4, (2.0, 2.5, 3.0, 3.5)),
        (MembershipConfig.local(), 10, (2.0, 3.0, 4.0)),
        (MembershipConfig.lan(), 4, (10.0, 11.0, 12.0)),
    ],
    ids=["local-4", "local-10", "lan-4"],
)
def test_a_partition_repaired_within_a_suspicion_timeout_accuses_no_node_on_its_own_side(
    config: MembershipConfig, size: int, holds_s: tuple[float, ...]
) -> None:
    accused = [
        (seed, hold_s, change)
        for seed in SEEDS
        for hold_s in holds_s
        for change in same_side_deaths(config, seed, size, hold_s)
    ]
    assert not accused, accused
