"""SeedWatch: when a node that is alone warns about its seeds, and when it says it joined."""

from __future__ import annotations

import itertools

import pytest

from meshnode.mesh.seeds import SeedNews, SeedWatch


def warnings_at(watch: SeedWatch, until: float, step: float = 0.1) -> list[float]:
    """The times a node alone from 0 to `until`, looking every `step`, is told to warn."""
    times = []
    for tick in range(1, int(until / step) + 1):
        now = round(tick * step, 6)
        if watch.update(now, alone=True) is SeedNews.STILL_ALONE:
            times.append(now)
    return times


def test_the_first_warning_comes_after_first_s_then_the_gaps_double_up_to_max_s() -> None:
    times = warnings_at(SeedWatch(3.0, 60.0, now=0.0), until=250.0)
    assert times == [3.0, 9.0, 21.0, 45.0, 93.0, 153.0, 213.0]


def test_a_node_alone_for_an_hour_warns_a_bounded_number_of_times_not_once_per_retry() -> None:
    times = warnings_at(SeedWatch(3.0, 60.0, now=0.0), until=3600.0, step=0.5)
    assert len(times) <= 3600 / 60 + 6
    assert min(later - earlier for earlier, later in itertools.pairwise(times)) >= 6.0


def test_joining_is_said_once_and_losing_every_peer_starts_the_watch_over() -> None:
    watch = SeedWatch(3.0, 60.0, now=0.0)
    assert watch.update(1.0, alone=True) is None
    assert watch.update(3.0, alone=True) is SeedNews.STILL_ALONE
    assert watch.update(4.0, alone=False) is SeedNews.JOINED
    assert watch.update(100.0, alone=False) is None
    assert watch.update(200.0, alone=True) is None  # alone again: a fresh first_s from here
    assert watch.alone_since == 200.0
    assert watch.update(202.9, alone=True) is None
    assert watch.update(203.0, alone=True) is SeedNews.STILL_ALONE
    assert watch.update(204.0, alone=False) is SeedNews.JOINED


def test_a_node_that_joins_at_once_hears_no_warning() -> None:
    watch = SeedWatch(3.0, 60.0, now=0.0)
    assert watch.update(0.2, alone=False) is SeedNews.JOINED
    assert [watch.update(now, alone=False) for now in (3.0, 9.0, 100.0)] == [None, None, None]


def test_a_node_with_peers_is_given_no_time_to_wake_for() -> None:
    # The shell sleeps until next_at (at most half a second): a time left in the past once the node
    # joined made it spin, half a core on every seeded node.
    watch = SeedWatch(3.0, 60.0, now=0.0)
    assert watch.update(5.0, alone=True) is SeedNews.STILL_ALONE
    assert watch.update(6.0, alone=False) is SeedNews.JOINED
    assert watch.next_at == float("inf")
    assert watch.update(100.0, alone=False) is None
    assert watch.next_at == float("inf")
    assert watch.update(101.0, alone=True) is None
    assert watch.next_at == 104.0


@pytest.mark.parametrize(("first_s", "max_s"), [(0.0, 60.0), (-1.0, 60.0), (10.0, 5.0)])
def test_nonsense_timings_are_refused(first_s: float, max_s: float) -> None:
    with pytest.raises(ValueError, match="first_s"):
        SeedWatch(first_s, max_s, now=0.0)
