"""The pre-warm forecast: a rising demand loads the next replica before the autoscaler asks; noise,
a flat or a falling load never do; the plan puts the pre-warmed replica where the next host goes."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import replace

import pytest

from meshnode.mesh.autoscale import Autoscaler
from meshnode.mesh.deployment import Autoscaling, DeploymentSpec, SpecError
from meshnode.mesh.placement import HostNode, Requirements, plan
from meshnode.mesh.prewarm import MIN_SAMPLES, LoadClock, Prewarmer, trend
from meshnode.mesh.replica_state import ReplicaState
from meshnode.mesh.types import NodeId

KNOBS = Autoscaling(
    target_concurrency=2,
    window_s=10,
    scale_up_delay_s=5,
    scale_down_delay_s=60,
    idle_timeout_s=300,
    prewarm=True,
    prewarm_horizon_s=10,
)
HORIZON_S = 10.0


def spec(max_replicas: int = 4, **knobs: object) -> DeploymentSpec:
    return DeploymentSpec(
        "a.py:A", min_replicas=1, max_replicas=max_replicas, autoscaling=replace(KNOBS, **knobs)
    )


def run(
    load: Callable[[float], float],
    *,
    end: float = 60,
    step: float = 1.0,
    deployment: DeploymentSpec | None = None,
) -> tuple[float | None, float | None, int, int]:
    """Autoscaler and forecast fed the same load: (first pre-warm, first scale-up, pre-warms, most kept)."""
    deployment = deployment or spec()
    scaler, prewarmer = Autoscaler(deployment, 0), Prewarmer(deployment)
    first_prewarm = first_up = None
    fired, most, before = 0, 0, 0
    now = 0.0
    while now <= end:
        demand = load(now)
        decision = scaler.observe(now, demand)
        forecast = prewarmer.observe(now, demand, decision.desired, HORIZON_S)
        assert forecast.replicas <= deployment.max_replicas
        assert forecast.extra in (0, 1)
        if forecast.extra and not before:
            fired += 1
            first_prewarm = now if first_prewarm is None else first_prewarm
        before = forecast.extra
        most = max(most, forecast.replicas)
        if decision.desired > 1 and first_up is None:
            first_up = now
        now += step
    return first_prewarm, first_up, fired, most


def test_a_ramp_prewarms_the_next_replica_a_horizon_before_the_autoscaler_scales_up() -> None:
    prewarm_at, up_at, fired, most = run(lambda t: 0.5 + 0.1 * t)
    assert prewarm_at is not None and up_at is not None
    # The replica starts loading at least a load time (the horizon) before the autoscaler asks.
    assert up_at - prewarm_at >= HORIZON_S
    assert fired >= 1 and most <= 4


def test_a_ramp_of_whole_requests_as_gossip_reports_them_prewarms_too() -> None:
    prewarm_at, up_at, _, _ = run(lambda t: float(int(0.5 + 0.1 * t)))
    assert prewarm_at is not None and up_at is not None and prewarm_at < up_at


def test_a_step_prewarms_before_the_autoscaler_scales_up() -> None:
    prewarm_at, up_at, _, _ = run(lambda t: 1.0 if t < 20 else 6.0)
    assert prewarm_at is not None and up_at is not None
    assert 20 < prewarm_at < up_at


def test_a_flat_load_never_prewarms() -> None:
    assert run(lambda t: 1.5, end=300)[2] == 0
    assert run(lambda t: 3.0, end=300)[2] == 0  # high but flat: the autoscaler's job alone


def poisson(rng: random.Random, mean: float) -> float:
    """A Poisson draw (Knuth): requests in flight under random arrivals."""
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return float(count)


@pytest.mark.parametrize("seed", range(3))
def test_noise_below_the_threshold_never_prewarms(seed: int) -> None:
    rng = random.Random(seed)
    # 50-60 % of the threshold (2) on average, and as noisy as requests in flight get.
    assert run(lambda t: rng.uniform(0, 2.4), end=2000)[2] == 0
    assert run(lambda t: poisson(rng, 1.0), end=2000)[2] == 0
    assert run(lambda t: float(rng.choice((0, 1, 2))), end=1000, step=0.3)[2] == 0


def test_a_falling_load_never_prewarms() -> None:
    assert run(lambda t: max(3.9 - 0.1 * t, 0.0), end=120)[2] == 0


def test_off_in_the_spec_never_prewarms() -> None:
    assert run(lambda t: 0.5 + 0.1 * t, deployment=spec(prewarm=False))[2] == 0


def test_never_beyond_max_replicas() -> None:
    _, _, fired, most = run(lambda t: 0.5 + 0.3 * t, end=200, deployment=spec(max_replicas=2))
    assert most == 2 and fired <= 1
    # At max already: nothing to pre-warm.
    prewarmer = Prewarmer(spec(max_replicas=1))
    assert all(prewarmer.observe(t, t, 1, HORIZON_S).extra == 0 for t in range(60))


def test_too_few_samples_never_prewarm() -> None:
    prewarmer = Prewarmer(spec())
    forecasts = [prewarmer.observe(t, 10.0 * t, 1, HORIZON_S) for t in range(MIN_SAMPLES - 1)]
    assert all(forecast.extra == 0 for forecast in forecasts)


def test_an_unclaimed_prewarm_is_released_after_horizon_plus_delay_and_a_claimed_one_ends() -> None:
    prewarmer = Prewarmer(spec())
    now, fired_at = 0.0, None
    while fired_at is None:  # a ramp until it fires
        if prewarmer.observe(now, 0.5 + 0.1 * now, 1, HORIZON_S).extra:
            fired_at = now
        now += 1
    held = []
    while now < fired_at + 60:  # the load stops rising below the threshold: the autoscaler never asks
        held.append((now, prewarmer.observe(now, 1.0, 1, HORIZON_S).extra))
        now += 1
    last_held = max(t for t, extra in held if extra)
    assert (
        HORIZON_S + KNOBS.scale_up_delay_s <= last_held - fired_at <= HORIZON_S + KNOBS.scale_up_delay_s + 5
    )
    # Claimed: once the autoscaler wants that many, no backup is added on top.
    claimed = Prewarmer(spec())
    now = 0.0
    while not claimed.observe(now, 0.5 + 0.1 * now, 1, HORIZON_S).extra:
        now += 1
    assert claimed.observe(now + 1, 0.6 + 0.1 * now, 2, HORIZON_S).replicas == 2


def test_the_trend_is_the_least_squares_line_with_the_error_of_its_extrapolation() -> None:
    line = trend([(float(t), 1 + 0.5 * t) for t in range(10)], now=9.0)
    assert line.slope == pytest.approx(0.5) and line.level == pytest.approx(5.5)
    assert line.at(4.0) == pytest.approx(7.5) and line.mean == pytest.approx(3.25)
    assert line.error_at(4.0) == pytest.approx(0.0, abs=1e-9)  # a perfect line
    noisy = trend([(float(t), 1 + 0.5 * t + (-1) ** t) for t in range(10)], now=9.0)
    assert 0 < noisy.error_at(0.0) < noisy.error_at(10.0)  # the farther ahead, the less sure
    flat = trend([(float(t), 2.0) for t in range(10)], now=9.0)
    assert flat.slope == 0 and flat.level == 2.0
    assert trend([], now=0.0).samples == 0 and trend([], now=0.0).error_at(1.0) == math.inf


def test_the_load_clock_times_starts_in_gossip_and_the_horizon_is_at_least_the_spec() -> None:
    clock, a, b, c = LoadClock(), NodeId("a"), NodeId("b"), NodeId("c")
    assert clock.load_s() is None and clock.horizon_s(spec()) == HORIZON_S
    clock.observe(0.0, {a: ReplicaState.READY, b: ReplicaState.LOADING, c: ReplicaState.STARTING})
    clock.observe(5.0, {a: ReplicaState.READY, b: ReplicaState.STARTING, c: ReplicaState.FAILED})
    clock.observe(14.0, {a: ReplicaState.READY, b: ReplicaState.STANDBY})
    assert clock.load_s() == 14.0  # b: loading to standby; a was never seen starting, c failed
    assert clock.horizon_s(spec()) == 14.0
    assert clock.horizon_s(spec(prewarm_horizon_s=30)) == 30.0


def test_the_prewarmed_backup_is_the_node_that_hosts_the_next_replica() -> None:
    nodes = [HostNode(NodeId(f"n{i}")) for i in range(6)]
    for spare in (0, 1):
        now = plan("d", 2, nodes, Requirements(), backups=spare + 1)
        later = plan("d", 3, nodes, Requirements(), backups=spare)
        assert now.hosts == later.hosts[:2]
        assert now.backups[0] == later.hosts[2]  # promoted when the autoscaler asks
        assert now.backups[1:] == later.backups  # the spec's own backups stay warm


def test_the_spec_validates_the_prewarm_knobs_and_leaves_defaults_off_the_wire() -> None:
    assert "prewarm" not in DeploymentSpec("a.py:A").to_wire()["autoscaling"]
    on = DeploymentSpec.from_wire(
        {"app": "a.py:A", "autoscaling": {"prewarm": True, "prewarm_horizon_s": 30}}
    )
    assert on.autoscaling.prewarm and on.autoscaling.prewarm_horizon_s == 30
    assert DeploymentSpec.from_wire(on.to_wire()) == on
    for bad, where in (({"prewarm": "yes"}, "prewarm"), ({"prewarm_horizon_s": -1}, "prewarm_horizon_s")):
        with pytest.raises(SpecError) as refused:
            DeploymentSpec.from_wire({"app": "a.py:A", "autoscaling": bad})
        assert refused.value.field == f"autoscaling.{where}"
