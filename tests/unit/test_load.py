"""LoadSample wire form and change detection, when load is gossiped; LoadSampler on the real machine."""

from __future__ import annotations

import msgpack
import psutil
import pytest

from meshnode.config import AgentConfig
from meshnode.load import LoadGossip, LoadSample, LoadSampler, SpeedMeter

GIB = 1 << 30


def sample(cpu: float = 20.0, used: int = 4 * GIB, total: int = 16 * GIB, in_flight: int = 0) -> LoadSample:
    return LoadSample(cpu_percent=cpu, memory_used_bytes=used, memory_total_bytes=total, in_flight=in_flight)


def test_to_wire_rounds_cpu_and_is_msgpack_able() -> None:
    wire = sample(cpu=37.26, in_flight=3).to_wire()
    assert wire == {"cpu": 37.3, "mem_used": 4 * GIB, "mem_total": 16 * GIB, "in_flight": 3}
    assert msgpack.unpackb(msgpack.packb(wire)) == wire


def test_identical_samples_do_not_differ() -> None:
    assert not sample().differs_from(sample())


def test_in_flight_change_always_differs() -> None:
    assert sample(in_flight=1).differs_from(sample(in_flight=0))


def test_cpu_change_threshold() -> None:
    assert not sample(cpu=29.9).differs_from(sample(cpu=20.0))
    assert sample(cpu=30.0).differs_from(sample(cpu=20.0))
    assert sample(cpu=10.0).differs_from(sample(cpu=20.0))
    assert sample(cpu=25.0).differs_from(sample(cpu=20.0), cpu_points=5.0)


def test_memory_change_threshold_is_a_fraction_of_total() -> None:
    base = sample(used=4 * GIB, total=16 * GIB)
    # 5% of 16 GiB is 0.8 GiB.
    assert not sample(used=4 * GIB + int(0.79 * GIB)).differs_from(base)
    assert sample(used=4 * GIB + int(0.81 * GIB)).differs_from(base)
    assert sample(used=4 * GIB - int(0.81 * GIB)).differs_from(base)
    assert sample(used=4 * GIB + int(0.2 * GIB)).differs_from(base, memory_fraction=0.01)


def test_zero_total_memory_never_differs_on_memory() -> None:
    assert not sample(used=5, total=0).differs_from(sample(used=0, total=0))


def test_sampler_reads_this_machine() -> None:
    sampler = LoadSampler()
    first = sampler.sample(in_flight=2)
    second = sampler.sample()
    for reading in (first, second):
        assert 0.0 <= reading.cpu_percent <= 100.0
        assert reading.memory_total_bytes == psutil.virtual_memory().total
        assert 0 < reading.memory_used_bytes <= reading.memory_total_bytes
    assert first.in_flight == 2
    assert second.in_flight == 0


def test_speed_meter_smooths_service_time_and_counts_throughput_over_its_window() -> None:

    meter = SpeedMeter()
    assert meter.service_s is None and meter.throughput_rps is None and meter.to_wire(0.0) == {}
    meter.record(0.0, 0.1)
    assert meter.service_s == pytest.approx(0.1)
    meter.record(1.0, 1.3)  # one slow request moves the mean a fifth of the way
    assert meter.service_s == pytest.approx(0.1 + 0.2 * (0.3 - 0.1))
    for i in range(20):
        meter.record(2.0 + i * 0.5, 2.1 + i * 0.5)
    assert meter.throughput(12.0) == pytest.approx(2.0)  # the last 20 completions fall in the window
    assert meter.to_wire(12.0)["rps"] == pytest.approx(2.0)
    assert meter.throughput(100.0) == 0.0  # time only moves forward: the window is empty now


def test_one_request_held_by_the_scheduler_does_not_make_a_fast_replica_look_slow() -> None:
    meter = SpeedMeter()
    meter.record(0.0, 0.001)
    meter.record(1.0, 3.0)  # 2 s: a busy machine, not the replica; counts as 4 ms
    assert meter.service_s == pytest.approx(0.001 + 0.2 * (0.004 - 0.001))
    for i in range(10):  # a replica that truly became 100x slower shows it within ten requests
        meter.record(10.0 + i, 10.1 + i)
    assert meter.service_s > 0.05


def shown_cpu(rule: LoadGossip, readings: list[float], start: float = 0.0) -> tuple[list[float], int]:
    """The CPU every node shows after each one-second sample, and how many samples were gossiped."""
    published, published_at, shown, gossiped = sample(cpu=start), 0.0, [], 0
    for second, cpu in enumerate(readings, start=1):
        if rule.due(published, sample(cpu=cpu), second - published_at):
            published, published_at, gossiped = sample(cpu=cpu), float(second), gossiped + 1
        shown.append(published.cpu_percent)
    return shown, gossiped


# The rule an agent runs with by default (the lan profile: at most one load update per 5 s).
LAN = LoadGossip.of(AgentConfig(name="t"))


def test_idle_jitter_is_never_gossiped_and_a_lasting_move_is_shown_within_the_min_gap() -> None:
    idle = [2.0, 3.5, 1.0, 0.5, 2.5, 4.0, 1.5, 2.0] * 75  # ten minutes of an idle machine
    # Measured: 63.8 % gossiped under load, then a steady 51 % for minutes that nobody was shown.
    shown, gossiped = shown_cpu(LAN, [*idle, *[63.8] * 10, *[51.0] * 120], start=2.0)
    assert set(shown[: len(idle)]) == {2.0}, "idle jitter was gossiped"
    after = shown[len(idle) + 10 :]
    assert 51.0 in after, "the lasting 51 % was never shown"
    assert after.index(51.0) + 1 <= LAN.min_gap_s + 1
    assert gossiped == 2


def test_a_small_lasting_drift_is_shown_once_the_gossiped_load_has_aged() -> None:
    shown, gossiped = shown_cpu(LAN, [25.0] * 120, start=20.0)
    assert 25.0 in shown, "the drift was never shown"
    assert shown.index(25.0) + 1 <= LAN.max_age_s + 1
    assert gossiped == 1


def test_the_rule_refuses_thresholds_that_contradict_each_other() -> None:
    with pytest.raises(ValueError, match="drift_cpu_points"):
        LoadGossip(min_gap_s=1, cpu_points=5, max_age_s=10, drift_cpu_points=8)
    with pytest.raises(ValueError, match="max_age_s"):
        LoadGossip(min_gap_s=10, cpu_points=5, max_age_s=5, drift_cpu_points=2)


def test_speed_meter_takes_a_workers_report_as_many_completions_and_one_service_sample() -> None:
    meter = SpeedMeter()
    meter.record_many(100.0, 0, 0.5)  # nothing answered: the service time means nothing yet
    assert meter.service_s is None and meter.throughput(100.0) == 0.0
    meter.record_many(100.0, 50, 0.010)
    meter.record(100.0, 100.02)  # a request through the agent meanwhile
    assert meter.service_s == pytest.approx(0.010 + 0.2 * (0.020 - 0.010))
    assert meter.throughput(100.5) == 51 / SpeedMeter.WINDOW_S
    meter.record_many(101.0, 10, 10.0)  # one report's outlier counts at most as OUTLIER_FACTOR times
    assert meter.service_s < 0.05
    assert meter.throughput(111.0) == 10 / SpeedMeter.WINDOW_S  # the first 51 left the window
