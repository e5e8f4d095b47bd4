"""An idle deployment's deciders take their zero sample cheaply (``idle_observe``) and decide as before.

Placement skips a deployment that nothing mentions while its autoscaler and pre-warm forecast are
idle (``node/serving/decisions.py``); these tests drive two of each on the same seeded demand, one
through ``observe`` every round and one through ``idle_observe`` whenever it may, and require the
same decisions at every round, including the rounds after demand comes back.
"""

from __future__ import annotations

import random

import pytest

from meshnode.mesh.autoscale import Autoscaler
from meshnode.mesh.deployment import Autoscaling, DeploymentSpec
from meshnode.mesh.prewarm import Prewarmer


def random_spec(rng: random.Random) -> DeploymentSpec:
    return DeploymentSpec(
        "a:A",
        min_replicas=rng.randrange(2),
        max_replicas=rng.randrange(2, 6),
        autoscaling=Autoscaling(
            target_concurrency=rng.choice((1.0, 2.0)),
            window_s=rng.choice((1.0, 5.0, 10.0)),
            scale_up_delay_s=rng.choice((0.0, 2.0, 5.0)),
            scale_down_delay_s=rng.choice((1.0, 4.0, 20.0)),
            idle_timeout_s=rng.choice((3.0, 30.0)),
            prewarm=rng.random() < 0.7,
            prewarm_horizon_s=rng.choice((1.0, 5.0)),
        ),
    )


def demands(rng: random.Random, rounds: int) -> list[float]:
    """Long quiet stretches, bursts and ramps, as whole requests or fractions."""
    out: list[float] = []
    while len(out) < rounds:
        kind = rng.choice(("quiet", "quiet", "burst", "ramp"))
        length = rng.randrange(1, 80)
        if kind == "quiet":
            out += [0] * length
        elif kind == "burst":
            out += [rng.choice((1, 2, 5, 8, 0.5)) for _ in range(length)]
        else:
            out += [index * rng.choice((0.1, 0.3)) for index in range(length)]
    return out[:rounds]


@pytest.mark.parametrize("seed", range(40))
def test_idle_observe_leaves_the_deciders_as_observe_leaves_them(seed: int) -> None:
    rng = random.Random(seed)
    spec = random_spec(rng)
    full, quick = Autoscaler(spec, 0.0), Autoscaler(spec, 0.0)
    full_forecast, quick_forecast = Prewarmer(spec), Prewarmer(spec)
    now, skipped = 0.0, 0
    for demand in demands(rng, 600):
        now += rng.choice((0.1, 0.1, 0.5, 1.0, 3.0))
        decision = full.observe(now, demand)
        forecast = full_forecast.observe(now, demand, decision.desired, 2.0)
        if demand == 0 and quick.idle() and quick_forecast.idle():
            quick.idle_observe(now)
            quick_forecast.idle_observe(now)
            skipped += 1
            # What the skip keeps: the decision and forecast of before, which observe repeats.
            assert (decision.desired, decision.mean_concurrency, forecast.extra) == (quick.desired, 0.0, 0)
            assert forecast.predicted == 0.0 and forecast.slope == 0.0 and forecast.reason is None
            continue
        quick_decision = quick.observe(now, demand)
        assert quick_decision == decision, (seed, now)
        assert quick_forecast.observe(now, demand, quick_decision.desired, 2.0) == forecast, (seed, now)
    assert skipped > 20  # the quiet stretches were taken the cheap way


def test_a_deployment_scaling_down_or_holding_a_prewarm_is_not_idle() -> None:
    spec = DeploymentSpec(
        "a:A",
        min_replicas=0,
        max_replicas=3,
        autoscaling=Autoscaling(target_concurrency=1.0, scale_down_delay_s=10.0, idle_timeout_s=100.0),
    )
    scaler = Autoscaler(spec, 0.0, current=2)
    scaler.observe(1.0, 0)
    assert not scaler.idle()  # no demand proposes 0, but it still runs 2 until the delay is over
    forecast = Prewarmer(spec)
    forecast.observe(1.0, 1.0, 1, 2.0)
    assert not forecast.idle()  # a sample that is not 0 is in the series
