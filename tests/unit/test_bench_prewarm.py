"""The pre-warm benchmark's arithmetic: its load shapes, and the time to target latency it reports."""

from __future__ import annotations

from tests.unit.bench_scripts import load_bench

bench = load_bench("prewarm")


def test_the_step_doubles_the_clients_at_once_and_the_ramp_adds_one_per_step_up_to_four() -> None:
    assert [bench.clients_at("step", t) for t in (-1.0, 0.0, 20.0)] == [2, 4, 4]
    step = bench.RAMP_STEP_S
    assert [bench.clients_at("ramp", t) for t in (-1.0, 0.0, step, 2 * step, 10 * step)] == [1, 2, 3, 4, 4]


def test_time_to_target_is_the_first_moment_at_full_load_whose_next_seconds_meet_it() -> None:
    fast, slow = bench.TARGET_S / 2, bench.TARGET_S * 2
    # Slow until 3 s, fast after but for one slow request later on: from 2.5 s, most of the next
    # two seconds are fast (a stray does not count).
    latencies = [(t / 10, slow if t < 30 or t == 60 else fast) for t in range(0, 100)]
    assert bench.to_target(latencies, 0.0) == 2.5
    assert bench.to_target([(t / 10, fast) for t in range(50)], 0.0) == 0.0
    assert bench.to_target([(t / 10, fast) for t in range(50)], 1.5) == 1.5  # from full load on
    assert bench.to_target([(t / 10, slow) for t in range(50)], 0.0) == float("inf")
