"""Two regions 20 ms apart (issue 12, "Chaos suite"): requests stay in their region while its replica
has room, spill to the other region when it is saturated, and fail over to it when the region loses
its replica, with no request failing. The scenario, and how the 20 ms are made, are in
``chaos_regions.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.netns.chaos_load import Plan
from tests.netns.chaos_regions import regions
from tests.netns.netns import require_netns

pytestmark = pytest.mark.netns

# With room in the region, at most this share may cross (a stale queue figure can misroute a few).
STAY_MAX_SHARE = 0.05
# Saturated: the clients beyond the local replica's admission (2 of 6) must cross, at least most.
SPILL_MIN_SHARE = 0.2


@pytest.mark.timeout(300)
def test_requests_stay_in_their_region_spill_when_it_is_full_and_fail_over_when_it_is_gone(
    tmp_path: Path,
) -> None:
    require_netns()
    outcome = regions(tmp_path, Plan())
    print(outcome)
    for phase, stats in outcome.loads.items():
        assert stats.requests > 0 and not stats.failed, f"{phase}: {outcome}"
    timed = outcome.facts["health_ms"]
    assert timed["other_region"] >= timed["same_region"] + 15, f"no distance between the regions: {outcome}"
    share = outcome.facts["crossed"]
    assert share["stay"] <= STAY_MAX_SHARE, outcome
    assert share["spill"] >= SPILL_MIN_SHARE, outcome
    assert share["failover"] == 1.0, outcome
    assert not outcome.suspected, outcome
