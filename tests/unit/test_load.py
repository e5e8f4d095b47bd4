"""LoadSample wire form and change detection; LoadSampler against the real machine."""

from __future__ import annotations

import msgpack
import psutil
import pytest

from meshnode.load import LoadSample, LoadSampler, SpeedMeter

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
