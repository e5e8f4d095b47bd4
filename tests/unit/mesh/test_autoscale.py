"""The autoscaler: desired replicas follow demand within bounds, after the delays, down to zero."""

from __future__ import annotations

from meshnode.mesh.autoscale import Autoscaler
from meshnode.mesh.deployment import Autoscaling, DeploymentSpec

KNOBS = Autoscaling(
    target_concurrency=2, window_s=2, scale_up_delay_s=3, scale_down_delay_s=10, idle_timeout_s=30
)


def spec(min_replicas: int = 1, max_replicas: int = 4) -> DeploymentSpec:
    return DeploymentSpec("a.py:A", min_replicas=min_replicas, max_replicas=max_replicas, autoscaling=KNOBS)


def drive(scaler: Autoscaler, start: float, end: float, concurrency: float, step: float = 0.5) -> list[int]:
    """Feed one sample every `step` seconds from start to end; the desired count after each."""
    seen = []
    now = start
    while now <= end + 1e-9:
        seen.append(scaler.observe(now, concurrency).desired)
        now += step
    return seen


def first_time(scaler: Autoscaler, start: float, concurrency: float, want: int, limit: float = 200) -> float:
    now = start
    while now < start + limit:
        if scaler.observe(now, concurrency).desired == want:
            return now
        now += 0.5
    raise AssertionError(f"desired never reached {want} (stuck at {scaler.desired})")


def test_it_starts_at_min_and_load_above_target_scales_up_after_the_delay_to_max() -> None:
    scaler = Autoscaler(spec(), now=0)
    assert scaler.desired == 1
    reached = first_time(scaler, 0, concurrency=20, want=4)
    # Up needs the window to fill and then the delay to pass: never before the delay.
    assert KNOBS.scale_up_delay_s <= reached <= KNOBS.scale_up_delay_s + KNOBS.window_s + 1
    assert max(drive(scaler, reached, reached + 20, concurrency=100)) == 4  # bounded by max


def test_a_short_burst_does_not_scale_up() -> None:
    scaler = Autoscaler(spec(), now=0)
    drive(scaler, 0, 1, concurrency=20)
    assert drive(scaler, 1.5, 30, concurrency=1)[-1] == 1


def test_quiet_scales_down_only_after_the_down_delay_and_never_below_min() -> None:
    scaler = Autoscaler(spec(min_replicas=2), now=0)
    up = first_time(scaler, 0, concurrency=8, want=4)
    down = first_time(scaler, up, concurrency=0, want=2)
    assert down - up >= KNOBS.scale_down_delay_s
    assert drive(scaler, down, down + 60, concurrency=0)[-1] == 2


def test_scale_to_zero_after_the_idle_timeout_and_back_to_one_on_the_first_waiting_request() -> None:
    scaler = Autoscaler(spec(min_replicas=0), now=0)
    assert scaler.desired == 0
    assert scaler.observe(1.0, concurrency=0, waiting=1).desired == 1  # cold start: at once
    drive(scaler, 1.5, 5, concurrency=1)
    zero = first_time(scaler, 5.5, concurrency=0, want=0)
    assert zero - 5 >= KNOBS.idle_timeout_s - 0.5


def test_a_pinned_only_deployment_stays_at_zero_whatever_its_demand() -> None:
    # `join --deploy` declares max 0: its pinned replicas serve it, placement must add none, even
    # when requests arrive (at the pinned replica) or wait (its host died).
    scaler = Autoscaler(spec(min_replicas=0, max_replicas=0), now=0, current=1)
    assert scaler.desired == 0
    assert scaler.observe(1.0, concurrency=3, waiting=2).desired == 0
    assert max(drive(scaler, 1.5, 120, concurrency=5)) == 0


def test_a_deployment_without_scale_to_zero_keeps_one_replica_while_idle() -> None:
    scaler = Autoscaler(spec(min_replicas=1), now=0)
    assert min(drive(scaler, 0, 200, concurrency=0, step=2)) == 1


def test_respec_rebounds_desired_at_once() -> None:
    scaler = Autoscaler(spec(min_replicas=1, max_replicas=4), now=0)
    scaler.respec(spec(min_replicas=3, max_replicas=4))
    assert scaler.desired == 3
    scaler.respec(spec(min_replicas=1, max_replicas=2))
    assert scaler.desired == 2


def test_the_same_samples_give_the_same_decisions_on_every_node() -> None:
    one, other = Autoscaler(spec(), now=0), Autoscaler(spec(), now=0)
    load = [0, 3, 9, 9, 9, 9, 12, 12, 4, 0, 0, 0] * 5
    assert [one.observe(i * 0.7, c).desired for i, c in enumerate(load)] == [
        other.observe(i * 0.7, c).desired for i, c in enumerate(load)
    ]


def test_a_node_that_joins_a_scaled_mesh_starts_from_the_replicas_running_there() -> None:
    assert Autoscaler(spec(), now=0, current=3).desired == 3
    assert Autoscaler(spec(), now=0, current=9).desired == 4  # still bounded by max
    assert Autoscaler(spec(min_replicas=2), now=0, current=None).desired == 2


def test_with_samples_a_second_apart_the_delay_counts_from_the_first_sample_that_asked() -> None:
    """Placement samples demand once a round (1 s): the last window alone may hold only the new ask."""
    knobs = Autoscaling(target_concurrency=1, window_s=0.5, scale_up_delay_s=0.5, scale_down_delay_s=3)
    scaler = Autoscaler(DeploymentSpec("a.py:A", min_replicas=1, max_replicas=3, autoscaling=knobs), now=0)
    drive(scaler, 0, 10, concurrency=6, step=1.0)
    assert scaler.desired == 3
    times = [10.9, 11.8, 12.7, 13.6, 14.5, 15.4]  # rounds 0.9 s apart; demand fell before 10.9
    moved = next(t for t in times if scaler.observe(t, 0.0).desired < 3)
    assert moved - 10.9 >= 3  # at 13.6 the last 3 s held only asks for less, 2.7 s after the first
