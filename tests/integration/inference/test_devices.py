"""detect_full against a real child process: torch is installed here (CPU build), CUDA is not."""

from __future__ import annotations

import importlib.util
import logging
import sys

import pytest

from meshnode.inference import devices
from meshnode.inference.devices import detect_cpu, detect_full

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")


@needs_torch
async def test_detect_full_reports_torch_from_a_subprocess() -> None:
    was_loaded = "torch" in sys.modules
    device = await detect_full(timeout_s=120.0)
    # The probe ran in a child: this process still has not imported torch.
    assert ("torch" in sys.modules) == was_loaded
    assert device.torch_version is not None
    assert device.torch_version.split("+")[0].count(".") == 2
    cpu = detect_cpu()
    assert (device.cpu_model, device.cpu_cores, device.memory_bytes) == (
        cpu.cpu_model,
        cpu.cpu_cores,
        cpu.memory_bytes,
    )


@needs_torch
async def test_detect_full_matches_torch_cuda_availability() -> None:
    import torch

    device = await detect_full(timeout_s=120.0)
    cuda = [accelerator for accelerator in device.accelerators if accelerator.kind == "cuda"]
    if torch.cuda.is_available():
        assert len(cuda) == torch.cuda.device_count()
        assert device.kind == "cuda"
        assert all(accelerator.capability and accelerator.memory_bytes > 0 for accelerator in cuda)
    else:
        # This machine: the CPU build of torch, no GPU.
        assert cuda == []
        assert device.kind in ("cpu", "mps")


async def test_detect_full_falls_back_to_cpu_when_the_probe_times_out(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A probe that never answers: a child python that sleeps instead of printing.
    monkeypatch.setattr(devices.importlib.util, "find_spec", lambda name: object())
    real_exec = devices.asyncio.create_subprocess_exec

    async def sleeping_child(*argv: str, **kwargs: object):
        return await real_exec(sys.executable, "-c", "import time; time.sleep(60)", **kwargs)

    monkeypatch.setattr(devices.asyncio, "create_subprocess_exec", sleeping_child)
    with caplog.at_level(logging.WARNING, logger="meshnode.inference.devices"):
        device = await detect_full(timeout_s=0.5)
    assert device == detect_cpu()
    assert "accelerator detection failed" in caplog.text


async def test_detect_full_falls_back_to_cpu_when_the_probe_crashes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(devices.importlib.util, "find_spec", lambda name: object())
    real_exec = devices.asyncio.create_subprocess_exec

    async def crashing_child(*argv: str, **kwargs: object):
        return await real_exec(sys.executable, "-c", "raise SystemExit('no driver')", **kwargs)

    monkeypatch.setattr(devices.asyncio, "create_subprocess_exec", crashing_child)
    with caplog.at_level(logging.WARNING, logger="meshnode.inference.devices"):
        device = await detect_full(timeout_s=30.0)
    assert device == detect_cpu()
    assert "no driver" in caplog.text
