"""When a node republishes its replicas' measured speeds (``self_meta._speeds_moved``)."""

from __future__ import annotations

from meshnode.membership.self_meta import _speeds_moved

SERVING = {"echo-1": {"service_ms": 1.0, "rps": 25.0}}


def test_a_new_replica_or_a_service_time_moved_by_more_than_a_quarter_is_news() -> None:
    assert _speeds_moved({}, SERVING)
    assert _speeds_moved(SERVING, {"echo-1": {"service_ms": 1.3, "rps": 25.0}})
    assert _speeds_moved(SERVING, {"echo-1": {"service_ms": 0.7, "rps": 25.0}})
    assert not _speeds_moved(SERVING, {"echo-1": {"service_ms": 1.2, "rps": 40.0}})


def test_a_rate_falling_to_zero_or_rising_from_it_is_news() -> None:
    # Routing takes a speed at rate 0 as unmeasured: peers must hear of it to send requests again.
    idle = {"echo-1": {"service_ms": 1.0, "rps": 0}}
    assert _speeds_moved(SERVING, idle)
    assert _speeds_moved(idle, SERVING)
    assert not _speeds_moved(idle, {"echo-1": {"service_ms": 1.1, "rps": 0}})
