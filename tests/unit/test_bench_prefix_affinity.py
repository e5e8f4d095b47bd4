"""bench/prefix_affinity.py on a tiny instance: the simulation runs and affinity keeps conversations."""

from __future__ import annotations

from .bench_scripts import load_bench

bench = load_bench("prefix_affinity")


def test_the_no_cache_service_time_averages_the_history_each_turn_reads() -> None:
    # Conversations of exactly 2 turns read 1 then 2 turns: 1.5 on average.
    setup = bench.Setup(min_turns=2, max_turns=2, decode_s=1.0, prefill_s=0.2)
    assert abs(bench.no_cache_service_s(setup) - 1.3) < 1e-9
    assert bench.mean_turns(setup) == 2


def test_affinity_keeps_more_turns_on_their_replica_than_p2c_alone() -> None:
    setup = bench.Setup(replicas=4, load=0.5, turns=1500)
    alone = bench.simulate("p2c", setup, seed=1)
    kept = bench.simulate("affinity", setup, seed=1)
    assert kept.same_replica > 2 * alone.same_replica
    assert kept.cache_hits > alone.cache_hits
    assert 1.0 <= kept.imbalance < 1.5 and 1.0 <= alone.imbalance < 1.5
    assert bench.simulate("affinity", setup, seed=1) == kept  # seeded: the same run, the same figures
