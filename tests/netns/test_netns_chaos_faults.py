"""Chaos on processes, with real agents in namespaces under load (issue 12, "Chaos suite").

A replica node killed or frozen, every node restarted in turn, three times the capacity offered:
no request fails, no healthy node is suspected. The scenarios are in ``chaos_faults.py``;
``bench/chaos.py`` runs them longer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.netns.chaos_faults import overload, pause_replica, rolling_restart, sigkill_replica
from tests.netns.chaos_load import Plan
from tests.netns.netns import require_netns

pytestmark = pytest.mark.netns

PLAN = Plan()
# A refusal is an answer from memory (no replica work): fast even with both cores saturated.
FAST_REFUSAL_MS = 1000.0


@pytest.mark.timeout(300)
def test_a_replica_node_killed_under_load_fails_no_request(tmp_path: Path) -> None:
    require_netns()
    outcome = sigkill_replica(tmp_path, PLAN)
    print(outcome)
    stats = outcome.loads[""]
    assert stats.requests > 0 and not stats.failed, outcome
    assert not outcome.suspected, outcome
    assert outcome.facts["victim"] not in outcome.facts["replicas_after"], outcome


@pytest.mark.timeout(300)
def test_a_replica_node_frozen_for_8_s_fails_no_request_and_suspects_no_healthy_node(tmp_path: Path) -> None:
    require_netns()
    outcome = pause_replica(tmp_path, PLAN)
    print(outcome)
    stats = outcome.loads[""]
    assert stats.requests > 0 and not stats.failed, outcome
    assert not outcome.suspected, outcome


@pytest.mark.timeout(300)
def test_every_node_restarted_in_turn_under_load_fails_no_request(tmp_path: Path) -> None:
    require_netns()
    outcome = rolling_restart(tmp_path, PLAN)
    print(outcome)
    stats = outcome.loads[""]
    assert stats.requests > 0 and not stats.failed, outcome
    assert set(outcome.facts["exit_codes"].values()) == {0}, outcome
    assert not outcome.suspected, outcome


@pytest.mark.timeout(300)
def test_three_times_the_capacity_gets_fast_refusals_with_retry_after_and_no_timeout(tmp_path: Path) -> None:
    require_netns()
    outcome = overload(tmp_path, PLAN)
    print(outcome)
    stats = outcome.loads[""]
    assert set(stats.by_status) <= {"200", "429", "503"}, outcome
    assert stats.by_status.get("200", 0) > 0 and stats.failed, f"no overload happened: {outcome}"
    assert stats.summary["refused_without_retry_after"] == 0, outcome
    assert stats.summary["refused_max_ms"] < FAST_REFUSAL_MS, outcome
    assert not outcome.suspected, outcome
