"""Chaos on the network, with real agents in namespaces under load (issue 12, "Chaos suite").

A partition into halves for 30 s: each half serves alone from its own nodes, one membership again
within the profile's heal bound after the repair, exactly the declared replicas once healed, and no
request lost. Then 10 % random loss on every node for 30 s: no false death and no failed request
after retries. The scenarios are in ``chaos_network.py``; ``bench/chaos.py`` runs them longer (the
loss for the issue's 2 minutes).
The unloaded partition, with its placement details, is ``test_netns_partition.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.netns.chaos_load import Plan
from tests.netns.chaos_network import loss, partition
from tests.netns.netns import require_netns

pytestmark = pytest.mark.netns

PLAN = Plan()
# Above the heal bound: polling four views from the client takes a second or more on 2 loaded cores.
HEAL_SLACK_S = 8.0


@pytest.mark.timeout(400)
def test_halves_apart_for_30_s_under_load_serve_alone_and_heal_within_the_bound(tmp_path: Path) -> None:
    require_netns()
    outcome = partition(tmp_path, PLAN)
    print(outcome)
    for phase, stats in outcome.loads.items():
        assert stats.requests > 0 and not stats.failed, f"{phase}: {outcome}"
    served = outcome.facts["served_apart"]
    assert set(served["A"]) <= {"n0", "n1"} and set(served["B"]) <= {"n2", "n3"}, outcome
    facts = outcome.facts
    assert facts["heal_s"] <= facts["heal_bound_s"] + HEAL_SLACK_S, outcome
    assert not facts["own_side_deaths"], outcome
    # Rendezvous hashing over the same four nodes puts the two replicas back where they were.
    assert facts["replicas_after"] == facts["replicas_before"], outcome


@pytest.mark.timeout(400)
def test_ten_percent_loss_on_every_node_for_30_s_kills_no_node_and_fails_no_request(
    tmp_path: Path,
) -> None:
    require_netns()
    outcome = loss(tmp_path, PLAN)
    print(outcome)
    stats = outcome.loads[""]
    assert outcome.facts["frames_dropped"] > 0, f"no loss happened: {outcome}"
    assert stats.requests > 0 and not stats.failed, outcome
    assert not outcome.suspected, f"false deaths: {outcome}"
