"""Device detection without torch: CPU facts, wire form, dtype choice."""

from __future__ import annotations

import sys
from pathlib import Path

import msgpack
import psutil
import pytest

from meshnode.inference import devices
from meshnode.inference.devices import Accelerator, DeviceInfo, detect_cpu

GIB = 1 << 30

CUDA = Accelerator(kind="cuda", index=0, name="NVIDIA A100", memory_bytes=80 * GIB, capability="8.0")
MPS = Accelerator(kind="mps", index=0, name="arm", memory_bytes=32 * GIB, capability=None)


def info(*accelerators: Accelerator, torch_version: str | None = "2.13.0") -> DeviceInfo:
    return DeviceInfo(
        cpu_model="Test CPU",
        cpu_cores=8,
        memory_bytes=32 * GIB,
        accelerators=accelerators,
        torch_version=torch_version,
    )


def test_detect_cpu_is_sane_and_does_not_import_torch() -> None:
    was_loaded = "torch" in sys.modules
    cpu = detect_cpu()
    assert cpu.cpu_model and cpu.cpu_model != "unknown"
    assert cpu.cpu_cores == psutil.cpu_count(logical=True)
    assert cpu.memory_bytes == psutil.virtual_memory().total
    assert cpu.accelerators == ()
    assert cpu.torch_version is None
    assert cpu.kind == "cpu"
    assert ("torch" in sys.modules) == was_loaded


def test_cpu_model_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: X\nmodel name\t: Fancy CPU 9000\nflags\t: a b\n")
    assert devices._cpu_model(cpuinfo) == "Fancy CPU 9000"


def test_cpu_model_falls_back_without_cpuinfo(tmp_path: Path) -> None:
    assert devices._cpu_model(tmp_path / "missing")


@pytest.mark.parametrize(
    "device", [info(), info(CUDA), info(MPS), info(CUDA, CUDA, MPS, torch_version=None)], ids=repr
)
def test_wire_round_trip_through_msgpack(device: DeviceInfo) -> None:
    wire = device.to_wire()
    decoded = msgpack.unpackb(msgpack.packb(wire))
    assert decoded == wire
    assert DeviceInfo.from_wire(decoded) == device


def test_wire_shape() -> None:
    assert info(CUDA).to_wire() == {
        "cpu": "Test CPU",
        "cores": 8,
        "memory": 32 * GIB,
        "accelerators": [
            {"kind": "cuda", "index": 0, "name": "NVIDIA A100", "memory": 80 * GIB, "capability": "8.0"}
        ],
        "torch": "2.13.0",
        "kind": "cuda",
    }


def test_kind_prefers_cuda_then_mps() -> None:
    assert info().to_wire()["kind"] == "cpu"
    assert info(MPS).to_wire()["kind"] == "mps"
    assert info(MPS, CUDA).to_wire()["kind"] == "cuda"


@pytest.mark.parametrize(
    "wire",
    [
        {},
        {"cpu": "x", "cores": 1, "memory": 1, "torch": None},
        {"cpu": "x", "cores": "many", "memory": 1, "accelerators": [], "torch": None},
        {"cpu": "x", "cores": 1, "memory": 1, "accelerators": [{"kind": "tpu"}], "torch": None},
        {"cpu": "x", "cores": 1, "memory": 1, "accelerators": [{"kind": "cuda"}], "torch": None},
        {"cpu": "x", "cores": 1, "memory": 1, "accelerators": ["cuda"], "torch": None},
    ],
)
def test_from_wire_rejects_malformed(wire: dict) -> None:
    with pytest.raises(ValueError):
        DeviceInfo.from_wire(wire)


def test_probe_output_parsing_takes_the_last_line() -> None:
    stdout = 'some banner\n{"accelerators": [' + '{"kind": "cuda", "index": 0, "name": "NVIDIA A100", '
    stdout += '"memory": 85899345920, "capability": "8.0"}], "torch": "2.13.0"}\n'
    assert devices._parse_probe_output(stdout) == ((CUDA,), "2.13.0")


@pytest.mark.parametrize("stdout", ["", "not json", '{"torch": "2"}', '{"accelerators": 5, "torch": null}'])
def test_probe_output_parsing_rejects_garbage(stdout: str) -> None:
    with pytest.raises(ValueError):
        devices._parse_probe_output(stdout)
