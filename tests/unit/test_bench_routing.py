"""bench/routing.py's pure pieces on tiny instances: the simulated mesh and what the policies do there."""

from __future__ import annotations

import math

import pytest

from .bench_scripts import load_bench

bench = load_bench("routing")


def mesh(service_s=(1.0, 2.0), routers=2, gossip_s=1.0, capacity=100, loaded_max=2):
    return bench.Mesh(list(service_s), routers, gossip_s, capacity, loaded_max, bench.random.Random(0))


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]
    assert bench.percentile(values, 0.99) == 99.0
    assert bench.percentile(values, 0.5) == 50.0
    assert bench.percentile([3.0], 0.99) == 3.0
    assert math.isnan(bench.percentile([], 0.5))


def test_zipf_weights_sum_to_one_and_fall_as_k_to_the_minus_s() -> None:
    weights = bench.zipf_weights(12, 1.1)
    assert sum(weights) == pytest.approx(1.0)
    assert weights == sorted(weights, reverse=True)
    assert weights[0] / weights[1] == pytest.approx(2**1.1)


def test_replica_serves_first_in_first_out_one_at_a_time() -> None:
    m = mesh()
    assert m.admit(0, 1, 0.0, 1.0) == (2.0, True)  # work 1 at a replica of mean 2 s
    assert m.admit(1, 1, 0.5, 0.5) == (3.0, True)  # waits for the first
    assert [m.queue(1, t) for t in (1.0, 2.5, 3.0)] == [2, 1, 0]
    assert m.admit(0, 1, 5.0, 1.0) == (7.0, True)  # idle again: starts at once
    assert m.queue(0, 5.0) == 0


def test_each_router_counts_only_its_own_requests_in_flight() -> None:
    m = mesh()
    m.admit(0, 0, 0.0, 1.0)
    m.admit(0, 1, 0.0, 1.0)
    m.admit(1, 1, 0.0, 1.0)
    ids = m.ids
    assert m.in_flight(0, 0.5) == {ids[0]: 1, ids[1]: 1}
    assert m.in_flight(1, 0.5) == {ids[1]: 1}
    assert m.in_flight(0, 1.5) == {ids[1]: 1}  # replica 0 answered at 1.0
    assert m.in_flight(1, 10.0) == {}


def test_routers_see_queues_only_as_last_gossiped() -> None:
    m = mesh(gossip_s=1.0)
    m.advance(1.0)  # every replica has gossiped once (phases are within the first period)
    assert [c.queue for c in m.candidates] == [0, 0]
    for _ in range(3):
        m.admit(0, 0, 1.0, 1.0)
    m.advance(1.0)
    assert m.candidates[0].queue == 0  # not yet gossiped
    m.advance(2.0)
    assert m.candidates[0].queue == 3
    assert m.in_flight(0, 1.0, since_gossip=True) == {}  # sent before that gossip


def test_loaded_models_are_evicted_least_recently_used_first() -> None:
    m = mesh(loaded_max=2)
    assert m.admit(0, 0, 0.0, 1.0, "a", 0.5)[1] is False
    assert m.admit(0, 0, 0.0, 1.0, "b", 0.5)[1] is False
    assert m.admit(0, 0, 0.0, 1.0, "a", 0.5)[1] is True
    assert m.admit(0, 0, 0.0, 1.0, "c", 0.5)[1] is False  # evicts b, used longest ago
    assert m.loaded[0] == ["a", "c"]
    assert m.admit(0, 0, 0.0, 1.0, "b", 0.5) == (1.5 * 4 + 1.0, False)


def test_an_answer_reports_the_other_routers_requests_still_queued() -> None:
    m = mesh(service_s=(1.0,), routers=3)
    m.admit(0, 0, 0.0, 1.0)  # router 0: runs 0 .. 1
    m.admit(1, 0, 0.1, 1.0)  # router 1: queued behind it, 1 .. 2
    m.admit(0, 0, 0.2, 1.0)  # router 0 again: 2 .. 3
    m.admit(2, 0, 0.3, 1.0)  # router 2: 3 .. 4
    assert m.report(0, 0, 0.5) is None  # no answer yet
    # At 1.0 the replica answers router 0's first request: three left, one of them router 0's own.
    assert m.report(0, 0, 1.5) == 2
    assert m.report(1, 0, 1.5) is None  # router 1 has had no answer
    assert m.report(1, 0, 2.5) == 2  # answered at 2.0: router 0's and router 2's still there
    assert m.report(0, 0, 1.0 + bench.REPORT_MAX_AGE_S + 0.1) == 1  # the answer at 3.0: router 2's left
    assert m.report(1, 0, 2.0 + bench.REPORT_MAX_AGE_S + 0.1) is None  # too old: back to gossip


def test_a_refusal_reports_the_queue_too() -> None:
    m = mesh(service_s=(1.0,), routers=2)
    for router in (0, 1, 1):
        m.admit(router, 0, 0.0, 1.0)
    m.refuse(0, 0, 0.5)
    assert m.report(0, 0, 0.5) == 2  # three admitted, one of them router 0's


def test_co_located_router_sees_its_own_replica_exactly_and_peers_by_their_answers() -> None:
    m = mesh(service_s=(1.0, 1.0), routers=2, gossip_s=100.0)
    m.advance(100.0)
    m.candidates[1] = m.candidate(1, 7, frozenset())  # a stale gossip record: 7 queued
    for _ in range(3):
        m.admit(1, 1, 100.0, 1.0)  # router 1 queues three at its own replica (done by 103)
    m.admit(0, 1, 100.0, 1.0)  # router 0 one behind them, answered at 104 with nothing else queued
    m.admit(1, 1, 104.5, 1.0)  # then router 1 one more
    request = bench.RouteRequest(bench.DEPLOYMENT)
    seen: dict[int, dict[bench.NodeId, bench.Candidate]] = {}
    fresh_seen: dict[int, set[bench.NodeId]] = {}

    def walk(router: int) -> bench.TierOrder:
        def record(tiers, fresh, counts, here, rng):
            seen[router] = {c.node: c for tier in tiers for c in tier.candidates}
            fresh_seen[router] = set(fresh)
            return bench.ordered(tiers)

        return record

    for router in (0, 1):
        policy = bench.production("own", "all", feedback=True, walk=walk(router))
        policy(m, router, 104.6, request, bench.random.Random(1))
    own, peer = seen[0][m.ids[0]], seen[0][m.ids[1]]
    assert own.is_self and not peer.is_self
    assert peer.queue == 0  # its answer at 104 replaced the gossiped 7
    assert fresh_seen[0] == set(m.ids)
    assert seen[1][m.ids[1]].is_self and seen[1][m.ids[1]].queue == 1  # router 1's own replica: exact


def test_a_cold_load_is_gossiped_after_the_dissemination_delay() -> None:
    m = mesh(service_s=(1.0, 1.0), gossip_s=100.0)
    m.change_gossip_delay_s = 0.3
    m.advance(100.0)
    m.admit(0, 1, 100.0, 1.0, "a", 0.5)
    m.advance(100.2)
    assert m.candidates[1].hints == frozenset()
    m.advance(100.3)
    assert m.candidates[1].hints == frozenset({"a"})
    assert m.candidates[1].queue == 1


def test_production_policy_ranks_every_replica_once() -> None:
    m = mesh(service_s=(0.05, 0.05, 0.05, 0.1), routers=4)
    request = bench.RouteRequest(bench.DEPLOYMENT)
    for view in ("gossip", "own", "exact"):
        for feedback in (False, True):
            order = bench.production(view, feedback=feedback)(m, 2, 0.0, request, bench.random.Random(1))
            assert sorted(order) == [0, 1, 2, 3]


def test_fresh_tiers_go_shortest_expected_time_first_and_stale_ones_keep_their_order() -> None:
    m = mesh(service_s=(0.05, 0.05, 0.1))
    fast_busy, fast_idle, slow_idle = (
        m.candidate(0, 3, frozenset()),
        m.candidate(1, 0, frozenset()),
        m.candidate(2, 0, frozenset()),
    )
    tiers = [bench.Tier("any", (fast_busy, slow_idle, fast_idle))]
    rng = bench.random.Random(1)
    fresh = set(m.ids)
    walked = bench.fresh_by_expected_time(tiers, fresh, {}, m.heres[0], rng)
    assert walked == [fast_idle, slow_idle, fast_busy]
    kept = bench.fresh_by_expected_time(tiers, fresh - {m.ids[2]}, {}, m.heres[0], rng)
    assert kept == [fast_busy, slow_idle, fast_idle]


def test_the_no_spill_what_if_keeps_only_the_hint_tier() -> None:
    m = mesh(service_s=(1.0, 1.0))
    hinted, other = m.candidate(0, 9, frozenset({"a"})), m.candidate(1, 0, frozenset())
    tiers = [bench.Tier("hint", (hinted,)), bench.Tier("any", (other,))]
    assert bench.hinted_only(tiers, set(), {}, m.heres[0], bench.random.Random(1)) == [hinted]
    assert bench.hinted_only(tiers[1:], set(), {}, m.heres[0], bench.random.Random(1)) == [other]


def test_same_seed_same_run() -> None:
    setup = bench.BalanceSetup(requests=300)
    first = bench.simulate_balance(bench.IN_FLIGHT, 0.9, 7, setup)
    assert first == bench.simulate_balance(bench.IN_FLIGHT, 0.9, 7, setup)
    assert first.served == 300 - int(300 * setup.warmup)


def test_oracle_tail_beats_random_at_90_percent_load() -> None:
    setup = bench.BalanceSetup(requests=600)
    oracle = bench.simulate_balance(bench.ORACLE, 0.9, 1, setup)
    uniform = bench.simulate_balance(bench.RANDOM, 0.9, 1, setup)
    assert bench.p99(oracle) < bench.p99(uniform)
    assert bench.percentile(oracle.times_s, 0.5) < bench.percentile(uniform.times_s, 0.5)


def test_production_variant_is_no_worse_than_gossip_only_p2c_at_90_percent_load() -> None:
    # Structural: fresher information must not lengthen the tail (it may fail if routing regresses).
    for gossip_s in (1.0, bench.PRODUCTION_GOSSIP_S):
        setup = bench.BalanceSetup(requests=3000, gossip_s=gossip_s)
        production = bench.simulate_balance(bench.PRODUCTION, 0.9, 1, setup)
        gossip_only = bench.simulate_balance(bench.GOSSIP_ONLY, 0.9, 1, setup)
        assert bench.p99(production) <= bench.p99(gossip_only)
        assert bench.statistics.fmean(production.times_s) <= bench.statistics.fmean(gossip_only.times_s)


def test_hints_keep_models_warm_where_a_blind_policy_loads_them_cold() -> None:
    setup = bench.AffinitySetup(requests=800)
    hinted = bench.simulate_affinity(bench.HINTED, 0.3, 1, setup)
    blind = bench.simulate_affinity(bench.BLIND, 0.3, 1, setup)
    assert hinted.warm_hits / hinted.served > blind.warm_hits / blind.served
    assert hinted.rejected == 0


def test_every_planned_job_runs_once() -> None:
    tiny = bench.Plan(bench.BalanceSetup(requests=50), bench.AffinitySetup(requests=50), (1,), sweep=True)
    jobs = tiny.jobs()
    results = bench.run_all(jobs, workers=1)
    assert set(results) == set(jobs)
    # The sweep's default period is the main table's own runs, not a second copy.
    assert len(results) < len(jobs)
