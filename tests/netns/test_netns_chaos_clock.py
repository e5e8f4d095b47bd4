"""A node's wall clock stepped by minutes under load (issue 12, "Chaos suite"): membership does not
notice, and the effect on deployment records is the documented one (docs/membership.md, "Bounds").

Needs Debian's ``faketime`` (libfaketime), which ``scripts/setup.sh`` installs; the scenario is in
``chaos_clock.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.netns.chaos_clock import clock_step, faketime_library
from tests.netns.chaos_load import Plan
from tests.netns.netns import require_netns

pytestmark = pytest.mark.netns


@pytest.mark.timeout(300)
def test_a_clock_stepped_by_minutes_changes_no_membership_and_only_bounded_stamps(tmp_path: Path) -> None:
    require_netns()
    if faketime_library() is None:
        pytest.skip("needs libfaketime: apt-get install faketime")
    outcome = clock_step(tmp_path, Plan())
    print(outcome)
    stats = outcome.loads[""]
    assert stats.requests > 0 and not stats.failed, outcome
    # No member changed state anywhere, the stepped node included, as seen by anyone.
    assert not outcome.suspected, outcome
    facts = outcome.facts
    # Two minutes ahead (within the 300 s bound): taken everywhere (and overwritten from elsewhere).
    assert facts["within_declared_on"] == ["n0", "n1", "n2"], outcome
    # Ten minutes ahead, and after the step back while real time has not caught up with its hybrid
    # clock: only the stepped node holds its own declarations; the others refused them.
    assert facts["ahead_declared_on"] == facts["after_declared_on"] == [facts["stepped"]], outcome
    assert facts["stamp_ahead_refusals"] >= 2, outcome
